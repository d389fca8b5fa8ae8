#include <keel/core/log.hpp>
#include <keel/pg/advisory_lock.hpp>
#include <keel/pg/connection.hpp>

#include <utility>

namespace keel::pg {
namespace {

// The second key is 0 for database-wide locks, or the schema's hash: the two-int form keeps
// keel's locks apart from applications' one-bigint locks. A search_path naming no existing
// schema makes current_schema() NULL, and a NULL key would make Postgres lock nothing.
constexpr std::string_view scope_sql = "CASE WHEN $2 THEN coalesce(hashtext(current_schema()), 0) ELSE 0 END";

// A one-bigint key: the same answer shape, with no scope.
const std::string& bigint_lock_sql(bool wait, bool transaction) {
  static const std::string sql[2][2] = {
      {"SELECT pg_try_advisory_lock($1), 0::int4", "SELECT pg_try_advisory_xact_lock($1), 0::int4"},
      {"SELECT pg_advisory_lock($1) IS NULL, 0::int4", "SELECT pg_advisory_xact_lock($1) IS NULL, 0::int4"}};
  return sql[wait ? 1 : 0][transaction ? 1 : 0];
}

const std::string& lock_sql(bool wait, bool transaction) {
  static const std::string sql[2][2] = {
      {"SELECT pg_try_advisory_lock($1, s), s FROM (SELECT " + std::string(scope_sql) + " AS s) k",
       "SELECT pg_try_advisory_xact_lock($1, s), s FROM (SELECT " + std::string(scope_sql) + " AS s) k"},
      {"SELECT pg_advisory_lock($1, s) IS NULL, s FROM (SELECT " + std::string(scope_sql) + " AS s) k",
       "SELECT pg_advisory_xact_lock($1, s) IS NULL, s FROM (SELECT " + std::string(scope_sql) + " AS s) k"}};
  return sql[wait ? 1 : 0][transaction ? 1 : 0];
}

// Takes the lock; the answer is (taken, scope). The waiting forms return void, so their first
// column means nothing: they return only once the lock is taken.
result<std::pair<bool, std::int32_t>> take(connection& conn, advisory_key key, bool wait, bool transaction) {
  auto r = key.bigint_key ? conn.query(bigint_lock_sql(wait, transaction), *key.bigint_key)
                          : conn.query(lock_sql(wait, transaction), key.name_hash, key.per_schema);
  if (!r) return {boost::system::in_place_error, r.error()};
  if (r->empty()) return {boost::system::in_place_error, errc::out_of_range};
  auto fields = (*r)[0].as<bool, std::int32_t>();
  if (!fields) return {boost::system::in_place_error, fields.error()};
  return std::pair<bool, std::int32_t>{std::get<0>(*fields), std::get<1>(*fields)};
}

}  // namespace

result<advisory_lock> advisory_lock::acquire(connection& conn, advisory_key key) {
  auto taken = take(conn, key, true, false);
  if (!taken) return taken.error();
  return advisory_lock(conn, key, taken->second);
}

result<std::optional<advisory_lock>> advisory_lock::try_acquire(connection& conn, advisory_key key) {
  auto taken = take(conn, key, false, false);
  if (!taken) return {boost::system::in_place_error, taken.error()};
  if (!taken->first) return std::optional<advisory_lock>{};
  return std::optional<advisory_lock>(advisory_lock(conn, key, taken->second));
}

advisory_lock::advisory_lock(advisory_lock&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)), key_(other.key_), scope_(other.scope_) {}

advisory_lock& advisory_lock::operator=(advisory_lock&& other) noexcept {
  if (this != &other) {
    if (held()) (void)release();
    conn_ = std::exchange(other.conn_, nullptr);
    key_ = other.key_;
    scope_ = other.scope_;
  }
  return *this;
}

advisory_lock::~advisory_lock() {
  if (!held()) return;
  if (auto r = release(); !r) {
    if (conn_ != nullptr && conn_->is_open()) {
      // In an aborted transaction, say: the session keeps the lock until it ends.
      log::warn("keel.pg: an advisory lock could not be released and stays held until the session ends",
                {{"error", r.error().message()}, {"lock", key_.name_hash}});
    }
  }
}

result<void> advisory_lock::release() {
  if (!held()) return {};
  auto released = key_.bigint_key ? conn_->query("SELECT pg_advisory_unlock($1)", *key_.bigint_key)
                                  : conn_->query("SELECT pg_advisory_unlock($1, $2)", key_.name_hash, scope_);
  if (!released) {
    // A closed connection has released its locks with its session; anything else (an aborted
    // transaction) leaves the lock held, so keep it to be released again.
    if (!conn_->is_open()) conn_ = nullptr;
    return released.error();
  }
  conn_ = nullptr;
  auto was_held = released->value<bool>();
  if (!was_held) return was_held.error();
  if (!*was_held) return errc::lock_not_held;
  return {};
}

result<void> advisory_xact_lock(connection& conn, advisory_key key) {
  auto taken = take(conn, key, true, true);
  if (!taken) return taken.error();
  return {};
}

result<bool> try_advisory_xact_lock(connection& conn, advisory_key key) {
  auto taken = take(conn, key, false, true);
  if (!taken) return {boost::system::in_place_error, taken.error()};
  return taken->first;
}

}  // namespace keel::pg
