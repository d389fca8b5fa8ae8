#include <keel/core/hash.hpp>
#include <keel/core/log.hpp>
#include <keel/pg/advisory_lock.hpp>
#include <keel/pg/migrations.hpp>
#include <keel/pg/transaction.hpp>

#include <map>

namespace keel::pg {
namespace {

// One lock for all of keel's migrations, database-wide: 'keel' in ASCII as one bigint, the key
// every keel version has locked, so that older and newer processes migrating the same database
// still take turns.
constexpr auto migration_lock = advisory_key::bigint(0x6b65656c);

constexpr std::string_view create_table = R"sql(
CREATE TABLE IF NOT EXISTS keel_migrations (
  component  text        NOT NULL,
  version    int8        NOT NULL,
  name       text        NOT NULL,
  checksum   text        NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (component, version)
))sql";

}  // namespace

result<migration_report> migrate(connection& c, std::string_view component,
                                 std::span<const migration> migrations) {
  for (std::size_t i = 1; i < migrations.size(); ++i) {
    if (migrations[i].version <= migrations[i - 1].version) return errc::invalid_argument;
  }
  // Held until migrate returns; a lost connection has released it with its session.
  auto lock = advisory_lock::acquire(c, migration_lock);
  if (!lock) return lock.error();
  // Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
  if (auto r = c.execute(create_table); !r) return r.error();

  auto applied_rows =
      c.query("SELECT version, checksum FROM keel_migrations WHERE component = $1", component);
  if (!applied_rows) return applied_rows.error();
  std::map<std::int64_t, std::string> applied;
  for (const auto row : *applied_rows) {
    applied.emplace(row.get<std::int64_t>(0).value(), row.get<std::string>(1).value());
  }

  migration_report report;
  for (const auto& m : migrations) {
    const auto checksum = to_hex(sha256(as_bytes(m.sql)));
    if (const auto found = applied.find(m.version); found != applied.end()) {
      if (found->second != checksum) {
        log::error("applied migration was edited",
                   {{"component", component}, {"version", m.version}, {"name", m.name}});
        return errc::migration_checksum_mismatch;
      }
      ++report.already_applied;
      continue;
    }
    auto tx = transaction::begin(c);
    if (!tx) return tx.error();
    if (auto r = tx->execute(m.sql); !r) {
      log::error("migration failed", {{"component", component},
                                      {"version", m.version},
                                      {"name", m.name},
                                      {"error", c.last_error().to_string()}});
      (void)tx->rollback();
      return errc::migration_failed;
    }
    if (auto r = tx->query(
            "INSERT INTO keel_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)",
            component, m.version, m.name, checksum);
        !r) {
      return r.error();
    }
    if (auto r = tx->commit(); !r) return r.error();
    log::info("migration applied", {{"component", component}, {"version", m.version}, {"name", m.name}});
    report.applied.push_back(m.version);
  }
  return report;
}

}  // namespace keel::pg
