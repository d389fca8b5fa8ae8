// HKDF through EVP_KDF, HMAC through EVP_Q_mac; tags compared with CRYPTO_memcmp.
#include <keel/crypto/kdf.hpp>

#include "evp.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

namespace keel::crypto {
namespace {

const char* digest_name(hash_algorithm h) noexcept {
  return h == hash_algorithm::sha256 ? "SHA256" : "SHA512";
}

// OSSL_PARAM takes non-const pointers for octet strings it only reads.
void* readable(bytes_view b) noexcept {
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): OpenSSL reads the bytes only
  return const_cast<std::uint8_t*>(b.data());
}

}  // namespace

std::size_t digest_size(hash_algorithm h) noexcept {
  return h == hash_algorithm::sha256 ? 32 : 64;
}

namespace {

// One EVP_KDF HKDF call in `mode` ("EXTRACT_AND_EXPAND", "EXTRACT_ONLY", "EXPAND_ONLY").
result<secret_bytes> run_hkdf(hash_algorithm h, const char* mode, bytes_view key, bytes_view salt,
                              bytes_view info, std::size_t length) {
  secret_bytes out(length);
  if (length == 0) return out;
  static EVP_KDF* const kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return errc::openssl_failure;
  detail::kdf_ctx ctx(EVP_KDF_CTX_new(kdf));
  if (!ctx) return errc::openssl_failure;
  // NOLINTBEGIN(cppcoreguidelines-pro-type-const-cast): OpenSSL reads the names only
  char* digest = const_cast<char*>(digest_name(h));
  char* mode_name = const_cast<char*>(mode);
  // NOLINTEND(cppcoreguidelines-pro-type-const-cast)
  static const std::uint8_t nothing = 0;
  OSSL_PARAM params[6];
  std::size_t n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, mode_name, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, key.empty() ? readable({&nothing, 0}) : readable(key), key.size());
  if (!salt.empty())
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, readable(salt), salt.size());
  params[n++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_INFO, info.empty() ? readable({&nothing, 0}) : readable(info), info.size());
  params[n] = OSSL_PARAM_construct_end();
  if (EVP_KDF_derive(ctx.get(), out.data(), length, params) != 1) return errc::openssl_failure;
  return out;
}

}  // namespace

result<secret_bytes> hkdf(hash_algorithm h, bytes_view ikm, bytes_view salt, bytes_view info,
                          std::size_t length) {
  if (length > 255 * digest_size(h)) return errc::output_too_large;
  return run_hkdf(h, "EXTRACT_AND_EXPAND", ikm, salt, info, length);
}

result<secret_bytes> hkdf_extract(hash_algorithm h, bytes_view ikm, bytes_view salt) {
  return run_hkdf(h, "EXTRACT_ONLY", ikm, salt, {}, digest_size(h));
}

result<secret_bytes> hkdf_expand(hash_algorithm h, bytes_view prk, bytes_view info, std::size_t length) {
  if (length > 255 * digest_size(h)) return errc::output_too_large;
  if (prk.size() < digest_size(h)) return errc::invalid_key_size;
  return run_hkdf(h, "EXPAND_ONLY", prk, {}, info, length);
}

result<bytes> hmac(hash_algorithm h, bytes_view key, bytes_view data) {
  bytes out(digest_size(h));
  std::size_t written = 0;
  static const std::uint8_t nothing = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, digest_name(h), nullptr, key.empty() ? &nothing : key.data(),
                key.size(), data.empty() ? &nothing : data.data(), data.size(), out.data(), out.size(),
                &written) == nullptr ||
      written != out.size()) {
    return errc::openssl_failure;
  }
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
