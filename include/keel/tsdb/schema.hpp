#pragma once
/// @file keel/tsdb/schema.hpp
/// @brief keel::tsdb's schema: tables keel_tsdb_series, keel_tsdb_blocks,
/// keel_tsdb_rollup_segments and keel_tsdb_retention, in the connection's search_path.
#include <keel/pg/connection.hpp>
#include <keel/pg/migrations.hpp>

#include <span>

namespace keel::tsdb {

/// The schema as migrations for keel::pg::migrate(c, "tsdb", ...), in version order (e.g. to
/// apply them with other tools). Version 3 renames the tables of older databases (tsdb_*) to
/// keel_tsdb_* in place, data kept.
[[nodiscard]] std::span<const pg::migration> migrations() noexcept;

/// Applies migrations() to `c`'s database (idempotent; safe from several processes at once).
[[nodiscard]] result<pg::migration_report> migrate(pg::connection& c);

}  // namespace keel::tsdb
