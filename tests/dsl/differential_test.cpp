// keel::dsl against PRQL's own compiler: every query of tests/data/dsl/corpus.prql is compiled
// by keel and by npm's prqlc (tests/dsl/prqlc_compile.cjs; ./keel test installs prqlc into
// .keel/clients), both SQL texts run on the same Postgres over tests/data/dsl/chinook.sql, and
// the rows must be equal by value and position (not by column name: prqlc names some oddly).
#include "support.hpp"

#include <boost/json.hpp>

#include <filesystem>

#include <support/subprocess.hpp>

namespace dsl = keel::dsl;
using namespace keel::test::dsl_support;

namespace {

std::filesystem::path clients_dir() {
  if (const char* dir = std::getenv("KEEL_TEST_CLIENTS_DIR")) return dir;
  return KEEL_TEST_CLIENTS_DIR;
}

struct corpus_query {
  std::string name;
  std::string text;
};

std::vector<corpus_query> corpus() {
  const auto text = read_file(KEEL_TEST_DATA_DIR "/dsl/corpus.prql");
  std::vector<corpus_query> out;
  std::size_t at = 0;
  while (at < text.size()) {
    auto next = text.find("\n# ---\n", at);
    const auto block = text.substr(at, next == std::string::npos ? std::string::npos : next - at);
    at = next == std::string::npos ? text.size() : next + 7;
    if (!block.starts_with("# name: ")) continue;  // the header
    const std::size_t name_at = 0;
    const auto name_end = block.find('\n', name_at);
    out.push_back({block.substr(name_at + 8, name_end - name_at - 8), block.substr(name_end + 1)});
  }
  return out;
}

// prqlc's SQL for each query, or its error.
std::vector<std::string> prqlc(const std::vector<corpus_query>& queries) {
  boost::json::array input;
  for (const auto& q : queries) input.emplace_back(q.text);
  const auto ran = keel::test::run_command("KEEL_TEST_CLIENTS_DIR='" + clients_dir().string() +
                                               "' node '" KEEL_TEST_SOURCE_DIR "/dsl/prqlc_compile.cjs'",
                                           boost::json::serialize(input));
  INFO("prqlc_compile.cjs said:\n" << ran.output.substr(0, 2000));
  REQUIRE(ran.status == 0);
  const auto& output = ran.output;
  auto parsed = boost::json::parse(output).as_array();
  REQUIRE(parsed.size() == queries.size());
  std::vector<std::string> sql;
  for (const auto& entry : parsed) {
    const auto& o = entry.as_object();
    if (const auto* s = o.if_contains("sql")) {
      sql.emplace_back(s->as_string());
    } else {
      sql.push_back("ERROR: " + std::string(o.at("error").as_string()));
    }
  }
  return sql;
}

}  // namespace

TEST_SUITE("node") {
  TEST_CASE("every corpus query returns prqlc's rows, by value and position") {
    const auto modules = clients_dir() / "node_modules" / "prqlc";
    REQUIRE_MESSAGE(
        std::filesystem::exists(modules),
        "npm's prqlc is not in " << modules << ": ./keel test installs it (npm install in .keel/clients)");
    chinook db;
    auto cat = db.catalog();
    REQUIRE(cat.tables.size() == 9);
    dsl::role admin{.name = "admin"};
    for (const auto& t : cat.tables)
      admin.grants.push_back({.table = t.name, .columns = {"*"}, .aggregates = true});
    cat.roles.push_back(admin);
    auto compiler = dsl::compiler::create(std::move(cat)).value();
    const dsl::session who{.role = "admin"};

    const auto queries = corpus();
    REQUIRE(queries.size() >= 80);
    const auto reference = prqlc(queries);
    int compared = 0;
    for (std::size_t i = 0; i < queries.size(); ++i) {
      const auto& q = queries[i];
      CAPTURE(q.name);
      CAPTURE(q.text);
      CAPTURE(reference[i]);
      REQUIRE_MESSAGE(!reference[i].starts_with("ERROR"), "prqlc refuses a corpus query");
      auto compiled = compiler.compile(q.text, who);
      if (!compiled) {
        FAIL_CHECK("keel refuses it:\n" << compiled.error().render(q.text));
        continue;
      }
      CAPTURE((*compiled)->sql());
      auto ours = dsl::run(db.conn, **compiled, who);
      if (!ours) {
        FAIL_CHECK("keel's SQL fails: " << db.conn.last_error().message);
        continue;
      }
      auto theirs = db.conn.query(reference[i]);
      REQUIRE_MESSAGE(theirs, "prqlc's SQL fails: " << db.conn.last_error().message);
      const auto a = cells(*ours);
      const auto b = cells(*theirs);
      const auto diff = difference(a, b);
      CHECK_MESSAGE(diff.empty(), diff << "\nkeel:\n" << show(a) << "prqlc:\n" << show(b));
      ++compared;
    }
    CHECK(compared == static_cast<int>(queries.size()));
  }
}
