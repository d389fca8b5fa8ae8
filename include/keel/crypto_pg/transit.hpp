#pragma once
/// @file keel/crypto_pg/transit.hpp
/// @brief Encryption as a service, as Vault's transit engine offers it: named keys with
/// versions that never leave the service, and encrypt, decrypt, rewrap and data-key calls
/// answering Vault's ciphertext form ("vault:v3:..."). Each key is kept as a secret in a
/// keel::crypto::secret_store (so its material is an envelope under the store's KMS, and every
/// change is audited); keel::crypto_http serves it over Vault's HTTP API.
///
/// @code
/// keel::crypto::transit_engine transit(store);
/// transit.create_key(c, "orders", "admin").value();
/// auto ciphertext = transit.encrypt(c, "orders", keel::as_bytes("4242"), {}).value();  // "vault:v1:..."
/// auto plaintext = transit.decrypt(c, "orders", ciphertext, {}).value();
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/clock.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/secret.hpp>
#include <keel/crypto_pg/secrets.hpp>
#include <keel/pg/connection.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::crypto {

struct transit_key_info {
  std::string name;
  std::string type = "aes256-gcm96";  ///< the one type keel's transit keys have
  bool derived = false;               ///< every call must give a context (bound as associated data)
  bool deletion_allowed = false;
  std::uint32_t latest_version = 0;
  std::uint32_t min_decryption_version = 1;
  std::uint32_t min_encryption_version = 0;        ///< 0: any version from min_decryption_version
  std::map<std::uint32_t, std::int64_t> versions;  ///< version -> creation time (Unix seconds)
};

struct transit_key_options {
  bool derived = false;
  std::string type = "aes256-gcm96";
};

/// A change to a key's configuration: what is set changes, the rest stays.
struct transit_key_config {
  std::optional<std::uint32_t> min_decryption_version;
  std::optional<std::uint32_t> min_encryption_version;
  std::optional<bool> deletion_allowed;
};

struct transit_data_key {
  std::optional<secret_bytes> plaintext;  ///< absent for a "wrapped" data key
  std::string ciphertext;                 ///< the data key encrypted under the named key
  std::uint32_t key_version = 0;
};

/// The key version a "vault:v<version>:..." ciphertext names, or 0 when it is not one.
[[nodiscard]] std::uint32_t transit_ciphertext_version(std::string_view ciphertext);

/// Thread-safe. Keys are cached in memory for `cache_ttl` and re-read from the store after, or
/// at once when a ciphertext names a version newer than the cached key's; changes to keys are
/// serialised across processes by a Postgres advisory lock.
class transit_engine {
 public:
  /// Keys live in `store` under `tenant` as "transit/<name>"; `store` must outlive the engine.
  /// With `audit_data_calls`, every encrypt, decrypt, rewrap and data key call appends an audit
  /// row (action "transit.decrypt" etc., the key's name and version, the outcome) to the store's
  /// log in its own transaction — as Vault audits every request; it costs a round trip to
  /// Postgres under the audit chain's lock per call.
  explicit transit_engine(secret_store& store, std::string tenant = "keel.transit",
                          std::chrono::milliseconds cache_ttl = std::chrono::seconds(5),
                          bool audit_data_calls = true);

  /// @returns errc::key_exists, invalid_secret_name (a name of 1 to 128 letters, digits, - _ .),
  /// or unsupported_key_type.
  [[nodiscard]] result<transit_key_info> create_key(pg::connection& c, std::string_view name,
                                                    std::string_view actor,
                                                    const transit_key_options& options = {});
  [[nodiscard]] result<transit_key_info> read_key(pg::connection& c, std::string_view name);
  [[nodiscard]] result<std::vector<std::string>> list_keys(pg::connection& c, std::string_view actor);
  /// A new latest version. @returns its info.
  [[nodiscard]] result<transit_key_info> rotate(pg::connection& c, std::string_view name,
                                                std::string_view actor);
  /// @returns errc::invalid_key_config (min_decryption_version above the latest, or
  /// min_encryption_version below min_decryption_version or above the latest).
  [[nodiscard]] result<transit_key_info> configure(pg::connection& c, std::string_view name,
                                                   const transit_key_config& change, std::string_view actor);
  /// Deletes the key and every version's material. @returns errc::deletion_not_allowed unless
  /// configured with deletion_allowed.
  [[nodiscard]] result<void> delete_key(pg::connection& c, std::string_view name, std::string_view actor);

  /// @returns "vault:v<version>:<base64>", or errc::secret_not_found (no such key),
  /// context_required (a derived key without context), key_disabled (a version below
  /// min_encryption_version).
  [[nodiscard]] result<std::string> encrypt(pg::connection& c, std::string_view name, bytes_view plaintext,
                                            bytes_view context, std::uint32_t key_version = 0,
                                            std::string_view actor = "keel.transit");
  /// @returns errc::malformed_ciphertext, key_disabled (below min_decryption_version),
  /// authentication_failed (changed, another key's, or another context).
  [[nodiscard]] result<secret_bytes> decrypt(pg::connection& c, std::string_view name,
                                             std::string_view ciphertext, bytes_view context,
                                             std::string_view actor = "keel.transit");
  /// Decrypts and encrypts again under the latest version (or `key_version`), inside the engine.
  [[nodiscard]] result<std::string> rewrap(pg::connection& c, std::string_view name,
                                           std::string_view ciphertext, bytes_view context,
                                           std::uint32_t key_version = 0,
                                           std::string_view actor = "keel.transit");
  /// A new random key of `bits` (128, 256 or 512), encrypted under the named key; with its
  /// plaintext too when `include_plaintext`.
  [[nodiscard]] result<transit_data_key> data_key(pg::connection& c, std::string_view name,
                                                  bytes_view context, bool include_plaintext,
                                                  unsigned bits = 256,
                                                  std::string_view actor = "keel.transit");

  struct key_entry;

 private:
  [[nodiscard]] result<std::shared_ptr<key_entry>> load(pg::connection& c, std::string_view name,
                                                        std::uint32_t at_least_version = 0);
  [[nodiscard]] result<std::shared_ptr<key_entry>> fetch(pg::connection& c, std::string_view name);
  template <class Change>
  [[nodiscard]] result<transit_key_info> change(pg::connection& c, std::string_view name,
                                                std::string_view actor, Change&& apply);

  // Appends the audit row of a data call when audit_data_calls; `outcome` is the call's result.
  template <class T>
  [[nodiscard]] result<T> audited(pg::connection& c, std::string_view action, std::string_view actor,
                                  std::string_view name, std::uint32_t version, result<T> outcome);
  [[nodiscard]] result<std::string> encrypt_unaudited(pg::connection& c, std::string_view name,
                                                      bytes_view plaintext, bytes_view context,
                                                      std::uint32_t key_version);
  [[nodiscard]] result<secret_bytes> decrypt_unaudited(pg::connection& c, std::string_view name,
                                                       std::string_view ciphertext, bytes_view context);

  secret_store& store_;
  std::string tenant_;
  std::chrono::milliseconds cache_ttl_;
  bool audit_data_calls_ = true;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<key_entry>, std::less<>> cache_;
};

}  // namespace keel::crypto
