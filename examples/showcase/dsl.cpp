// keel::dsl in the showcase: a small multi-tenant shop (schema showcase_shop) queried in PRQL
// under roles whose policies the compiler grafts onto every table reference.
//   GET  /dsl             the access page (keel::dsl_http): the graph, a role's grants, try a query
//   GET  /api/dsl/access  the catalog's graph and the database's row-level security
//   POST /api/dsl/query   {"role", "session": {"tenant": 1}, "query"} -> SQL, parameters, rows
// The catalog is read from the database (keel::dsl::introspect) and the roles are declared
// here. Trying a query as any role is impersonation: allowed in the demo on loopback only.
#include <keel/dsl.hpp>
#include <keel/dsl_http.hpp>
#include <keel/dsl_pg.hpp>
#include <keel/pg/migrations.hpp>

#include "showcase.hpp"

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>

namespace showcase {
namespace {

namespace dsl = keel::dsl;

constexpr keel::pg::migration shop_migrations[] = {
    {1, "a small multi-tenant shop", R"sql(
      CREATE SCHEMA showcase_shop;
      CREATE TABLE showcase_shop.customers (
        customer_id integer PRIMARY KEY,
        tenant_id   integer NOT NULL,
        name        text    NOT NULL,
        email       text    NOT NULL,
        country     text    NOT NULL
      );
      CREATE TABLE showcase_shop.orders (
        order_id    integer PRIMARY KEY,
        tenant_id   integer NOT NULL,
        customer_id integer NOT NULL REFERENCES showcase_shop.customers,
        placed_on   date    NOT NULL,
        total       numeric(10, 2) NOT NULL,
        status      text    NOT NULL
      );
      INSERT INTO showcase_shop.customers
      SELECT i, 1 + i % 3, 'Customer ' || i, 'customer' || i || '@example.com',
             (ARRAY['USA', 'Canada', 'France', 'Japan'])[1 + i % 4]
      FROM generate_series(1, 24) AS i;
      INSERT INTO showcase_shop.orders
      SELECT i, c.tenant_id, c.customer_id, DATE '2026-01-01' + (i * 3) % 300, ((i * 37) % 500 + 10)::numeric / 2,
             (ARRAY['placed', 'paid', 'shipped', 'returned'])[1 + (i / 5) % 4]
      FROM generate_series(1, 120) AS i JOIN showcase_shop.customers c ON c.customer_id = 1 + i % 24;
    )sql"},
};

// The roles: the shop's staff sees everything; a tenant's user sees the tenant's rows; support
// sees a tenant's customers with masked emails and no totals, a screen at a time.
std::vector<dsl::role> roles() {
  return {
      {.name = "staff",
       .grants = {{.table = "customers", .columns = {"*"}, .aggregates = true},
                  {.table = "orders", .columns = {"*"}, .aggregates = true}}},
      {.name = "tenant_user",
       .grants = {{.table = "customers",
                   .columns = {"customer_id", "name", "email", "country"},
                   .row_filter = "tenant_id == @tenant",
                   .aggregates = true},
                  {.table = "orders",
                   .columns = {"order_id", "customer_id", "placed_on", "total", "status"},
                   .row_filter = "tenant_id == @tenant",
                   .aggregates = true}}},
      {.name = "support",
       .grants = {{.table = "customers",
                   .columns = {"customer_id", "name", "email", "country"},
                   .row_filter = "tenant_id == @tenant",
                   .masks = {{"email", "text.extract 1 2 email"}}},
                  {.table = "orders",
                   .columns = {"order_id", "customer_id", "placed_on", "status"},
                   .row_filter = "tenant_id == @tenant && status != \"returned\""}},
       .max_rows = 20},
  };
}

}  // namespace

keel::result<void> mount_dsl(context& ctx) {
  auto c = ctx.pool.acquire();
  if (!c) return c.error();
  if (auto migrated = keel::pg::migrate(**c, "showcase shop", shop_migrations); !migrated)
    return migrated.error();
  auto cat = dsl::introspect(**c, {"showcase_shop"});
  if (!cat) return cat.error();
  cat->attributes = {{.name = "tenant", .type = dsl::value_type::integer}};
  cat->roles = roles();
  auto made = dsl::compiler::create(std::move(*cat));
  if (!made) {
    std::fprintf(stderr, "the shop's catalog is refused: %s\n", made.error().message.c_str());
    return keel::error_code(EINVAL, boost::system::generic_category());
  }
  // The compiler lives as long as the process (the routes hold a reference).
  static std::unique_ptr<dsl::compiler> compiler;
  compiler = std::make_unique<dsl::compiler>(std::move(*made));
  keel::dsl_http::mount(
      ctx.server, ctx.pool, *compiler,
      {.try_as = [](const keel::net::request& req, const dsl::session& asked) -> std::optional<dsl::session> {
         // A demo convenience: anyone on this machine may impersonate a role.
         if (!req.remote_address.starts_with("127.") && req.remote_address != "::1") return std::nullopt;
         return asked;
       },
       .database_schemas = {"showcase_shop"}});
  ctx.endpoints.push_back({"GET", "/dsl", "the access page: roles, their grants, a query tried as a role"});
  ctx.endpoints.push_back({"GET", "/api/dsl/access", "the catalog's access graph and the database's RLS"});
  ctx.endpoints.push_back(
      {"POST", "/api/dsl/query", "{\"role\", \"session\", \"query\"}: PRQL run under a role"});
  return {};
}

}  // namespace showcase
