#pragma once
/// @file keel/dsl_http/page.hpp
/// @brief The keel::dsl access page at /dsl and its JSON API under /api/dsl, mounted on a
/// keel::net server with one call: the catalog's access graph (roles, what each may read of each
/// table, row filters, masks, inheritance) beside the database's own row-level security, and a
/// form that compiles and runs a query as a role.
#include <keel/dsl/compiler.hpp>
#include <keel/net/http.hpp>
#include <keel/net/server.hpp>
#include <keel/pg/pool.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace keel::dsl_http {

/// Decides whether `req` may read the page and the access graph; a denied request is answered 403.
using authorize_fn = std::function<bool(const net::request& req)>;

/// Trying a query as a role is impersonation: given the request and the session the form asks
/// for (a role and attribute values), returns the session to run under, or nullopt to refuse (403).
using try_as_fn =
    std::function<std::optional<dsl::session>(const net::request& req, const dsl::session& asked)>;

struct options {
  /// Who may look. Empty: anyone who reaches the server (the graph shows the access policy:
  /// give it a hook on a public server).
  authorize_fn authorize{};
  /// Who may run queries, as whom. Empty: nobody (the form answers 403 and says why).
  try_as_fn try_as{};
  /// The schemas whose row-level security and column grants the page reads from the database
  /// (dsl::introspect_access) beside the catalog's. Empty: the catalog's only.
  std::vector<std::string> database_schemas{};
  /// Rows a tried query returns at most (a cap beside the role's own ceiling).
  std::size_t max_rows = 200;
};

/// Adds `GET /dsl` (the page), `GET /api/dsl/access` (the graph) and `POST /api/dsl/query`
/// (`{"role", "session": {…}, "query", "arguments": […]}` → the SQL, its parameters, the columns
/// and rows, or the diagnostic with its place) to `server`. `compiler` and `pool` must outlive
/// the running server.
void mount(net::server& server, pg::pool& pool, const dsl::compiler& compiler, options opts = {});

}  // namespace keel::dsl_http
