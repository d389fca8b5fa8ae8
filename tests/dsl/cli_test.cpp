// keel-dslc end to end: PRQL on stdin, SQL (and parameter values) on stdout under a catalog's
// role, refusals with their caret on stderr and exit 1, the RLS script, usage errors exit 2.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <sys/wait.h>

namespace {

struct outcome {
  int status = -1;
  std::string out;  // stdout and stderr together
};

outcome dslc(const std::string& arguments, const std::string& input) {
  const auto path =
      std::filesystem::temp_directory_path() / ("keel_dslc_" + std::to_string(::getpid()) + ".prql");
  {
    std::ofstream in(path);
    in << input;
  }
  const std::string command = std::string("'") + KEEL_DSLC +
                              "' --catalog '" KEEL_TEST_DATA_DIR "/dsl/catalog.json' " + arguments + " < '" +
                              path.string() + "' 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  REQUIRE(pipe);
  outcome o;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe.get()) != nullptr)
    o.out += buffer.data();
  const int raw = ::pclose(pipe.release());
  o.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::filesystem::remove(path);
  return o;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("keel-dslc compiles under a role, prints the parameters, refuses with a caret, emits RLS") {
    auto compiled =
        dslc("--role self --session tenant=7 --session user_id=3 --session teams=a,b --parameters",
             "from employees | filter name != \"x\" | select {name, email}");
    CAPTURE(compiled.out);
    REQUIRE(compiled.status == 0);
    CHECK(compiled.out.find("SELECT ") == 0);
    CHECK(compiled.out.find("\"employee_id\" = $") != std::string::npos);
    const auto sql = compiled.out.substr(0, compiled.out.find('\n'));
    CHECK(sql.find("\"x\"") == std::string::npos);
    CHECK(sql.ends_with("(r1.\"name\" <> $4)"));  // the literal is a parameter…
    CHECK(compiled.out.find(R"(["7","{\"a\",\"b\"}","3","x"])") !=
          std::string::npos);  // …whose value is here

    auto hidden = dslc("--role member --session tenant=7", "from employees\nselect {salary}");
    CAPTURE(hidden.out);
    CHECK(hidden.status == 1);
    CHECK(hidden.out.find(
              "Error at 2:9: column `salary` of table `employees` is not granted to role `member`") == 0);
    CHECK(hidden.out.find("^^^^^^") != std::string::npos);

    auto rls = dslc("--rls", "");
    CAPTURE(rls.out.substr(0, 400));
    CHECK(rls.status == 0);
    CHECK(rls.out.find("CREATE POLICY \"keel_member_1\" ON \"public\".\"employees\"") != std::string::npos);

    CHECK(dslc("--session tenant=7", "from employees").status == 2);  // several roles: name one
    CHECK(dslc("--role member --session tenant=seven", "from employees").status == 2);
    CHECK(dslc("--role member --frobnicate", "from employees").status == 2);
    CHECK(dslc("--role nobody", "from employees").status == 1);
  }
}
