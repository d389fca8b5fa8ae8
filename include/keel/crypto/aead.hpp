#pragma once
/// @file keel/crypto/aead.hpp
/// @brief Authenticated encryption with associated data: AES-GCM (128/192/256-bit keys) and
/// ChaCha20-Poly1305 (RFC 8439), through OpenSSL 3's EVP interface. 96-bit nonces and 128-bit
/// tags only: the sizes every other choice of GCM gets wrong (Wycheproof's LongIv, SmallIv).
///
/// @code
/// using namespace keel::crypto;
/// auto key = secret_bytes::random(32);
/// const auto nonce = random_bytes(aead_nonce_bytes);   // never twice with one key
/// auto sealed = seal(aead_algorithm::aes_gcm, key.view(), nonce, plaintext, aad).value();
/// auto opened = open(aead_algorithm::aes_gcm, key.view(), nonce, sealed, aad);  //
/// errc::authentication_failed if changed
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/error.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace keel::crypto {

enum class aead_algorithm : std::uint8_t {
  aes_gcm,            ///< AES in Galois/Counter Mode; the key size picks AES-128, -192 or -256
  chacha20_poly1305,  ///< RFC 8439; 32-byte keys
};

inline constexpr std::size_t aead_nonce_bytes = 12;
inline constexpr std::size_t aead_tag_bytes = 16;

/// "aes-gcm", "chacha20-poly1305".
[[nodiscard]] std::string_view to_string(aead_algorithm a) noexcept;
/// Whether `bytes` is a key size `a` takes (AES-GCM: 16, 24, 32; ChaCha20-Poly1305: 32).
[[nodiscard]] bool valid_key_size(aead_algorithm a, std::size_t bytes) noexcept;

/// Encrypts `plaintext` and authenticates it with `aad` into `out` (ciphertext then tag:
/// plaintext.size() + aead_tag_bytes bytes). @returns the bytes written, or
/// errc::invalid_key_size, invalid_nonce_size, buffer_too_small.
[[nodiscard]] result<std::size_t> seal_into(aead_algorithm a, bytes_view key, bytes_view nonce,
                                            bytes_view plaintext, bytes_view aad,
                                            std::span<std::uint8_t> out);
/// Verifies and decrypts `sealed` (ciphertext then tag) into `out` (sealed.size() -
/// aead_tag_bytes bytes). Nothing is left in `out` unless it verifies. @returns the bytes
/// written, errc::authentication_failed, or a size error.
[[nodiscard]] result<std::size_t> open_into(aead_algorithm a, bytes_view key, bytes_view nonce,
                                            bytes_view sealed, bytes_view aad, std::span<std::uint8_t> out);

/// seal_into() into a new buffer.
[[nodiscard]] result<bytes> seal(aead_algorithm a, bytes_view key, bytes_view nonce, bytes_view plaintext,
                                 bytes_view aad = {});
/// open_into() into a new buffer.
[[nodiscard]] result<bytes> open(aead_algorithm a, bytes_view key, bytes_view nonce, bytes_view sealed,
                                 bytes_view aad = {});

}  // namespace keel::crypto
