#include <keel/core/assert.hpp>

#include "support/subprocess.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <string>

namespace {
int evaluations = 0;
bool counted_true() {
  ++evaluations;
  return true;
}
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("KEEL_ASSERT passes a true condition and evaluates it once") {
    evaluations = 0;
    KEEL_ASSERT(counted_true());
    KEEL_ASSERT(counted_true(), "with a message");
#if KEEL_ASSERTS_ENABLED
    CHECK(evaluations == 2);
#else
    CHECK(evaluations == 0);
#endif
  }

  TEST_CASE("a failed KEEL_ASSERT aborts with one JSON line naming the invariant") {
    if (std::getenv("KEEL_ASSERT_TEST_CHILD") != nullptr) {
      std::signal(SIGABRT, SIG_DFL);  // the abort itself is the outcome, not doctest's crash report
      const int balance = 1;
      KEEL_ASSERT(balance >= 5, "the balance covers the amount");
      std::_Exit(0);  // reached only when assertions are off
    }
    const auto child = keel::test::run_test_case_in_child(
        "a failed KEEL_ASSERT aborts with one JSON line naming the invariant",
        {{"KEEL_ASSERT_TEST_CHILD", "1"}});
#if KEEL_ASSERTS_ENABLED
    INFO("stderr: ", child.stderr_text);
    REQUIRE(WIFSIGNALED(child.wait_status));
    CHECK(WTERMSIG(child.wait_status) == SIGABRT);
    const auto end = child.stderr_text.find('\n');
    REQUIRE(end != std::string::npos);
    const auto line = boost::json::parse(child.stderr_text.substr(0, end)).as_object();
    CHECK(line.at("level").as_string() == "error");
    CHECK(line.at("condition").as_string() == "balance >= 5");
    CHECK(line.at("invariant").as_string() == "the balance covers the amount");
    CHECK(std::string(line.at("file").as_string()).find("assert_test.cpp") != std::string::npos);
#else
    CHECK(WIFEXITED(child.wait_status));
#endif
  }
}
