#pragma once
/// @file keel/core/ed25519.hpp
/// @brief Ed25519 signatures (RFC 8032) through OpenSSL 3 EVP.
#include <keel/core/bytes.hpp>

#include <array>
#include <cstdint>
#include <memory>

namespace keel {

/// A 64-byte Ed25519 signature.
using ed25519_signature = std::array<std::uint8_t, 64>;

/// A 32-byte Ed25519 public key: all a verifier needs.
struct ed25519_public_key {
  std::array<std::uint8_t, 32> bytes{};

  /// @returns errc::invalid_key_size unless `raw` is 32 bytes.
  [[nodiscard]] static result<ed25519_public_key> from_bytes(bytes_view raw);

  /// True when `signature` is a valid signature of `message` by this key. A signature of the
  /// wrong size, or a key that is not a valid curve point, never verifies.
  [[nodiscard]] bool verify(bytes_view message, bytes_view signature) const;

  friend bool operator==(const ed25519_public_key&, const ed25519_public_key&) = default;
};

/// An Ed25519 private key. Move-only; the key material is wiped when it is destroyed.
class ed25519_private_key {
 public:
  /// A new random key from OpenSSL's CSPRNG.
  [[nodiscard]] static ed25519_private_key generate();
  /// The key for a 32-byte seed (RFC 8032 §5.1.5). @returns errc::invalid_key_size otherwise.
  [[nodiscard]] static result<ed25519_private_key> from_seed(bytes_view seed);

  ed25519_private_key(ed25519_private_key&&) noexcept;
  ed25519_private_key& operator=(ed25519_private_key&&) noexcept;
  ~ed25519_private_key();

  /// The 32-byte seed, for storing the key. Treat it as a secret.
  [[nodiscard]] std::array<std::uint8_t, 32> seed() const;
  [[nodiscard]] ed25519_public_key public_key() const;
  [[nodiscard]] ed25519_signature sign(bytes_view message) const;

 private:
  struct key;
  explicit ed25519_private_key(std::unique_ptr<key> k) noexcept;
  std::unique_ptr<key> key_;
};

}  // namespace keel
