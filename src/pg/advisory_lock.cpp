#include <keel/core/log.hpp>
#include <keel/pg/advisory_lock.hpp>
#include <keel/pg/connection.hpp>

#include <utility>

namespace keel::pg {
namespace {

// The second key is 0 for database-wide locks, or the schema's hash: the two-int form keeps
// keel's locks apart from applications' one-bigint locks.
constexpr std::string_view schema_part = "CASE WHEN $2 THEN hashtext(current_schema()) ELSE 0 END";

template <class T>
result<T> single_value(result<rows> r) {
  if (!r) return result<T>(boost::system::in_place_error, r.error());
  return r->value<T>();
}

}  // namespace

result<advisory_lock> advisory_lock::acquire(connection& conn, advisory_key key) {
  static const std::string sql = "SELECT pg_advisory_lock($1, " + std::string(schema_part) + ")";
  auto r = conn.query(sql, key.name_hash, key.per_schema);
  if (!r) return r.error();
  return advisory_lock(conn, key);
}

result<std::optional<advisory_lock>> advisory_lock::try_acquire(connection& conn, advisory_key key) {
  static const std::string sql = "SELECT pg_try_advisory_lock($1, " + std::string(schema_part) + ")";
  auto taken = single_value<bool>(conn.query(sql, key.name_hash, key.per_schema));
  if (!taken) return result<std::optional<advisory_lock>>(boost::system::in_place_error, taken.error());
  if (!*taken) return std::optional<advisory_lock>{};
  return std::optional<advisory_lock>(advisory_lock(conn, key));
}

advisory_lock::advisory_lock(advisory_lock&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)), key_(other.key_) {}

advisory_lock& advisory_lock::operator=(advisory_lock&& other) noexcept {
  if (this != &other) {
    if (held()) (void)release();
    conn_ = std::exchange(other.conn_, nullptr);
    key_ = other.key_;
  }
  return *this;
}

advisory_lock::~advisory_lock() {
  if (!held()) return;
  if (auto r = release(); !r) {
    // The connection is gone or broken; Postgres drops a session's locks with it.
    log::debug("advisory lock release failed; the session ending releases it",
               {{"error", r.error().message()}});
  }
}

result<void> advisory_lock::release() {
  if (!held()) return {};
  static const std::string sql = "SELECT pg_advisory_unlock($1, " + std::string(schema_part) + ")";
  connection& conn = *std::exchange(conn_, nullptr);
  auto released = single_value<bool>(conn.query(sql, key_.name_hash, key_.per_schema));
  if (!released) return released.error();
  return {};
}

result<void> advisory_xact_lock(connection& conn, advisory_key key) {
  static const std::string sql = "SELECT pg_advisory_xact_lock($1, " + std::string(schema_part) + ")";
  auto r = conn.query(sql, key.name_hash, key.per_schema);
  if (!r) return r.error();
  return {};
}

result<bool> try_advisory_xact_lock(connection& conn, advisory_key key) {
  static const std::string sql = "SELECT pg_try_advisory_xact_lock($1, " + std::string(schema_part) + ")";
  return single_value<bool>(conn.query(sql, key.name_hash, key.per_schema));
}

}  // namespace keel::pg
