// AEAD through EVP: one context per call (contexts are cheap next to the work; keeping none
// makes every call thread-safe and leaves no key schedule behind).
#include <keel/crypto/aead.hpp>

#include "evp.hpp"

#include <openssl/crypto.h>

#include <climits>
#include <cstring>

namespace keel::crypto {
namespace {

const EVP_CIPHER* cipher_for(aead_algorithm a, std::size_t key_size) noexcept {
  static const EVP_CIPHER* const aes128 = detail::fetch_cipher("AES-128-GCM");
  static const EVP_CIPHER* const aes192 = detail::fetch_cipher("AES-192-GCM");
  static const EVP_CIPHER* const aes256 = detail::fetch_cipher("AES-256-GCM");
  static const EVP_CIPHER* const chacha = detail::fetch_cipher("ChaCha20-Poly1305");
  if (a == aead_algorithm::chacha20_poly1305) return chacha;
  return key_size == 16 ? aes128 : key_size == 24 ? aes192 : aes256;
}

result<void> check_sizes(aead_algorithm a, bytes_view key, bytes_view nonce) {
  if (!valid_key_size(a, key.size())) return errc::invalid_key_size;
  if (nonce.size() != aead_nonce_bytes) return errc::invalid_nonce_size;
  return {};
}

bool fits_int(std::size_t n) noexcept {
  return n <= static_cast<std::size_t>(INT_MAX);
}

// Feeds `aad` to a context set up for encryption or decryption.
bool add_aad(EVP_CIPHER_CTX* ctx, bytes_view aad, bool encrypt) {
  if (aad.empty()) return true;
  int unused = 0;
  return encrypt ? EVP_EncryptUpdate(ctx, nullptr, &unused, aad.data(), static_cast<int>(aad.size())) == 1
                 : EVP_DecryptUpdate(ctx, nullptr, &unused, aad.data(), static_cast<int>(aad.size())) == 1;
}

}  // namespace

std::string_view to_string(aead_algorithm a) noexcept {
  return a == aead_algorithm::aes_gcm ? "aes-gcm" : "chacha20-poly1305";
}

bool valid_key_size(aead_algorithm a, std::size_t bytes) noexcept {
  if (a == aead_algorithm::chacha20_poly1305) return bytes == 32;
  return bytes == 16 || bytes == 24 || bytes == 32;
}

result<std::size_t> seal_into(aead_algorithm a, bytes_view key, bytes_view nonce, bytes_view plaintext,
                              bytes_view aad, std::span<std::uint8_t> out) {
  if (auto sizes = check_sizes(a, key, nonce); !sizes) return sizes.error();
  if (!fits_int(plaintext.size()) || !fits_int(aad.size())) return errc::invalid_input_size;
  if (out.size() < plaintext.size() + aead_tag_bytes) return errc::buffer_too_small;
  const EVP_CIPHER* cipher = cipher_for(a, key.size());
  detail::cipher_ctx ctx(EVP_CIPHER_CTX_new());
  if (cipher == nullptr || !ctx) return errc::openssl_failure;
  int written = 0;
  int last = 0;
  if (EVP_EncryptInit_ex2(ctx.get(), cipher, key.data(), nonce.data(), nullptr) != 1 ||
      !add_aad(ctx.get(), aad, true) ||
      (!plaintext.empty() && EVP_EncryptUpdate(ctx.get(), out.data(), &written, plaintext.data(),
                                               static_cast<int>(plaintext.size())) != 1) ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + written, &last) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, static_cast<int>(aead_tag_bytes),
                          out.data() + plaintext.size()) != 1) {
    return errc::openssl_failure;
  }
  return plaintext.size() + aead_tag_bytes;
}

result<std::size_t> open_into(aead_algorithm a, bytes_view key, bytes_view nonce, bytes_view sealed,
                              bytes_view aad, std::span<std::uint8_t> out) {
  if (auto sizes = check_sizes(a, key, nonce); !sizes) return sizes.error();
  if (sealed.size() < aead_tag_bytes) return errc::authentication_failed;
  if (!fits_int(sealed.size()) || !fits_int(aad.size())) return errc::invalid_input_size;
  const auto length = sealed.size() - aead_tag_bytes;
  if (out.size() < length) return errc::buffer_too_small;
  const EVP_CIPHER* cipher = cipher_for(a, key.size());
  detail::cipher_ctx ctx(EVP_CIPHER_CTX_new());
  if (cipher == nullptr || !ctx) return errc::openssl_failure;
  // The tag is copied: OpenSSL's SET_TAG takes a non-const pointer.
  std::uint8_t tag[aead_tag_bytes];
  std::memcpy(tag, sealed.data() + length, aead_tag_bytes);
  int written = 0;
  int last = 0;
  if (EVP_DecryptInit_ex2(ctx.get(), cipher, key.data(), nonce.data(), nullptr) != 1 ||
      !add_aad(ctx.get(), aad, false) ||
      (length > 0 &&
       EVP_DecryptUpdate(ctx.get(), out.data(), &written, sealed.data(), static_cast<int>(length)) != 1) ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, static_cast<int>(aead_tag_bytes), tag) != 1) {
    OPENSSL_cleanse(out.data(), length);
    return errc::openssl_failure;
  }
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + written, &last) != 1) {
    // The plaintext was written before the tag was checked: it must not be seen.
    OPENSSL_cleanse(out.data(), length);
    return errc::authentication_failed;
  }
  return length;
}

result<bytes> seal(aead_algorithm a, bytes_view key, bytes_view nonce, bytes_view plaintext, bytes_view aad) {
  bytes out(plaintext.size() + aead_tag_bytes);
  auto n = seal_into(a, key, nonce, plaintext, aad, out);
  if (!n) return n.error();
  return out;
}

result<bytes> open(aead_algorithm a, bytes_view key, bytes_view nonce, bytes_view sealed, bytes_view aad) {
  bytes out(sealed.size() >= aead_tag_bytes ? sealed.size() - aead_tag_bytes : 0);
  auto n = open_into(a, key, nonce, sealed, aad, out);
  if (!n) return n.error();
  return out;
}

}  // namespace keel::crypto
