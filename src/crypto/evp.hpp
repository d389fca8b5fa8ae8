#pragma once
// RAII for the OpenSSL objects keel::crypto uses, and the ciphers fetched once per process.
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <memory>

namespace keel::crypto::detail {

struct cipher_ctx_free {
  void operator()(EVP_CIPHER_CTX* c) const noexcept { EVP_CIPHER_CTX_free(c); }
};
using cipher_ctx = std::unique_ptr<EVP_CIPHER_CTX, cipher_ctx_free>;

/// A cipher by OpenSSL's name ("AES-256-GCM", "AES-128-WRAP-PAD", ...), fetched once per process
/// (a fetch costs a lookup in the provider's tables) by a function-local static at each use:
///   static const EVP_CIPHER* gcm = detail::fetch_cipher("AES-256-GCM");
/// Null when the provider lacks it (the calls then answer errc::openssl_failure).
inline const EVP_CIPHER* fetch_cipher(const char* name) noexcept {
  return EVP_CIPHER_fetch(nullptr, name, nullptr);
}

}  // namespace keel::crypto::detail
