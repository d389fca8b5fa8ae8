// keel-dslc end to end: PRQL on stdin, SQL (and parameter values) on stdout under a catalog's
// role, refusals with their caret on stderr and exit 1, the RLS script, usage errors exit 2.
#include <doctest/doctest.h>

#include <string>

#include <support/subprocess.hpp>

namespace {

keel::test::command_outcome dslc(const std::string& arguments, const std::string& input) {
  return keel::test::run_command(
      std::string("'") + KEEL_DSLC + "' --catalog '" KEEL_TEST_DATA_DIR "/dsl/catalog.json' " + arguments,
      input);
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("keel-dslc compiles under a role, prints the parameters, refuses with a caret, emits RLS") {
    auto compiled =
        dslc("--role self --session tenant=7 --session user_id=3 --session teams=a,b --parameters",
             "from employees | filter name != \"x\" | select {name, email}");
    CAPTURE(compiled.output);
    REQUIRE(compiled.status == 0);
    CHECK(compiled.output.find("SELECT ") == 0);
    CHECK(compiled.output.find("\"employee_id\" = $") != std::string::npos);
    const auto sql = compiled.output.substr(0, compiled.output.find('\n'));
    CHECK(sql.find("\"x\"") == std::string::npos);
    CHECK(sql.ends_with("(r1.\"name\" <> $4)"));  // the literal is a parameter…
    CHECK(compiled.output.find(R"(["7","{\"a\",\"b\"}","3","x"])") !=
          std::string::npos);  // …whose value is here

    auto hidden = dslc("--role member --session tenant=7", "from employees\nselect {salary}");
    CAPTURE(hidden.output);
    CHECK(hidden.status == 1);
    CHECK(hidden.output.find(
              "Error at 2:9: column `salary` of table `employees` is not granted to role `member`") == 0);
    CHECK(hidden.output.find("^^^^^^") != std::string::npos);

    auto rls = dslc("--rls", "");
    CAPTURE(rls.output.substr(0, 400));
    CHECK(rls.status == 0);
    CHECK(rls.output.find("CREATE POLICY \"keel_member_1\" ON \"public\".\"employees\"") !=
          std::string::npos);

    CHECK(dslc("--session tenant=7", "from employees").status == 2);  // several roles: name one
    CHECK(dslc("--role member --session tenant=seven", "from employees").status == 2);
    CHECK(dslc("--role member --frobnicate", "from employees").status == 2);
    CHECK(dslc("--role nobody", "from employees").status == 1);
  }
}
