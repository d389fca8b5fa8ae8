// docs/dsl.md quotes this file; ctest runs it (examples.dsl_quickstart).
#include <keel/dsl.hpp>
#include <keel/dsl_pg.hpp>
#include <keel/pg/local_cluster.hpp>

#include <cstdio>

int main() {
  namespace dsl = keel::dsl;
  auto cluster = keel::pg::local_cluster::start().value();
  auto c = keel::pg::connection::connect(cluster.conninfo()).value();
  c.execute(
       "CREATE TABLE orders (id int PRIMARY KEY, tenant_id int, customer text, total numeric, note text);"
       "INSERT INTO orders VALUES (1, 7, 'ada', 120, 'gift'), (2, 7, 'bob', 80, NULL), (3, 8, 'cy', 300, "
       "NULL)")
      .value();

  // The catalog: the tables as the database has them, a session attribute, and a role that sees
  // its tenant's orders without the note.
  auto catalog = dsl::introspect(c, {"public"}).value();
  catalog.attributes = {{.name = "tenant", .type = dsl::value_type::integer}};
  catalog.roles = {{.name = "clerk",
                    .grants = {{.table = "orders",
                                .columns = {"id", "customer", "total"},
                                .row_filter = "tenant_id == @tenant",
                                .aggregates = true}}}};
  const auto compiler = dsl::compiler::create(std::move(catalog)).value();
  const dsl::session clerk{.role = "clerk", .attributes = {{"tenant", std::int64_t{7}}}};

  // PRQL in, parameterized SQL out: the tenant and the caller's $1 are bound, never inlined.
  const auto query =
      compiler.compile("from orders | filter total > $1 | sort {-total} | select {customer, total}", clerk)
          .value();
  std::printf("%s\n", query->sql().c_str());
  std::printf("%s\n", dsl::run_json(c, *query, clerk, {.positional = {"50"}}).value().c_str());

  // The policy holds whatever the query does: tenant 8's order is not there to be counted...
  const auto count = compiler.compile("from orders | aggregate {n = count this}", clerk).value();
  std::printf("%s\n", dsl::run_json(c, *count, clerk).value().c_str());

  // ...and a hidden column is an error with its place, before anything runs.
  const std::string text = "from orders | select {customer, note}";
  auto refused = compiler.compile(text, clerk);
  if (refused) return 1;
  std::printf("%s", refused.error().render(text).c_str());
  return refused.error().code == dsl::errc::column_not_granted ? 0 : 1;
}
