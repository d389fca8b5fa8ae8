#include <keel/core/error.hpp>

#include <doctest/doctest.h>

#include <set>
#include <string>

namespace {
// A component's errc, written the way every keel component writes one.
namespace demo {
enum class errc { queue_paused = 1, unknown_kind };
const char* describe(errc e) noexcept {
  switch (e) {
    case errc::queue_paused:
      return "queue is paused; resume it to run jobs";
    case errc::unknown_kind:
      return "no handler is registered for this job kind";
  }
  return "unknown demo error";
}
constexpr keel::enum_error_category<errc> category{0x1234567890abcdefULL, "keel.demo", &describe};
keel::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), category};
}
}  // namespace demo
}  // namespace

template <>
struct boost::system::is_error_code_enum<demo::errc> : std::true_type {};

namespace {
keel::result<int> parse_positive(int x) {
  if (x <= 0) return demo::errc::unknown_kind;
  return x;
}
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("a component errc converts to keel::error_code with its category") {
    const keel::error_code ec = demo::errc::queue_paused;
    CHECK(ec.category().name() == std::string_view("keel.demo"));
    CHECK(ec.message() == "queue is paused; resume it to run jobs");
    CHECK(ec == demo::errc::queue_paused);
    CHECK(ec != demo::errc::unknown_kind);
    CHECK(ec != keel::errc::hex_odd_length);  // same value, different category
    CHECK(keel::error_code(keel::errc::crypto_failure).category() == keel::core_category());
  }

  TEST_CASE("result carries a value or an error, and value() throws system_error") {
    CHECK(parse_positive(3).value() == 3);
    auto failed = parse_positive(-1);
    REQUIRE(failed.has_error());
    CHECK(failed.error() == demo::errc::unknown_kind);
    CHECK_THROWS_AS((void)failed.value(), keel::system_error);
    try {
      (void)failed.value();
    } catch (const keel::system_error& e) {
      CHECK(std::string(e.what()).find("no handler is registered") != std::string::npos);
    }
  }

  TEST_CASE("categories with the same id are equal across copies") {
    constexpr keel::enum_error_category<demo::errc> copy{0x1234567890abcdefULL, "keel.demo", &demo::describe};
    CHECK(keel::error_code(1, copy) == demo::errc::queue_paused);
  }

  TEST_CASE("every core error has a distinct, helpful message") {
    std::set<std::string> messages;
    for (int v = static_cast<int>(keel::errc::hex_odd_length);
         v <= static_cast<int>(keel::errc::invalid_argument); ++v) {
      const auto message = keel::make_error_code(static_cast<keel::errc>(v)).message();
      CAPTURE(v);
      CHECK(message.size() > 10);
      CHECK(messages.insert(message).second);
    }
  }
}
