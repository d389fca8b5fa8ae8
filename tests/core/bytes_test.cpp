#include <keel/core/bytes.hpp>

#include <doctest/doctest.h>

#include <support/random.hpp>

using namespace keel;

TEST_SUITE("unit") {
  TEST_CASE("hex round trips and rejects bad input") {
    const bytes data{0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    CHECK(to_hex(data) == "00017f80abff");
    CHECK(from_hex("00017F80ABff").value() == data);
    CHECK(from_hex("").value().empty());
    CHECK(from_hex("abc").error() == errc::hex_odd_length);
    CHECK(from_hex("0g").error() == errc::hex_invalid_digit);
    CHECK(from_hex("0x00").error() == errc::hex_invalid_digit);
    CHECK(from_hex("00 1").error() == errc::hex_invalid_digit);
    CHECK(from_hex("00 12").error() == errc::hex_odd_length);
    CHECK(from_hex("0 01").error() == errc::hex_invalid_digit);
    CHECK(from_hex(std::string_view("\0\0", 2)).error() == errc::hex_invalid_digit);
  }

  TEST_CASE("base64 matches the RFC 4648 test vectors") {
    const std::pair<std::string_view, std::string_view> vectors[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (const auto& vector : vectors) {
      const auto plain = vector.first;
      const auto encoded = vector.second;
      CAPTURE(plain);
      CHECK(to_base64(as_bytes(plain)) == encoded);
      CHECK(as_chars(from_base64(encoded).value()) == plain);
      std::string unpadded(encoded);
      while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
      CHECK(to_base64url(as_bytes(plain)) == unpadded);
      CHECK(as_chars(from_base64url(unpadded).value()) == plain);
      CHECK(as_chars(from_base64url(encoded).value()) == plain);  // padded URL-safe is fine
    }
  }

  TEST_CASE("base64 alphabets differ in two characters") {
    const bytes data{0xfb, 0xff, 0xbf};
    CHECK(to_base64(data) == "+/+/");
    CHECK(to_base64url(data) == "-_-_");
    CHECK(from_base64("-_-_").error() == errc::base64_invalid_character);
    CHECK(from_base64url("+/+/").error() == errc::base64_invalid_character);
  }

  TEST_CASE("base64 rejects malformed input with a specific error") {
    CHECK(from_base64("Zg").error() == errc::base64_invalid_padding);  // standard needs padding
    CHECK(from_base64("Zg=").error() == errc::base64_invalid_padding);
    CHECK(from_base64("Zg===").error() == errc::base64_invalid_padding);
    CHECK(from_base64("Zm9v=").error() == errc::base64_invalid_padding);
    CHECK(from_base64("Z===").error() == errc::base64_invalid_length);
    CHECK(from_base64("Zm9vY").error() == errc::base64_invalid_length);
    CHECK(from_base64("Zg==Zg==").error() == errc::base64_invalid_padding);
    CHECK(from_base64("Zm 9v").error() == errc::base64_invalid_character);
    CHECK(from_base64("Zm9v\n").error() == errc::base64_invalid_character);
    CHECK(from_base64("Zh==").error() == errc::base64_noncanonical);  // 'h' leaves bits set
    CHECK(from_base64("Zm9=").error() == errc::base64_noncanonical);
    CHECK(from_base64url("Zh").error() == errc::base64_noncanonical);
    CHECK(from_base64url("Zg=").error() == errc::base64_invalid_padding);
    CHECK(from_base64url("====").error() == errc::base64_invalid_padding);
    // Every error has a message that says what to do.
    CHECK(make_error_code(errc::base64_invalid_padding).message().find("'='") != std::string::npos);
  }

  TEST_CASE("hex and base64 round trip random data") {
    for (int round = 0; round < 2000; ++round) {
      bytes data(test::uniform<std::size_t>(0, 70));
      for (auto& b : data) b = test::uniform<std::uint8_t>(0, 255);
      REQUIRE(from_hex(to_hex(data)).value() == data);
      REQUIRE(from_base64(to_base64(data)).value() == data);
      REQUIRE(from_base64url(to_base64url(data)).value() == data);
      REQUIRE(to_base64(data).size() == (data.size() + 2) / 3 * 4);
    }
  }

  TEST_CASE("base64 decoding never accepts two encodings of the same bytes") {
    // Flip each character of valid encodings; anything accepted must re-encode to itself.
    const std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ ";
    for (int round = 0; round < 300; ++round) {
      bytes data(test::uniform<std::size_t>(1, 10));
      for (auto& b : data) b = test::uniform<std::uint8_t>(0, 255);
      std::string text = to_base64(data);
      text[test::uniform<std::size_t>(0, text.size() - 1)] =
          alphabet[test::uniform<std::size_t>(0, alphabet.size() - 1)];
      if (auto decoded = from_base64(text)) {
        CHECK(to_base64(*decoded) == text);
      }
    }
  }

  TEST_CASE("constant_time_equal compares contents and lengths") {
    const bytes a{1, 2, 3}, b{1, 2, 3}, c{1, 2, 4}, d{1, 2};
    CHECK(constant_time_equal(a, b));
    CHECK_FALSE(constant_time_equal(a, c));
    CHECK_FALSE(constant_time_equal(a, d));
    CHECK(constant_time_equal({}, {}));
  }
}
