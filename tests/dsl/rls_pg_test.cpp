// Defense in depth on a real Postgres: the catalog emitted as row-level security and applied,
// then plain SQL as the database role returns what keel's compiler returns for the catalog
// role; a column the policy hides is refused by Postgres (42501); and the database's policies
// and column grants read back into the access graph. And schema per tenant on real schemas.
#include "support.hpp"

namespace dsl = keel::dsl;
using namespace keel::test::dsl_support;

namespace {

// A database role for the test, dropped with whatever it was granted.
struct database_role {
  std::string name;
  keel::pg::connection& admin;
  database_role(keel::pg::connection& conn, std::string role) : name(std::move(role)), admin(conn) {
    REQUIRE(admin.execute("CREATE ROLE \"" + name + "\" NOLOGIN"));
  }
  ~database_role() {
    (void)admin.execute("DROP OWNED BY \"" + name + "\"");
    (void)admin.execute("DROP ROLE IF EXISTS \"" + name + "\"");
  }
  database_role(const database_role&) = delete;
  database_role& operator=(const database_role&) = delete;
};

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("the RLS script, applied, gives plain SQL the compiler's rows; introspection reads it back") {
    chinook db;
    auto cat = db.catalog();
    const std::string reader = db.schema.name + "_reader";
    cat.attributes = {{.name = "country", .type = dsl::value_type::text}};
    cat.roles = {{.name = reader,
                  .grants = {{.table = "customers",
                              .columns = {"customer_id", "city", "country"},
                              .row_filter = "country == @country"},
                             {.table = "invoices",
                              .columns = {"invoice_id", "customer_id", "total"},
                              .row_filter = "billing_country == @country || total > 20"}}}};
    // Only the two tables: the script enables RLS on every catalog table.
    std::erase_if(cat.tables,
                  [](const dsl::table& t) { return t.name != "customers" && t.name != "invoices"; });
    auto compiler = dsl::compiler::create(std::move(cat)).value();
    const auto script = compiler.rls_script().value();
    CHECK(script.find("current_setting('keel.country', true)") != std::string::npos);

    database_role role(db.conn, reader);
    REQUIRE_MESSAGE(db.conn.execute(script), db.conn.last_error().message);

    const dsl::session who{.role = reader, .attributes = {{"country", std::string("Canada")}}};
    struct pair {
      std::string prql;
      std::string sql;
    };
    const std::vector<pair> questions = {
        {"from customers | select {customer_id, city, country} | sort customer_id",
         "SELECT customer_id, city, country FROM customers ORDER BY customer_id"},
        {"from i = invoices | join c = customers (==customer_id) | select {i.invoice_id, c.city, i.total} | "
         "sort "
         "i.invoice_id",
         "SELECT i.invoice_id, c.city, i.total FROM invoices i JOIN customers c ON c.customer_id = "
         "i.customer_id "
         "ORDER BY i.invoice_id"},
        {"from invoices | aggregate {n = count this, total = sum total}",
         "SELECT COUNT(*), COALESCE(SUM(total), 0) FROM invoices"},
    };
    // As the database role, with the session's attribute as its setting.
    auto as_role = db.schema.connect();
    REQUIRE(as_role.execute("SET ROLE \"" + reader + "\""));
    REQUIRE(as_role.query("SELECT set_config('keel.country', $1, false)", std::string("Canada")));
    for (const auto& q : questions) {
      CAPTURE(q.prql);
      auto compiled = compiler.compile(q.prql, who);
      if (q.prql.find("aggregate") != std::string::npos) {
        // The catalog grants no aggregates: keel refuses; RLS cannot, and counts the policy's rows.
        REQUIRE_FALSE(compiled.has_value());
        CHECK(compiled.error().code == dsl::errc::aggregate_not_granted);
        continue;
      }
      REQUIRE_MESSAGE(compiled, compiled.error().render(q.prql));
      auto ours = dsl::run(db.conn, **compiled, who);  // the compiler's filter, as the owner
      REQUIRE_MESSAGE(ours, db.conn.last_error().message);
      auto theirs = as_role.query(q.sql);  // Postgres's policies, as the role
      REQUIRE_MESSAGE(theirs, as_role.last_error().message);
      const auto a = cells(*ours);
      const auto b = cells(*theirs);
      CHECK(!a.empty());
      CHECK_MESSAGE(difference(a, b).empty(), difference(a, b) << "\nkeel:\n"
                                                               << show(a) << "RLS:\n"
                                                               << show(b));
    }
    // A column the policy hides: Postgres refuses it too.
    CHECK_FALSE(as_role.query("SELECT email FROM customers"));
    CHECK(as_role.last_error().sqlstate == "42501");
    // Another tenant's setting: other rows, in both.
    REQUIRE(as_role.query("SELECT set_config('keel.country', $1, false)", std::string("Brazil")));
    auto brazil = as_role.query("SELECT count(*) FROM customers").value().value<std::int64_t>().value();
    auto expected = db.conn.query("SELECT count(*) FROM customers WHERE country = 'Brazil'")
                        .value()
                        .value<std::int64_t>();
    CHECK(brazil == expected.value());
    CHECK(brazil > 0);
    (void)as_role.execute("RESET ROLE");

    // The database's policies and grants, read back.
    auto graph = dsl::introspect_access(db.conn, {db.schema.name}).value();
    const dsl::table_access* customers = nullptr;
    for (const auto& t : graph.tables) {
      if (t.table == "customers") customers = &t;
    }
    REQUIRE(customers != nullptr);
    CHECK(customers->rls_enabled);
    REQUIRE(customers->policies.size() == 1);
    CHECK(customers->policies[0].name == "keel_" + reader + "_1");
    CHECK(customers->policies[0].roles == std::vector<std::string>{reader});
    CHECK(customers->policies[0].command == "SELECT");
    CHECK(customers->policies[0].using_sql.find("current_setting") != std::string::npos);
    CHECK(customers->select_columns.at(reader) == std::vector<std::string>{"city", "country", "customer_id"});
    CHECK(graph.to_json().find("\"rls_enabled\":true") != std::string::npos);
  }
}

TEST_SUITE("pg") {
  TEST_CASE("schema per tenant on Postgres: each session reads its own schema's rows, never another's") {
    keel::test::scratch_schema base;
    auto c = base.connect();
    const std::string a = base.name + "_a";
    const std::string b = base.name + "_b";
    REQUIRE(c.execute("CREATE SCHEMA " + a + "; CREATE SCHEMA " + b + ";" + "CREATE TABLE " + a +
                      ".notes (note_id int, body text); CREATE TABLE " + b +
                      ".notes (note_id int, body text);" + "INSERT INTO " + a +
                      ".notes VALUES (1, 'a one'), (2, 'a two');" + "INSERT INTO " + b +
                      ".notes VALUES (1, 'b one');"));
    dsl::catalog cat;
    cat.tables = {{.schema = a,
                   .name = "notes",
                   .columns = {{"note_id", dsl::value_type::integer}, {"body", dsl::value_type::text}},
                   .per_tenant = true}};
    cat.attributes = {{.name = "tenant_schema", .type = dsl::value_type::text}};
    cat.tenants = dsl::tenancy{.schema_attribute = "tenant_schema", .schemas = {a, b}};
    cat.roles = {{.name = "user", .grants = {{.table = "notes", .columns = {"*"}}}}};
    auto compiler = dsl::compiler::create(std::move(cat)).value();
    const std::string text = "from notes | sort note_id | select {body}";
    const auto rows_for = [&](const std::string& schema) {
      const dsl::session who{.role = "user", .attributes = {{"tenant_schema", schema}}};
      auto q = compiler.compile(text, who).value();
      return cells(dsl::run(c, *q, who).value());
    };
    const auto for_a = rows_for(a);
    REQUIRE(for_a.size() == 2);
    CHECK(for_a[0][0] == "a one");
    const auto for_b = rows_for(b);
    REQUIRE(for_b.size() == 1);
    CHECK(for_b[0][0] == "b one");
    // A schema the catalog does not list is refused before anything runs.
    auto other = compiler.compile(text, {.role = "user", .attributes = {{"tenant_schema", base.name}}});
    REQUIRE_FALSE(other.has_value());
    CHECK(other.error().code == dsl::errc::table_not_granted);
    REQUIRE(c.execute("DROP SCHEMA " + a + " CASCADE; DROP SCHEMA " + b + " CASCADE"));
  }
}
