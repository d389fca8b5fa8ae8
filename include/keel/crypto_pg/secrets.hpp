#pragma once
/// @file keel/crypto_pg/secrets.hpp
/// @brief A secrets manager on Postgres: named secrets per tenant with versions and metadata,
/// each value an envelope (keel/crypto/envelope.hpp) whose context binds the tenant, name and
/// version; soft delete, restore and destroy; listing without decrypting; rewrap after a key
/// rotation; and a hash-chained audit log of every read, write, rotation and rewrap, checked by
/// verify_audit().
///
/// @code
/// keel::crypto::keyring ring = ...;                     // or a PKCS#11 or Vault provider
/// keel::crypto::secret_store store({.wrappers = {&ring}, .audit_key = audit_key.copy()});
/// REQUIRE(keel::crypto::secret_store::migrate(c));
/// store.put(c, {"acme", "stripe/api-key"}, keel::as_bytes(key), "deploy-bot").value();
/// auto secret = store.get(c, {"acme", "stripe/api-key"}, "billing-service").value();
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/clock.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/cache.hpp>
#include <keel/crypto/kms.hpp>
#include <keel/crypto/secret.hpp>
#include <keel/pg/connection.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::crypto {

/// A secret's address. Both parts are data, never SQL: they travel as parameters.
struct secret_ref {
  std::string tenant;  ///< 1 to 255 bytes
  std::string name;    ///< 1 to 512 bytes, e.g. "stripe/api-key"
};

struct secret_version_info {
  std::int32_t version = 0;
  timestamp created_at{};
  std::optional<timestamp> destroyed_at;
  std::vector<std::string>
      key_ids;  ///< "provider:key id" of each data key wrapping it (empty once destroyed)
};

/// What list() shows: nothing decrypted.
struct secret_info {
  std::string tenant;
  std::string name;
  std::int32_t latest = 0;  ///< the version get() reads by default
  std::string metadata;     ///< JSON object, as stored
  timestamp created_at{};
  timestamp updated_at{};
  std::optional<timestamp> deleted_at;
};

struct secret_value {
  secret_bytes value;
  std::int32_t version = 0;
};

struct secret_store_options {
  /// Wrap the data keys of new versions (and of rewrapped ones). At least one.
  std::vector<kms*> wrappers;
  /// Unwrap for reads and rewrap; empty: the wrappers.
  std::vector<kms*> unwrappers;
  /// Keys the audit log's chain (HMAC-SHA-256): without it nobody can rewrite the log and
  /// recompute the chain. 32 bytes or more; keep it apart from the database.
  secret_bytes audit_key;
  std::size_t max_value_bytes = std::size_t{64} * 1024;
  /// Optional: reuse data keys for reads of the same version (keel/crypto/cache.hpp).
  data_key_cache* cache = nullptr;
};

/// An audit row's fields, for secret_store::record().
struct audit_record {
  std::string_view action;
  std::string_view actor;
  std::string_view tenant;
  std::string_view name;
  std::int32_t version = 0;
  std::string_view outcome = "ok";
};

/// What rewrap() did.
struct rewrap_report {
  std::size_t rewrapped = 0;  ///< versions now wrapped by the current keys
  std::size_t failed = 0;     ///< versions that could not be unwrapped (each audited with its error)
};

/// One row of the audit log.
struct audit_entry {
  std::int64_t seq = 0;  ///< 1, 2, 3, ... with no gaps
  timestamp at{};
  std::string actor;
  std::string action;  ///< put, read, list, history, delete, restore, destroy, rewrap, or what record() wrote
  std::string tenant;
  std::string name;
  std::int32_t version = 0;
  std::string outcome;  ///< "ok", or the error's message for an attempt that failed
  bytes hash;           ///< HMAC-SHA-256(audit key, previous hash ‖ this row's fields)
};

/// What verify_audit() found: `intact`, or the first row that breaks the chain and why.
struct audit_report {
  bool intact = false;
  std::int64_t rows = 0;  ///< rows checked
  std::int64_t head_seq = 0;
  bytes head_hash;  ///< record it elsewhere: verify_audit(c, key, anchor) then catches a cut tail
  std::int64_t first_bad_seq = 0;
  std::string problem;  ///< e.g. "row 7 was changed", "row 12 is missing"
};

/// A head recorded earlier (audit_report::head_seq and head_hash), for verify_audit to check
/// that the log still holds it: a log cut back to an earlier row is otherwise self-consistent.
struct audit_anchor {
  std::int64_t seq = 0;
  bytes hash;
};

/// Secrets in Postgres. Thread-safe; each call runs in its own transaction on the connection
/// given (which must not be in one), together with its audit row, so no read or write happens
/// without its audit row, and a failed attempt is audited too. Audit rows are appended in one
/// order under a row lock, so calls that audit take turns at their commit.
class secret_store {
 public:
  explicit secret_store(secret_store_options options);

  /// Creates or upgrades the tables (keel::pg migrations, component "crypto_secrets").
  [[nodiscard]] static result<void> migrate(pg::connection& c);

  /// Stores a new version (1 for a new secret) and makes it the latest; `metadata` (a JSON
  /// object) replaces the secret's if given. Putting to a deleted secret restores it.
  /// @returns the new version, or errc::invalid_secret_name, secret_too_large, a provider's error.
  [[nodiscard]] result<std::int32_t> put(pg::connection& c, const secret_ref& ref, bytes_view value,
                                         std::string_view actor,
                                         std::optional<std::string_view> metadata = {});
  /// Reads the latest version, or `version`. @returns errc::secret_not_found, secret_deleted,
  /// secret_version_destroyed, or a decryption error (context_mismatch for a value moved onto
  /// this secret from another by SQL).
  [[nodiscard]] result<secret_value> get(pg::connection& c, const secret_ref& ref, std::string_view actor,
                                         std::int32_t version = 0);
  /// The tenant's secrets whose names start with `prefix`, by name; deleted ones too (marked).
  [[nodiscard]] result<std::vector<secret_info>> list(pg::connection& c, std::string_view tenant,
                                                      std::string_view actor, std::string_view prefix = "");
  /// A secret's versions, oldest first, without decrypting.
  [[nodiscard]] result<std::vector<secret_version_info>> history(pg::connection& c, const secret_ref& ref,
                                                                 std::string_view actor);
  /// Soft delete: reads refuse (errc::secret_deleted) until restore() or a put.
  [[nodiscard]] result<void> remove(pg::connection& c, const secret_ref& ref, std::string_view actor);
  [[nodiscard]] result<void> restore(pg::connection& c, const secret_ref& ref, std::string_view actor);
  /// Erases one version's envelope for good (its row stays, for history).
  [[nodiscard]] result<void> destroy(pg::connection& c, const secret_ref& ref, std::int32_t version,
                                     std::string_view actor);
  /// Re-wraps the data key of every stored version not already wrapped by exactly the current
  /// wrappers' keys (after a rotation), without decrypting any value; `batch` versions per
  /// transaction. A version that cannot be rewrapped is audited with its error and skipped.
  [[nodiscard]] result<rewrap_report> rewrap(pg::connection& c, std::string_view actor,
                                             std::size_t batch = 100);
  /// Appends an audit row for something done outside the store (e.g. "rotate" of a keyring).
  [[nodiscard]] result<void> record(pg::connection& c, std::string_view action, std::string_view actor,
                                    std::string_view detail = "");
  /// The same with every field (the transit engine's encrypt and decrypt calls use it).
  [[nodiscard]] result<void> record(pg::connection& c, const audit_record& what);

 private:
  secret_store_options options_;
};

/// The audit log from row `after_seq` + 1, at most `limit` rows.
[[nodiscard]] result<std::vector<audit_entry>> read_audit(pg::connection& c, std::int64_t after_seq = 0,
                                                          std::size_t limit = 1000);

/// Recomputes the audit chain from the first row with `audit_key`: a changed, removed, inserted
/// or reordered row breaks it at that row; a head row that disagrees with the last row, or an
/// `anchor` the log no longer holds, is reported too. Reads in pages; the report is a value
/// (`intact` or the first problem), errors are the database's.
[[nodiscard]] result<audit_report> verify_audit(pg::connection& c, bytes_view audit_key,
                                                const std::optional<audit_anchor>& anchor = std::nullopt);

}  // namespace keel::crypto
