#pragma once
/// @file keel/dsl_pg/dsl_pg.hpp
/// @brief keel::dsl on Postgres: a catalog introspected from a database, and compiled queries
/// run through keel::pg with their parameters bound — rows, or JSON keyed by the PRQL names.
///
/// @code
/// auto cat = keel::dsl::introspect(conn, {"public"}).value();   // tables, columns, foreign keys
/// cat.roles = my_roles;                                          // the policy is the application's
/// auto compiler = keel::dsl::compiler::create(std::move(cat)).value();
/// auto query = compiler.compile("from invoices | filter total > $1 | take 5", who).value();
/// auto rows = keel::dsl::run(conn, *query, who, {.positional = {"10"}}).value();
/// @endcode
#include <keel/core/result.hpp>
#include <keel/dsl/compiler.hpp>
#include <keel/pg/connection.hpp>

#include <string>
#include <vector>

namespace keel::dsl {

/// The tables (ordinary, partitioned, views), their columns with types and nullability, and the
/// foreign keys of `schemas`, as a catalog without roles. Names are the database's.
[[nodiscard]] result<catalog> introspect(pg::connection& conn, const std::vector<std::string>& schemas);

/// Binds `query`'s parameters and runs it. @returns errc::invalid_argument when an argument or a
/// session attribute it needs is missing (the log line names it); Postgres's errors keep SQLSTATE.
[[nodiscard]] result<pg::rows> run(pg::connection& conn, const compiled_query& query, const session& who,
                                   const arguments& args = {});

/// run(), the rows as a JSON array of objects keyed by the query's column names (numbers as
/// JSON numbers, booleans as booleans, NULL as null, everything else as strings).
[[nodiscard]] result<std::string> run_json(pg::connection& conn, const compiled_query& query,
                                           const session& who, const arguments& args = {});

}  // namespace keel::dsl
