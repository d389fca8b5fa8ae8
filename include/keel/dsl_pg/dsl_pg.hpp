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

#include <map>
#include <string>
#include <vector>

namespace keel::dsl {

/// The tables (ordinary, partitioned, views), their columns with types and nullability, and the
/// foreign keys of `schemas`, as a catalog without roles. Names are the database's.
[[nodiscard]] result<catalog> introspect(pg::connection& conn, const std::vector<std::string>& schemas);

/// A row-level-security policy as Postgres holds it (pg_policies).
struct rls_policy {
  std::string name;
  std::vector<std::string> roles;  ///< "public" for every role
  std::string command;             ///< SELECT, INSERT, UPDATE, DELETE or ALL
  bool permissive = true;
  std::string using_sql;  ///< the row predicate, as Postgres prints it (empty: none)
};

/// What a database grants on one table: RLS, its policies, and per role the columns it may select.
struct table_access {
  std::string schema;
  std::string table;
  bool rls_enabled = false;
  bool rls_forced = false;
  std::vector<rls_policy> policies;
  std::map<std::string, std::vector<std::string>> select_columns;  ///< role → columns
};

/// The access graph of a database's schemas: role → table → columns, row predicates.
struct access_graph {
  std::vector<table_access> tables;
  /// `{"tables": [{"schema", "table", "rls_enabled", "rls_forced", "policies": [{"name", "roles",
  /// "command", "permissive", "using"}], "select_columns": {"role": ["col", …]}}]}`
  [[nodiscard]] std::string to_json() const;
};

/// Reads the RLS policies and column privileges of `schemas` (roles that inherit privileges
/// through membership are listed under the role granted).
[[nodiscard]] result<access_graph> introspect_access(pg::connection& conn,
                                                     const std::vector<std::string>& schemas);

/// Binds `query`'s parameters and runs it. @returns errc::invalid_argument when an argument or a
/// session attribute it needs is missing (the log line names it); Postgres's errors keep SQLSTATE.
[[nodiscard]] result<pg::rows> run(pg::connection& conn, const compiled_query& query, const session& who,
                                   const arguments& args = {});

/// run(), the rows as a JSON array of objects keyed by the query's column names (numbers as
/// JSON numbers, booleans as booleans, NULL as null, everything else as strings).
[[nodiscard]] result<std::string> run_json(pg::connection& conn, const compiled_query& query,
                                           const session& who, const arguments& args = {});

}  // namespace keel::dsl
