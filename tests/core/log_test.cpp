#include <keel/core/log.hpp>

#include "support/random.hpp"
#include "support/subprocess.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <cstdlib>
#include <limits>
#include <random>
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

  TEST_CASE("a sink that logs does not corrupt the line it was given") {
    std::vector<std::string> lines;
    const auto saved = keel::log::current();
    keel::log::set_level(keel::log::level::info);
    keel::log::set_sink([&](std::string_view line) {
      if (lines.empty()) {
        lines.emplace_back();  // reserve the outer line's place, then log from inside the sink
        keel::log::info("from inside the sink, long enough to make a buffer grow: " + std::string(300, 'x'));
        lines.front() = std::string(line);
      } else {
        lines.emplace_back(line);
      }
    });
    keel::log::info("outer");
    keel::log::set_sink({});
    keel::log::set_level(saved);
    REQUIRE(lines.size() == 2);
    CHECK(boost::json::parse(lines[0]).at("msg").as_string() == "outer");
    CHECK(boost::json::parse(lines[1]).at("msg").as_string().starts_with("from inside the sink"));
  }

  TEST_CASE("level names parse as KEEL_LOG spells them") {
    CHECK(keel::log::parse_level("debug") == keel::log::level::debug);
    CHECK(keel::log::parse_level("warning") == keel::log::level::warn);
    CHECK(keel::log::parse_level("off") == keel::log::level::off);
    CHECK_FALSE(keel::log::parse_level("loud").has_value());
  }
}

namespace {
// Random text for the property test: mostly arbitrary bytes (invalid UTF-8, overlong forms,
// surrogates, code points past U+10FFFF), sometimes well-formed UTF-8 that must come back intact.
std::string random_bytes(std::mt19937_64& rng) {
  std::string out(rng() % 24, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xFF);
  return out;
}

void append_code_point(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string random_utf8(std::mt19937_64& rng) {
  std::string out;
  const std::size_t n = rng() % 12;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t cp = static_cast<std::uint32_t>(rng() % 0x110000);
    if (cp >= 0xD800 && cp <= 0xDFFF) cp -= 0x800;  // surrogates are not scalar values
    append_code_point(out, cp);
  }
  return out;
}

// Runs one test case of this binary again with KEEL_LOG=value; returns what it wrote to stderr.
std::string stderr_of_child_with_keel_log(const std::string& value, const std::string& test_case) {
  const auto child = keel::test::run_test_case_in_child(test_case, {{"KEEL_LOG", value}});
  CHECK(WIFEXITED(child.wait_status));
  CHECK(WEXITSTATUS(child.wait_status) == 0);
  return child.stderr_text;
}
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("every line is valid JSON whatever the bytes") {
    std::mt19937_64& rng = keel::test::rng();
    captured_log log;
    keel::log::set_level(keel::log::level::trace);
    for (int round = 0; round < 20000; ++round) {
      const bool well_formed = rng() % 4 == 0;
      const std::string message = well_formed ? random_utf8(rng) : random_bytes(rng);
      const std::string key = well_formed ? random_utf8(rng) : random_bytes(rng);
      const std::string value = well_formed ? random_utf8(rng) : random_bytes(rng);
      log.lines.clear();
      keel::log::info(message, {{std::string_view(key), std::string_view(value)}});
      REQUIRE(log.lines.size() == 1);
      INFO("line: ", log.lines[0]);
      boost::system::error_code ec;
      const auto parsed = boost::json::parse(log.lines[0], ec);
      REQUIRE_MESSAGE(!ec, ec.message());
      REQUIRE(parsed.is_object());
      if (well_formed) {
        CHECK(parsed.at("msg").as_string() == message);
        // A key equal to "ts", "level" or "msg" is a duplicate name; the last one wins.
        if (key != "ts" && key != "level" && key != "msg") CHECK(parsed.at(key).as_string() == value);
      }
    }
  }

  TEST_CASE("an unknown KEEL_LOG is reported as one valid JSON line") {
    const std::string hostile = std::string("\"},\"level\":\"error\",\"x\":\"\x01\xff\xed\xa0\x80") + "\\";
    const std::string err =
        stderr_of_child_with_keel_log(hostile, "level names parse as KEEL_LOG spells them");
    INFO("stderr: ", err);
    const auto end = err.find('\n');
    REQUIRE(end != std::string::npos);
    boost::system::error_code ec;
    const auto line = boost::json::parse(std::string_view(err).substr(0, end), ec);
    REQUIRE_MESSAGE(!ec, ec.message());
    CHECK(line.at("level").as_string() == "warn");
    CHECK(std::string_view(line.at("value").as_string()).starts_with("\"},\"level\":\"error\""));
  }

  TEST_CASE("KEEL_LOG sets the initial level") {
    if (const char* configured = std::getenv("KEEL_LOG"); configured != nullptr) {
      CHECK(keel::log::current() == keel::log::parse_level(configured));
      return;
    }
    // Run again with KEEL_LOG=debug: the child checks its own level (the branch above).
    const std::string err = stderr_of_child_with_keel_log("debug", "KEEL_LOG sets the initial level");
    CHECK(err.empty());
  }
}
