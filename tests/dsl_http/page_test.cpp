// The mounted /dsl access page and its API against a real Postgres (the Chinook-like database of
// the dsl tests): the graph and the database's RLS as JSON, queries tried as a role (rows under
// its policy, refusals with their place, 403 without the try_as hook) (pg); and the page in a
// real headless Chromium: the graph drawn, a role's inherited grants, a query run and refused
// (browser).
#include <keel/dsl_http.hpp>
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>

#include "../dsl/support.hpp"

#include <boost/json.hpp>

#include <support/browser.hpp>
#include <support/http_client.hpp>

namespace dsl = keel::dsl;
using namespace keel::test::dsl_support;

namespace {

struct mounted {
  chinook db;
  std::optional<dsl::compiler> compiler;
  keel::pg::pool pool{{.conninfo = db.schema.conninfo, .max_size = 2}};
  keel::net::server server{{.address = "127.0.0.1", .port = 0, .threads = 2}};

  explicit mounted(bool can_try = true) {
    // A policy of the database's own, for the page to show beside the catalog's.
    REQUIRE(db.conn.execute(
        "ALTER TABLE customers ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY not_blocked ON customers FOR SELECT TO PUBLIC USING (country <> 'Nowhere')"));
    auto cat = db.catalog();
    cat.attributes = {{.name = "country", .type = dsl::value_type::text}};
    cat.roles = {
        {.name = "support",
         .grants = {{.table = "customers",
                     .columns = {"customer_id", "first_name", "city", "country", "email"},
                     .row_filter = "country == @country",
                     .masks = {{"email", "text.extract 1 3 email"}}}},
         .max_rows = 50},
        {.name = "analyst",
         .inherits = {"support"},
         .grants = {{.table = "invoices",
                     .columns = {"*"},
                     .row_filter = "billing_country == @country",
                     .aggregates = true}}},
    };
    compiler = dsl::compiler::create(std::move(cat)).value();
    keel::dsl_http::options opts{.database_schemas = {db.schema.name}};
    if (can_try) {
      opts.try_as = [](const keel::net::request&, const dsl::session& asked) -> std::optional<dsl::session> {
        return asked;
      };
    }
    keel::dsl_http::mount(server, pool, *compiler, std::move(opts));
    REQUIRE(server.start());
  }
  ~mounted() { server.stop(); }
  [[nodiscard]] std::string base() const { return "http://127.0.0.1:" + std::to_string(server.port()); }
  keel::test::http_reply query(const std::string& body) {
    return keel::test::http_request(server.port(), "POST", "/api/dsl/query", body,
                                    {{"Content-Type", "application/json"}});
  }
};

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("the API gives the graph and the database's RLS, and runs queries as a role under its policy") {
    mounted m;
    auto access = keel::test::http_get(m.server.port(), "/api/dsl/access");
    REQUIRE(access.status == 200);
    const auto graph = boost::json::parse(access.body);
    CHECK(graph.at("catalog").at("roles").as_array().size() == 2);
    CHECK(graph.at("can_try").as_bool());
    bool found_policy = false;
    for (const auto& t : graph.at("database").at("tables").as_array()) {
      if (t.at("table").as_string() != "customers") continue;
      CHECK(t.at("rls_enabled").as_bool());
      found_policy = t.at("policies").at(0).at("name").as_string() == "not_blocked";
    }
    CHECK(found_policy);

    // As support in Canada: Canada's customers only, emails masked.
    auto canada = m.query(R"({"role": "support", "session": {"country": "Canada"},
                             "query": "from customers | select {customer_id, country, email} | sort customer_id"})");
    REQUIRE_MESSAGE(canada.status == 200, canada.body);
    const auto answer = boost::json::parse(canada.body);
    const auto& rows = answer.at("rows").as_array();
    REQUIRE(!rows.empty());
    for (const auto& row : rows) {
      CHECK(row.at(1).as_string() == "Canada");
      CHECK(row.at(2).as_string().size() <= 3);
    }
    CHECK(answer.at("parameters").at(0).as_string() == "Canada");
    CHECK(answer.at("sql").as_string().find("Canada") == std::string::npos);

    // A hidden column: refused with its place and code.
    auto hidden = m.query(R"({"role": "support", "session": {"country": "Canada"},
                             "query": "from customers\nselect {last_name}"})");
    REQUIRE(hidden.status == 400);
    const auto refusal = boost::json::parse(hidden.body);
    CHECK(refusal.at("code").as_string() == "column_not_granted");
    CHECK(refusal.at("line").as_int64() == 2);
    CHECK(refusal.at("rendered").as_string().find("^^^^^^^^^") != std::string::npos);
    // The analyst inherits support's grant and aggregates its own table.
    auto totals = m.query(R"({"role": "analyst", "session": {"country": "USA"},
                             "query": "from invoices | aggregate {n = count this}"})");
    REQUIRE_MESSAGE(totals.status == 200, totals.body);
    const auto expected = m.db.conn.query("SELECT count(*) FROM invoices WHERE billing_country = 'USA'")
                              .value()
                              .value<std::int64_t>()
                              .value();
    CHECK(boost::json::parse(totals.body).at("rows").at(0).at(0).as_string() == std::to_string(expected));
    // Bad input: 400 with what to send.
    CHECK(m.query("not json").status == 400);
    CHECK(m.query(R"({"role": "support"})").status == 400);
    CHECK(m.query(R"({"role": "support", "session": {"nope": 1}, "query": "from customers"})").status == 400);
  }

  TEST_CASE("without a try_as hook nobody runs queries: 403 saying why") {
    mounted m(false);
    auto refused = m.query(R"({"role": "support", "query": "from customers"})");
    CHECK(refused.status == 403);
    CHECK(refused.body.find("try_as") != std::string::npos);
    auto access = keel::test::http_get(m.server.port(), "/api/dsl/access");
    CHECK(!boost::json::parse(access.body).at("can_try").as_bool());
  }
}

TEST_SUITE("browser") {
  TEST_CASE("the page draws the graph, lists a role's inherited grants, and runs and refuses queries") {
    mounted m;
    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE_MESSAGE(browser->navigate(m.base() + "/dsl"), browser->last_error());
    REQUIRE_MESSAGE(browser->wait_for("document.querySelectorAll('#graph g.role').length === 2"),
                    browser->last_error());
    CHECK(browser->wait_for(
        "document.querySelector('#graph path.edge[data-role=\"analyst\"][data-table=\"customers\"]')"
        "?.classList.contains('inherited') === true"));
    CHECK(
        browser->wait_for("document.querySelector('#graph path.inherits[data-child=\"analyst\"]') !== null"));
    // The foreign keys the catalog read from the database, between the tables.
    CHECK(
        browser->wait_for("document.querySelector('#graph "
                          "path.relationship[data-from=\"invoices\"][data-to=\"customers\"]') !== null"));
    // The analyst's grants: its own and support's, inherited.
    REQUIRE_MESSAGE(browser->click("#graph g.role[data-role=\"analyst\"]"), browser->last_error());
    REQUIRE_MESSAGE(
        browser->wait_for("document.getElementById('grants-title').textContent === 'Grants of analyst'"),
        browser->last_error());
    CHECK(browser->wait_for(
        "document.querySelector('#grants tr[data-table=\"customers\"]')?.dataset.from === 'support'"));
    CHECK(
        browser->wait_for("document.querySelector('#grants tr[data-table=\"customers\"] .masked') !== null"));
    // The database's own graph: PUBLIC's policy on customers, filtered by RLS.
    CHECK(browser->wait_for(
        "document.querySelector('#database-graph path.edge[data-role=\"public\"][data-table=\"customers\"]')"
        "?.classList.contains('filtered') === true"));
    // The database's own policy.
    CHECK(
        browser->wait_for("document.querySelector('#database tr[data-table=\"customers\"] "
                          ".policy[data-policy=\"not_blocked\"]') !== null"));

    // A query as support in Brazil.
    REQUIRE(
        browser->evaluate("(() => { document.getElementById('role').value = 'support';"
                          " document.getElementById('attr-country').value = 'Brazil';"
                          " document.getElementById('query').value = 'from customers | select {customer_id, "
                          "country} | sort customer_id';"
                          " return true; })()"));
    REQUIRE_MESSAGE(browser->click("#run"), browser->last_error());
    REQUIRE_MESSAGE(browser->wait_for("document.querySelectorAll('#result-rows tbody tr').length > 0"),
                    browser->last_error());
    auto countries = browser->evaluate(
        "[...document.querySelectorAll('#result-rows tbody tr td:nth-child(2)')].every((td) => "
        "td.textContent === 'Brazil')");
    REQUIRE(countries);
    CHECK(countries->as_bool());
    CHECK(browser->wait_for("document.getElementById('result-sql').textContent.includes('$1')"));
    // A hidden column: the refusal with its caret.
    REQUIRE(
        browser->evaluate("(() => { document.getElementById('query').value = 'from customers | select "
                          "{last_name}'; return true; })()"));
    REQUIRE(browser->click("#run"));
    REQUIRE_MESSAGE(
        browser->wait_for("document.querySelector('#result-error')?.dataset.code === 'column_not_granted'"),
        browser->last_error());
    CHECK(browser->wait_for("document.querySelector('#result-error pre').textContent.includes('^')"));
    CHECK(browser->console_errors().empty());
  }
}
