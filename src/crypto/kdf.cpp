// HMAC through EVP_MAC (a prepared context copied per call), and HKDF as RFC 5869 builds it
// from HMAC: EVP_KDF's per-call setup cost ~3.5 us here, more than the hashing of a short
// derivation. Every Wycheproof HKDF and HMAC vector checks the result. Tags compared with
// CRYPTO_memcmp.
#include <keel/crypto/kdf.hpp>

#include "evp.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

#include <algorithm>
#include <array>
#include <memory>

namespace keel::crypto {

std::size_t digest_size(hash_algorithm h) noexcept {
  return h == hash_algorithm::sha256 ? 32 : 64;
}

namespace {

struct mac_ctx_free {
  void operator()(EVP_MAC_CTX* c) const noexcept { EVP_MAC_CTX_free(c); }
};
using mac_ctx = std::unique_ptr<EVP_MAC_CTX, mac_ctx_free>;

// An HMAC context with its digest set and no key, made once per process and hash: each call
// works on a copy (EVP_MAC_CTX_dup), so no key's state outlives its call — freeing a copy
// cleanses it — and the fetch and parameter parsing (most of what EVP_Q_mac and EVP_KDF cost
// for short inputs) happen once.
EVP_MAC_CTX* hmac_template(hash_algorithm h) noexcept {
  auto make = [](const char* digest) -> EVP_MAC_CTX* {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr) return nullptr;
    EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);  // the context holds its own reference
    if (ctx == nullptr) return nullptr;
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): OpenSSL reads the name only
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(digest), 0),
        OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(ctx, params) != 1) {
      EVP_MAC_CTX_free(ctx);
      return nullptr;
    }
    return ctx;
  };
  static EVP_MAC_CTX* const sha256 = make("SHA256");
  static EVP_MAC_CTX* const sha512 = make("SHA512");
  return h == hash_algorithm::sha256 ? sha256 : sha512;
}

// HMAC(key, parts...) into `out` (a digest long).
template <std::size_t N>
bool hmac_into(hash_algorithm h, bytes_view key, const std::array<bytes_view, N>& parts,
               std::uint8_t* out) noexcept {
  EVP_MAC_CTX* proto = hmac_template(h);
  if (proto == nullptr) return false;
  const mac_ctx ctx(EVP_MAC_CTX_dup(proto));
  if (!ctx) return false;
  static const std::uint8_t nothing = 0;
  if (EVP_MAC_init(ctx.get(), key.empty() ? &nothing : key.data(), key.size(), nullptr) != 1) return false;
  for (const bytes_view part : parts) {
    if (!part.empty() && EVP_MAC_update(ctx.get(), part.data(), part.size()) != 1) return false;
  }
  std::size_t written = 0;
  return EVP_MAC_final(ctx.get(), out, &written, digest_size(h)) == 1 && written == digest_size(h);
}

// RFC 5869, 2.3: T(i) = HMAC(PRK, T(i-1) | info | i), the first `length` bytes of T(1) | T(2) | ...
result<secret_bytes> expand(hash_algorithm h, bytes_view prk, bytes_view info, std::size_t length) {
  secret_bytes out(length);
  const std::size_t size = digest_size(h);
  std::array<std::uint8_t, 64> block{};
  std::size_t previous = 0;
  for (std::size_t done = 0, i = 1; done < length; ++i) {
    const auto counter = static_cast<std::uint8_t>(i);
    const std::array<bytes_view, 3> parts{bytes_view(block.data(), previous), info, bytes_view(&counter, 1)};
    if (!hmac_into(h, prk, parts, block.data())) {
      OPENSSL_cleanse(block.data(), block.size());
      return errc::openssl_failure;
    }
    previous = size;
    const std::size_t take = std::min(size, length - done);
    std::copy_n(block.data(), take, out.data() + done);
    done += take;
  }
  OPENSSL_cleanse(block.data(), block.size());
  return out;
}

// RFC 5869, 2.2: PRK = HMAC(salt, IKM), an empty salt being a digest length of zeros.
result<secret_bytes> extract(hash_algorithm h, bytes_view ikm, bytes_view salt) {
  static const std::array<std::uint8_t, 64> zeros{};
  secret_bytes prk(digest_size(h));
  const bytes_view key = salt.empty() ? bytes_view(zeros.data(), digest_size(h)) : salt;
  if (!hmac_into(h, key, std::array<bytes_view, 1>{ikm}, prk.data())) return errc::openssl_failure;
  return prk;
}

}  // namespace

result<secret_bytes> hkdf(hash_algorithm h, bytes_view ikm, bytes_view salt, bytes_view info,
                          std::size_t length) {
  if (length > 255 * digest_size(h)) return errc::output_too_large;
  auto prk = extract(h, ikm, salt);
  if (!prk) return prk.error();
  return expand(h, prk->view(), info, length);
}

result<secret_bytes> hkdf_extract(hash_algorithm h, bytes_view ikm, bytes_view salt) {
  return extract(h, ikm, salt);
}

result<secret_bytes> hkdf_expand(hash_algorithm h, bytes_view prk, bytes_view info, std::size_t length) {
  if (length > 255 * digest_size(h)) return errc::output_too_large;
  if (prk.size() < digest_size(h)) return errc::invalid_key_size;
  return expand(h, prk, info, length);
}

result<bytes> hmac(hash_algorithm h, bytes_view key, bytes_view data) {
  bytes out(digest_size(h));
  if (!hmac_into(h, key, std::array<bytes_view, 1>{data}, out.data())) return errc::openssl_failure;
  return out;
}

result<void> hmac_verify(hash_algorithm h, bytes_view key, bytes_view data, bytes_view tag) {
  if (tag.size() < 16 || tag.size() > digest_size(h)) return errc::invalid_tag_size;
  auto full = hmac(h, key, data);
  if (!full) return full.error();
  if (CRYPTO_memcmp(full->data(), tag.data(), tag.size()) != 0) return errc::authentication_failed;
  return {};
}

}  // namespace keel::crypto
