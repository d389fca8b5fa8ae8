#include <keel/core/ed25519.hpp>

#include "openssl.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

namespace keel {

struct ed25519_private_key::key {
  detail::evp_pkey_ptr pkey;
};

result<ed25519_public_key> ed25519_public_key::from_bytes(bytes_view raw) {
  ed25519_public_key key;
  if (raw.size() != key.bytes.size()) return errc::invalid_key_size;
  std::copy(raw.begin(), raw.end(), key.bytes.begin());
  return key;
}

bool ed25519_public_key::verify(bytes_view message, bytes_view signature) const {
  if (signature.size() != 64) return false;
  // A key that is not a point on the curve fails here or in verification; either way, false.
  detail::evp_pkey_ptr pkey{
      EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, bytes.data(), bytes.size())};
  if (!pkey) return false;
  detail::evp_md_ctx_ptr context{detail::check_openssl(EVP_MD_CTX_new())};
  if (EVP_DigestVerifyInit_ex(context.get(), nullptr, nullptr, nullptr, nullptr, pkey.get(), nullptr) != 1) {
    return false;
  }
  return EVP_DigestVerify(context.get(), signature.data(), signature.size(), message.data(),
                          message.size()) == 1;
}

ed25519_private_key::ed25519_private_key(std::unique_ptr<key> k) noexcept : key_(std::move(k)) {}
ed25519_private_key::ed25519_private_key(ed25519_private_key&&) noexcept = default;
ed25519_private_key& ed25519_private_key::operator=(ed25519_private_key&&) noexcept = default;
ed25519_private_key::~ed25519_private_key() = default;  // EVP_PKEY_free wipes the key material

ed25519_private_key ed25519_private_key::generate() {
  std::array<std::uint8_t, 32> seed;
  detail::check_openssl(RAND_priv_bytes(seed.data(), static_cast<int>(seed.size())));
  auto k = from_seed(seed);
  OPENSSL_cleanse(seed.data(), seed.size());
  return std::move(k).value();
}

result<ed25519_private_key> ed25519_private_key::from_seed(bytes_view seed) {
  if (seed.size() != 32) return errc::invalid_key_size;
  auto k = std::make_unique<key>();
  k->pkey.reset(detail::check_openssl(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size())));
  return ed25519_private_key(std::move(k));
}

std::array<std::uint8_t, 32> ed25519_private_key::seed() const {
  std::array<std::uint8_t, 32> out;
  std::size_t size = out.size();
  detail::check_openssl(EVP_PKEY_get_raw_private_key(key_->pkey.get(), out.data(), &size));
  return out;
}

ed25519_public_key ed25519_private_key::public_key() const {
  ed25519_public_key out;
  std::size_t size = out.bytes.size();
  detail::check_openssl(EVP_PKEY_get_raw_public_key(key_->pkey.get(), out.bytes.data(), &size));
  return out;
}

ed25519_signature ed25519_private_key::sign(bytes_view message) const {
  detail::evp_md_ctx_ptr context{detail::check_openssl(EVP_MD_CTX_new())};
  detail::check_openssl(
      EVP_DigestSignInit_ex(context.get(), nullptr, nullptr, nullptr, nullptr, key_->pkey.get(), nullptr));
  ed25519_signature signature;
  std::size_t size = signature.size();
  detail::check_openssl(
      EVP_DigestSign(context.get(), signature.data(), &size, message.data(), message.size()));
  return signature;
}

}  // namespace keel
