#pragma once
/// @file keel/crypto/kms.hpp
/// @brief What wraps data keys: the `kms` interface every provider implements (the local
/// keyring here; PKCS#11 and Vault transit to come), and the `keyring` of versioned
/// key-encryption keys with rotation, states and a minimum decryption version, kept in locked
/// memory and saved to a passphrase-protected file.
///
/// @code
/// keel::crypto::keyring orders("orders");
/// orders.rotate();                       // version 1, the primary
/// // ... encrypt envelopes with it ...
/// orders.rotate();                       // version 2 wraps new data keys; 1 still unwraps
/// orders.set_min_decryption_version(2);  // after rewrapping every envelope: 1 no longer unwraps
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/error.hpp>
#include <keel/crypto/secret.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace keel::crypto {

/// A data key wrapped by a provider, as an envelope stores it.
struct encrypted_data_key {
  std::string provider;  ///< "local", "pkcs11", "vault": which kind of kms unwraps it (at most 255 bytes)
  std::string key_id;    ///< the provider's key and version, e.g. "orders/3" (at most 65,535 bytes)
  bytes wrapped;         ///< the provider's bytes (at most 65,535)
  friend bool operator==(const encrypted_data_key&, const encrypted_data_key&) = default;
};

/// A key-encryption-key provider. `aad` is what the wrapping must authenticate (the envelope's
/// encryption context, serialised): a data key unwraps only under the context it was wrapped
/// with. Implementations are thread-safe.
class kms {
 public:
  virtual ~kms() = default;
  /// The provider id stored with each data key it wraps.
  [[nodiscard]] virtual std::string_view provider() const noexcept = 0;
  /// Wraps `data_key` under the provider's current key.
  [[nodiscard]] virtual result<encrypted_data_key> wrap(bytes_view data_key, bytes_view aad) = 0;
  /// Unwraps a data key this provider wrapped. @returns errc::unknown_key, key_disabled,
  /// key_destroyed, authentication_failed (wrong aad or changed bytes), or a provider error.
  [[nodiscard]] virtual result<secret_bytes> unwrap(const encrypted_data_key& edk, bytes_view aad) = 0;
};

enum class key_state : std::uint8_t {
  enabled,       ///< wraps (if primary) and unwraps
  decrypt_only,  ///< unwraps only
  destroyed,     ///< its key bytes are wiped: nothing it wrapped unwraps again
};
[[nodiscard]] std::string_view to_string(key_state s) noexcept;

struct key_version_info {
  std::uint32_t version = 0;
  key_state state = key_state::enabled;
  bool primary = false;
};

/// Versioned AES-256 key-encryption keys under one name, in this process's locked memory.
/// Wraps with AES-256-GCM (random nonce; the key id and `aad` authenticated), so the wrapped
/// form is nonce ‖ ciphertext ‖ tag (60 bytes for a 32-byte data key). Thread-safe.
class keyring final : public kms {
 public:
  /// An empty keyring: rotate() makes version 1. `name` is part of every key id ("name/3").
  explicit keyring(std::string name);

  [[nodiscard]] std::string_view provider() const noexcept override { return "local"; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  /// A new random key version, which becomes the primary. @returns its number.
  std::uint32_t rotate();
  /// Adds a version with the given key bytes (32), e.g. loaded from storage; it becomes primary
  /// if it is the highest. @returns errc::invalid_key_size, errc::unknown_key for version 0, or
  /// errc::key_exists.
  [[nodiscard]] result<void> import_version(std::uint32_t version, bytes_view key, key_state state);
  /// Changes a version's state. Destroying wipes its key at once and cannot be undone; the
  /// primary can be made decrypt-only (then nothing wraps until the next rotate()).
  [[nodiscard]] result<void> set_state(std::uint32_t version, key_state state);
  /// Versions below this unwrap nothing (errc::key_disabled), without being destroyed.
  [[nodiscard]] result<void> set_min_decryption_version(std::uint32_t version);

  [[nodiscard]] std::uint32_t primary() const;
  [[nodiscard]] std::uint32_t min_decryption_version() const;
  [[nodiscard]] std::vector<key_version_info> versions() const;

  [[nodiscard]] result<encrypted_data_key> wrap(bytes_view data_key, bytes_view aad) override;
  [[nodiscard]] result<secret_bytes> unwrap(const encrypted_data_key& edk, bytes_view aad) override;
  /// wrap() with a given version (0: the primary), which must be enabled: for callers that let
  /// their users pick an older version. @returns errc::unknown_key or key_disabled.
  [[nodiscard]] result<encrypted_data_key> wrap_with(std::uint32_t version, bytes_view data_key,
                                                     bytes_view aad);

  /// The keyring's name, versions, states, primary and keys as bytes (in locked memory), for
  /// storing it sealed elsewhere (e.g. as an envelope); deserialize() reads them back.
  [[nodiscard]] secret_bytes serialize() const;
  /// @returns errc::malformed_key_file for bytes serialize() did not write.
  [[nodiscard]] static result<std::unique_ptr<keyring>> deserialize(bytes_view serialized);

  /// Writes the keyring to `path` (mode 0600, replaced atomically), its name, versions, states
  /// and keys sealed with AES-256-GCM under a key derived from `passphrase` by scrypt
  /// (N = 2^15, r = 8, p = 1, a random salt). @returns errc::invalid_input_size for an empty
  /// passphrase, or the file system's error.
  [[nodiscard]] result<void> save(const std::string& path, std::string_view passphrase) const;
  /// Reads a keyring file save() wrote. @returns errc::insecure_key_file (others may read or
  /// write it, or another user owns it: checked before reading), errc::authentication_failed (a
  /// wrong passphrase, or the file was changed), errc::malformed_key_file, or the file system's error.
  [[nodiscard]] static result<std::unique_ptr<keyring>> load(const std::string& path,
                                                             std::string_view passphrase);

 private:
  struct version_entry {
    secret_bytes key;
    key_state state = key_state::enabled;
  };
  [[nodiscard]] std::string key_id(std::uint32_t version) const;

  std::string name_;
  mutable std::mutex mutex_;
  std::map<std::uint32_t, version_entry> versions_;
  std::uint32_t primary_ = 0;
  std::uint32_t min_decryption_version_ = 1;
};

}  // namespace keel::crypto
