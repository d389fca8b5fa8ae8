// The compiler without a database: what the SQL holds (parameters, never the query's text),
// where policies go (at every relation's source), what is refused and where, the cache, and
// the catalog's own checks. Rows are checked against Postgres in policy_pg_test.cpp and
// differential_test.cpp.
#include <keel/dsl.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace dsl = keel::dsl;

namespace {

dsl::catalog test_catalog() {
  std::ifstream in(KEEL_TEST_DATA_DIR "/dsl/catalog.json");
  REQUIRE(in.good());
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  return dsl::catalog::from_json(text).value();
}

const dsl::compiler& compiler() {
  static const auto c = dsl::compiler::create(test_catalog()).value();
  return c;
}

dsl::session member(std::int64_t tenant = 7) {
  return {.role = "member", .attributes = {{"tenant", tenant}}};
}

std::string sql(std::string_view text, const dsl::session& who) {
  auto compiled = compiler().compile(text, who);
  if (!compiled) {
    FAIL_CHECK(compiled.error().render(text));
    return "";
  }
  return (*compiled)->sql();
}

dsl::diagnostic refused(std::string_view text, const dsl::session& who) {
  auto compiled = compiler().compile(text, who);
  REQUIRE_MESSAGE(!compiled, "compiled: " << (compiled ? (*compiled)->sql() : ""));
  return compiled.error();
}

std::size_t count(const std::string& haystack, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("the SQL holds no text of the query: strings, parameters and session values are $n") {
    const std::string text =
        "from employees | filter name == \"Robert'); DROP TABLE employees; --\" && department == $dept"
        " | derive {label = f\"{name} ({department})\"} | select {derived_name = name, label}";
    auto compiled = compiler().compile(text, {.role = "admin"}).value();
    CHECK(compiled->sql().find("Robert") == std::string::npos);
    CHECK(compiled->sql().find("DROP") == std::string::npos);
    CHECK(compiled->sql().find("derived_name") == std::string::npos);  // derived names are generated aliases
    CHECK(compiled->sql().find("label") == std::string::npos);
    // Numbered in order of appearance: the f-string's pieces come first, in the select list.
    REQUIRE(compiled->parameters().size() == 4);
    CHECK(compiled->parameters()[0].text == " (");
    CHECK(compiled->parameters()[1].text == ")");
    CHECK(compiled->parameters()[2].text == "Robert'); DROP TABLE employees; --");
    CHECK(compiled->parameters()[3].from == dsl::parameter_slot::source::named);
    // The PRQL names are the result's column names.
    REQUIRE(compiled->columns().size() == 2);
    CHECK(compiled->columns()[0].name == "derived_name");
    CHECK(compiled->columns()[1].name == "label");
    CHECK(compiled->columns()[1].type == dsl::value_type::text);

    auto bound = compiled->bind({.role = "admin"}, {.named = {{"dept", "sales"}}}).value();
    REQUIRE(bound.values.size() == 4);
    CHECK(bound.values[3] == "sales");
    auto missing = compiled->bind({.role = "admin"});
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code == dsl::errc::missing_argument);
    CHECK(missing.error().message.find("$dept") != std::string::npos);
  }

  TEST_CASE("a role's row filter is grafted at the source of from, join, let and append") {
    const auto who = member();
    // Each reference to employees reads through the filtered source, however the query goes on.
    CHECK(count(sql("from employees | select {name}", who), "\"tenant_id\" = $1") == 1);
    const auto joined =
        sql("from e = employees | join side:left m = employees (e.manager_id == m.employee_id) | select "
            "{e.name, boss = "
            "m.name}",
            who);
    CHECK(count(joined, "FROM \"public\".\"employees\" WHERE (\"tenant_id\" = $1)") == 2);
    const auto let =
        sql("let mine = (from employees | select {name, department})\nfrom mine | sort name", who);
    CHECK(count(let, "FROM \"public\".\"employees\" WHERE (\"tenant_id\" = $1)") == 1);
    const auto appended =
        sql("from employees | select {name} | append (from employees | select {name = department})", who);
    CHECK(count(appended, "FROM \"public\".\"employees\" WHERE (\"tenant_id\" = $1)") == 2);
    // Malloy #1017: re-projecting the filtered column does not undo the filter, which is not a
    // last-stage predicate on a name but the source itself; the real column cannot be named.
    const auto reprojected = sql("from employees | derive {tenant_id = 99} | filter tenant_id == 99", who);
    CHECK(count(reprojected, "FROM \"public\".\"employees\" WHERE (\"tenant_id\" = $1)") == 1);
    CHECK(refused("from employees | filter tenant_id == 8", who).code == dsl::errc::column_not_granted);
    // The admin role has no filter: the table itself.
    CHECK(sql("from employees | select {name}", {.role = "admin"})
              .find("FROM \"public\".\"employees\" AS r1") != std::string::npos);
  }

  TEST_CASE("hidden columns, tables, aggregates and unknown names are refused at their place") {
    const auto who = member();
    auto hidden = refused("from employees\nselect {name, salary}", who);
    CHECK(hidden.code == dsl::errc::column_not_granted);
    CHECK(hidden.message == "column `salary` of table `employees` is not granted to role `member`");
    CHECK(hidden.line == 2);
    CHECK(hidden.column == 15);
    CHECK(refused("from employees | filter salary > 10", who).code == dsl::errc::column_not_granted);
    CHECK(refused("from employees | sort salary", who).code == dsl::errc::column_not_granted);
    CHECK(refused("from e = employees | select {e.salary}", who).code == dsl::errc::column_not_granted);
    auto table = refused("from audit", who);
    CHECK(table.code == dsl::errc::table_not_granted);
    CHECK(table.message.find("`audit`") != std::string::npos);
    auto unknown = refused("from payroll", who);
    CHECK(unknown.code == dsl::errc::unknown_table);
    CHECK(unknown.column == 6);
    auto aggregate = refused("from employees | aggregate {n = count this}", who);
    CHECK(aggregate.code == dsl::errc::aggregate_not_granted);
    CHECK(refused("from employees | derive {r = row_number this}", who).code ==
          dsl::errc::aggregate_not_granted);
    CHECK(refused("from employees | group {department} (take 1)", who).code ==
          dsl::errc::aggregate_not_granted);
    auto column = refused("from employees | select {nmae}", who);
    CHECK(column.code == dsl::errc::unknown_column);
    CHECK(column.message.find("employees.name") != std::string::npos);  // says what there is
    // On a join's right side too, a hidden column is named as such.
    auto right_hidden = refused(
        "from d = departments | join e = employees (d.department == e.department && e.salary > 1)", who);
    CHECK(right_hidden.code == dsl::errc::column_not_granted);
    auto ambiguous =
        refused("from e = employees | join d = departments (==department) | select {department}", who);
    CHECK(ambiguous.code == dsl::errc::ambiguous_column);
    CHECK(refused("from employees | select {x = name + 1}", who).code == dsl::errc::type_error);
    CHECK(refused("from employees | filter name", who).code == dsl::errc::type_error);
    CHECK(refused("from employees | derive {x = text.shout name}", who).code == dsl::errc::unknown_function);
    CHECK(refused("from employees | take 1", {.role = "nobody"}).code == dsl::errc::unknown_role);
    CHECK(refused("from employees | filter employee_id == @nope", who).code ==
          dsl::errc::unknown_session_attribute);
  }

  TEST_CASE("grants OR together; a column some grants hide is NULL on the rows only they admit") {
    const dsl::session who{.role = "self",
                           .attributes = {{"tenant", std::int64_t{7}},
                                          {"user_id", std::int64_t{3}},
                                          {"teams", std::vector<std::string>{"a", "b"}}}};
    const auto text = sql("from employees | select {name, email, department}", who);
    // Rows of either grant; salary and the masked email only on the user's own row.
    CHECK(text.find("WHERE ((\"employee_id\" = $") != std::string::npos);
    CHECK(text.find(" OR ") != std::string::npos);
    CHECK(text.find("CASE WHEN (\"employee_id\" = $") != std::string::npos);
    CHECK(text.find("SUBSTRING(\"email\" FROM 1 FOR 3)") != std::string::npos);
    CHECK(text.find("= ANY($") != std::string::npos);
    // The analyst inherits member's grant on the same rows: one admission, their columns together.
    const auto analyst = sql("from employees | select {name, salary}",
                             {.role = "analyst", .attributes = {{"tenant", std::int64_t{7}}}});
    CHECK(analyst.find("CASE") == std::string::npos);
    CHECK(count(analyst, "\"tenant_id\" = $1") == 1);
    // ... and the analyst's aggregates read only through its aggregate-granting grant.
    CHECK(compiler()
              .compile("from employees | group {department} (aggregate {total = sum salary})",
                       {.role = "analyst", .attributes = {{"tenant", std::int64_t{7}}}})
              .has_value());
  }

  TEST_CASE("session-only conditions fold at compile time, and the cache keys on what they read") {
    const std::string text = "from employees | select {name, salary}";
    const dsl::session free{.role = "pro",
                            .attributes = {{"tenant", std::int64_t{7}}, {"plan", std::string("free")}}};
    const dsl::session pro{.role = "pro",
                           .attributes = {{"tenant", std::int64_t{7}}, {"plan", std::string("pro")}}};
    const dsl::session enterprise{
        .role = "pro", .attributes = {{"tenant", std::int64_t{7}}, {"plan", std::string("enterprise")}}};
    // The salary grant applies to pro and enterprise plans only ("when"), decided now.
    CHECK(refused(text, free).code == dsl::errc::column_not_granted);
    const auto for_pro = sql(text, pro);
    CHECK(for_pro.find("\"tenant_id\" = $1") != std::string::npos);
    // For enterprise, `@plan == "enterprise"` is TRUE: every row, no filter, no parameter.
    const auto for_enterprise = compiler().compile(text, enterprise).value();
    CHECK(for_enterprise->sql().find("WHERE") == std::string::npos);
    CHECK(for_enterprise->parameters().empty());
    CHECK(for_enterprise->sql().find("enterprise") == std::string::npos);
    // Same text, role and folded values: the same compiled query; another plan: another one.
    auto again = compiler().compile(text, enterprise).value();
    CHECK(again.get() == for_enterprise.get());
    dsl::session other_tenant = pro;
    other_tenant.attributes["tenant"] = std::int64_t{8};  // bound, not folded: shared
    CHECK(compiler().compile(text, other_tenant).value().get() ==
          compiler().compile(text, pro).value().get());
    CHECK(compiler().compile(text, pro).value().get() != for_enterprise.get());
    // A missing folded attribute is an error, never a wider grant.
    CHECK(refused(text, {.role = "pro", .attributes = {{"tenant", std::int64_t{7}}}}).code ==
          dsl::errc::unknown_session_attribute);
  }

  TEST_CASE("schema per tenant: the session names one of the catalog's schemas, never another") {
    const auto a = sql("from notes | take 3",
                       {.role = "tenant_notes", .attributes = {{"tenant_schema", std::string("tenant_a")}}});
    CHECK(a.find("FROM \"tenant_a\".\"notes\"") != std::string::npos);
    const auto b = sql("from notes | take 3",
                       {.role = "tenant_notes", .attributes = {{"tenant_schema", std::string("tenant_b")}}});
    CHECK(b.find("FROM \"tenant_b\".\"notes\"") != std::string::npos);
    auto evil = refused("from notes", {.role = "tenant_notes",
                                       .attributes = {{"tenant_schema", std::string("public\".x; --")}}});
    CHECK(evil.code == dsl::errc::table_not_granted);
    CHECK(refused("from notes", {.role = "tenant_notes"}).code == dsl::errc::unknown_session_attribute);
  }

  TEST_CASE("the role's row ceiling caps every result") {
    CHECK(sql("from employees | select {name}", member()).ends_with("LIMIT 100"));
    CHECK(sql("from employees | select {name} | take 5", member()).ends_with("LIMIT 5"));
    CHECK(sql("from employees | select {name} | take 500", member()).ends_with("LIMIT 100"));
    CHECK(sql("from employees | select {name} | take $1", member()).ends_with("LIMIT LEAST($2, 100)"));
    CHECK(sql("from employees | select {name}", {.role = "admin"}).find("LIMIT") == std::string::npos);
  }

  TEST_CASE("pipeline order: a stage after a take, a join after a filter, read a subquery") {
    const dsl::session admin{.role = "admin"};
    const auto after_take = sql("from employees | sort salary | take 10 | filter department == \"x\"", admin);
    CHECK(after_take.find("LIMIT 10) AS") != std::string::npos);  // the take inside, the filter outside
    CHECK(after_take.find("ORDER BY r1.\"salary\" LIMIT 10") != std::string::npos);
    const auto ranges = sql("from employees | take 11..20 | take 2..3", admin);
    CHECK(ranges.ends_with("LIMIT 2 OFFSET 11"));
    const auto kept_order = sql("from employees | sort {-salary, name} | select {name}", admin);
    CHECK(kept_order.ends_with("ORDER BY r1.\"salary\" DESC, r1.\"name\""));
  }

  TEST_CASE("session values from text, typed by the attribute's declaration") {
    const dsl::session_attribute number{.name = "n", .type = dsl::value_type::integer};
    const dsl::session_attribute flag{.name = "f", .type = dsl::value_type::boolean};
    const dsl::session_attribute ratio{.name = "r", .type = dsl::value_type::decimal};
    const dsl::session_attribute word{.name = "w", .type = dsl::value_type::text};
    const dsl::session_attribute teams{.name = "t", .type = dsl::value_type::text, .array = true};
    const dsl::session_attribute ids{.name = "i", .type = dsl::value_type::integer, .array = true};
    CHECK(dsl::session_value_from_text(number, "42") == dsl::session_value{std::int64_t{42}});
    CHECK_FALSE(dsl::session_value_from_text(number, "42x"));
    CHECK_FALSE(dsl::session_value_from_text(number, ""));
    CHECK(dsl::session_value_from_text(flag, "true") == dsl::session_value{true});
    CHECK_FALSE(dsl::session_value_from_text(flag, "yes"));
    CHECK(dsl::session_value_from_text(ratio, "2.5") == dsl::session_value{2.5});
    CHECK_FALSE(dsl::session_value_from_text(ratio, "2.5%"));
    CHECK(dsl::session_value_from_text(word, "a,b") == dsl::session_value{std::string("a,b")});
    CHECK(dsl::session_value_from_text(teams, "a,b") ==
          dsl::session_value{std::vector<std::string>{"a", "b"}});
    CHECK(dsl::session_value_from_text(teams, "") == dsl::session_value{std::vector<std::string>{}});
    CHECK(dsl::session_value_from_text(ids, "1,2") == dsl::session_value{std::vector<std::int64_t>{1, 2}});
    CHECK_FALSE(dsl::session_value_from_text(ids, "1,x"));
  }

  TEST_CASE("the catalog: JSON both ways, and what create() refuses") {
    const auto cat = test_catalog();
    auto again = dsl::catalog::from_json(cat.to_json()).value();
    CHECK(again.to_json() == cat.to_json());
    CHECK(again.tables.size() == cat.tables.size());
    CHECK(again.roles.size() == cat.roles.size());

    CHECK(dsl::catalog::from_json("{").error().message.find("not valid JSON") != std::string::npos);
    CHECK(
        dsl::catalog::from_json(R"({"tables": [{"name": "t", "columns": [{"name": "a", "type": "blob"}]}]})")
            .error()
            .message.find("unknown type") != std::string::npos);

    const auto create_error = [](std::string_view json) {
      auto c = dsl::compiler::create(dsl::catalog::from_json(json).value());
      REQUIRE_FALSE(c.has_value());
      return c.error().message;
    };
    const std::string tables = R"("tables": [{"name": "t", "columns": [{"name": "a", "type": "integer"}]}])";
    CHECK(create_error("{" + tables +
                       R"(, "roles": [{"name": "r", "grants": [{"table": "u", "columns": ["*"]}]}]})")
              .find("no table u") != std::string::npos);
    CHECK(create_error("{" + tables +
                       R"(, "roles": [{"name": "r", "grants": [{"table": "t", "columns": ["b"]}]}]})")
              .find("has no column b") != std::string::npos);
    CHECK(
        create_error(
            "{" + tables +
            R"(, "roles": [{"name": "r", "grants": [{"table": "t", "columns": ["*"], "row_filter": "a >"}]}]})")
            .find("row filter") != std::string::npos);
    CHECK(create_error(
              "{" + tables +
              R"(, "roles": [{"name": "r", "grants": [{"table": "t", "columns": ["*"], "when": "a > 1"}]}]})")
              .find("session attributes and literals only") != std::string::npos);
    CHECK(create_error("{" + tables +
                       R"(, "roles": [{"name": "r", "inherits": ["s"]}, {"name": "s", "inherits": ["r"]}]})")
              .find("inherits itself") != std::string::npos);
    CHECK(
        create_error(
            "{" + tables +
            R"(, "roles": [{"name": "r", "grants": [{"table": "t", "columns": ["*"], "row_filter": "a == @who"}]}]})")
            .find("@who is not a session attribute") != std::string::npos);
    // A policy's own errors name the role, the table and what, placed in the policy's text.
    auto bad_filter = dsl::compiler::create(
        dsl::catalog::from_json(
            "{" + tables +
            R"(, "roles": [{"name": "r", "grants": [{"table": "t", "columns": ["*"], "row_filter": "b == 1"}]}]})")
            .value());
    REQUIRE(bad_filter.has_value());  // b is checked when the grant is used
    auto use = bad_filter->compile("from t", {.role = "r"});
    REQUIRE_FALSE(use.has_value());
    CHECK(use.error().message.find("role r, grant on t, row filter: table `t` has no column `b`") == 0);
    CHECK(use.error().column == 1);
  }

  TEST_CASE("compile() from several threads: one compiled query per key, the cache bounded") {
    // A small cache, so threads evict and recompile while others read.
    auto small = dsl::compiler::create(test_catalog(), {.cache_capacity = 8}).value();
    const std::vector<std::string> texts = {
        "from employees | select {name}",
        "from employees | filter employee_id > 3 | take 5",
        "from e = employees | join d = departments (==department) | select {e.name, d.department}",
        "from employees | sort name | take 2..4",
        "from departments | select {department}",
    };
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 400; ++i) {
          const auto tenant = static_cast<std::int64_t>((i + t) % 7);
          const dsl::session who{.role = "member", .attributes = {{"tenant", tenant}}};
          auto q = small.compile(texts[static_cast<std::size_t>(i + t) % texts.size()], who);
          if (!q || (*q)->sql().find("\"tenant_id\" = $") == std::string::npos) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures.load() == 0);
    // Bound attributes are not in the key: every tenant shares one compiled query per text.
    const auto a = small.compile(texts[0], member(1)).value();
    const auto b = small.compile(texts[0], member(2)).value();
    CHECK(a.get() == b.get());
  }
}
