#pragma once
/// @file keel/pg/advisory_lock.hpp
/// @brief Postgres advisory locks: one elected process per database (maintenance leaders,
/// schedulers, migrations) and short critical sections inside a transaction.
///
/// @code
/// constexpr auto maintenance = pg::advisory_key::named("keel.tsdb.maintenance");
/// auto lock = pg::advisory_lock::try_acquire(conn, maintenance);   // result<optional<lock>>
/// if (lock && *lock) run_maintenance();    // this process is the leader while *lock lives
/// @endcode
/// A key is a component's name hashed at compile time plus, by default, the current schema,
/// so job tables (or series) in two schemas of one database elect two leaders (a session
/// whose search_path names no existing schema locks as if database-wide). The schema is
/// resolved when the lock is taken, so a later change of search_path cannot strand it. Session locks
/// are held until released, the object is destroyed, or the connection ends — a process that
/// dies loses its locks with its connection, which is what makes them safe for elections.
#include <keel/core/error.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

namespace keel::pg {

class connection;

/// What an advisory lock is taken on.
struct advisory_key {
  /// Which lock: a stable hash of a name such as "keel.jobs.maintenance".
  std::int32_t name_hash = 0;
  /// Per schema (the connection's current_schema()) or one for the whole database.
  bool per_schema = true;
  /// Set for a one-bigint key, pg_advisory_lock(bigint), which Postgres keeps apart from the
  /// two-int keys of named(): the form applications use, and keel's migrations always have.
  std::optional<std::int64_t> bigint_key = std::nullopt;

  /// The database-wide lock pg_advisory_lock(`key`) takes, so that sessions locking it by
  /// hand and through advisory_lock exclude each other.
  [[nodiscard]] static constexpr advisory_key bigint(std::int64_t key) noexcept {
    return advisory_key{.name_hash = 0, .per_schema = false, .bigint_key = key};
  }

  /// The key for `name` (FNV-1a folded to 32 bits, computed at compile time).
  [[nodiscard]] static consteval advisory_key named(std::string_view name, bool per_schema = true) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char c : name) {
      h ^= static_cast<unsigned char>(c);
      h *= 0x100000001b3ULL;
    }
    return advisory_key{.name_hash = static_cast<std::int32_t>(static_cast<std::uint32_t>(h ^ (h >> 32))),
                        .per_schema = per_schema,
                        .bigint_key = std::nullopt};
  }
};

/// A session-level advisory lock held by this object; movable, released on destruction.
class advisory_lock {
 public:
  /// Waits until the lock is free and takes it. Postgres errors pass through with SQLSTATE.
  [[nodiscard]] static result<advisory_lock> acquire(connection& conn, advisory_key key);
  /// Takes the lock if it is free: nullopt when another session holds it.
  [[nodiscard]] static result<std::optional<advisory_lock>> try_acquire(connection& conn, advisory_key key);

  advisory_lock(advisory_lock&& other) noexcept;
  advisory_lock& operator=(advisory_lock&& other) noexcept;
  advisory_lock(const advisory_lock&) = delete;
  advisory_lock& operator=(const advisory_lock&) = delete;
  /// Releases the lock if still held; a lost connection has released it already.
  ~advisory_lock();

  /// Releases the lock now. On error (e.g. errc::transaction_aborted: roll back first) the lock
  /// stays held and release() may be called again; errc::lock_not_held if the session had lost it.
  [[nodiscard]] result<void> release();
  /// True until released (or moved from).
  [[nodiscard]] bool held() const noexcept { return conn_ != nullptr; }
  [[nodiscard]] advisory_key key() const noexcept { return key_; }

 private:
  advisory_lock(connection& conn, advisory_key key, std::int32_t scope) noexcept
      : conn_(&conn), key_(key), scope_(scope) {}
  connection* conn_ = nullptr;
  advisory_key key_{};
  std::int32_t scope_ = 0;  ///< the second key as taken: the schema's hash, or 0
};

/// Takes a transaction-level advisory lock, waiting for it; Postgres releases it at commit or
/// rollback. Call inside the caller's transaction.
[[nodiscard]] result<void> advisory_xact_lock(connection& conn, advisory_key key);
/// Takes a transaction-level advisory lock if it is free; false when another holds it.
[[nodiscard]] result<bool> try_advisory_xact_lock(connection& conn, advisory_key key);

}  // namespace keel::pg
