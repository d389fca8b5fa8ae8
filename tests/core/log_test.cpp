#include <keel/core/log.hpp>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

namespace {
// Captures log lines for the life of a test and restores stderr and the level afterwards.
struct captured_log {
  std::vector<std::string> lines;
  keel::log::level saved = keel::log::current();
  captured_log() {
    keel::log::set_sink([this](std::string_view line) { lines.emplace_back(line); });
  }
  ~captured_log() {
    keel::log::set_sink({});
    keel::log::set_level(saved);
  }
  boost::json::object parsed(std::size_t i) const {
    REQUIRE(i < lines.size());
    REQUIRE(!lines[i].empty());
    REQUIRE(lines[i].back() == '\n');
    REQUIRE(lines[i].find('\n') == lines[i].size() - 1);  // exactly one line
    return boost::json::parse(lines[i]).as_object();
  }
};
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("a log line is one JSON object with typed fields") {
    captured_log log;
    keel::log::set_level(keel::log::level::info);
    keel::log::info("pool connection replaced", {{"pool", "main"},
                                                 {"in_use", 3},
                                                 {"lag", -2},
                                                 {"ratio", 0.5},
                                                 {"fresh", true},
                                                 {"big", std::numeric_limits<std::uint64_t>::max()}});
    const auto line = log.parsed(0);
    CHECK(line.at("level").as_string() == "info");
    CHECK(line.at("msg").as_string() == "pool connection replaced");
    CHECK(line.at("pool").as_string() == "main");
    CHECK(line.at("in_use").to_number<int>() == 3);
    CHECK(line.at("lag").to_number<int>() == -2);
    CHECK(line.at("ratio").as_double() == 0.5);
    CHECK(line.at("fresh").as_bool());
    CHECK(line.at("big").as_uint64() == std::numeric_limits<std::uint64_t>::max());
    const auto ts = std::string(line.at("ts").as_string());
    CHECK(ts.size() == 27);  // 2026-11-25T21:53:04.123456Z
    CHECK(ts.back() == 'Z');
  }

  TEST_CASE("levels below the current one are dropped") {
    captured_log log;
    keel::log::set_level(keel::log::level::warn);
    keel::log::info("dropped");
    keel::log::debug("dropped");
    keel::log::warn("kept");
    keel::log::error("kept too");
    REQUIRE(log.lines.size() == 2);
    CHECK(log.parsed(0).at("level").as_string() == "warn");
    CHECK(log.parsed(1).at("level").as_string() == "error");
    keel::log::set_level(keel::log::level::off);
    keel::log::error("dropped");
    CHECK(log.lines.size() == 2);
    CHECK_FALSE(keel::log::enabled(keel::log::level::error));
  }

  TEST_CASE("hostile strings still give valid JSON") {
    captured_log log;
    keel::log::set_level(keel::log::level::trace);
    const std::string nasty =
        std::string("quote\" backslash\\ newline\n tab\t nul") + '\0' + "\x01 bad utf8 \xff\xc3 ok é";
    keel::log::trace(nasty, {{"k\"ey", nasty}, {"nan", std::numeric_limits<double>::quiet_NaN()}});
    const auto line = log.parsed(0);
    CHECK(line.at("msg").as_string().starts_with("quote\" backslash\\ newline\n tab\t nul"));
    CHECK(std::string(line.at("msg").as_string()).find("ok é") != std::string::npos);
    CHECK(line.at("k\"ey").is_string());
    CHECK(line.at("nan").is_string());
  }

  TEST_CASE("level names parse as KEEL_LOG spells them") {
    CHECK(keel::log::parse_level("debug") == keel::log::level::debug);
    CHECK(keel::log::parse_level("warning") == keel::log::level::warn);
    CHECK(keel::log::parse_level("off") == keel::log::level::off);
    CHECK_FALSE(keel::log::parse_level("loud").has_value());
  }
}

TEST_SUITE("unit") {
  TEST_CASE("KEEL_LOG sets the initial level") {
    const char* configured = std::getenv("KEEL_LOG");
    if (configured == nullptr) return;  // ctest runs this case again with KEEL_LOG=debug
    CHECK(keel::log::current() == keel::log::parse_level(configured));
  }
}
