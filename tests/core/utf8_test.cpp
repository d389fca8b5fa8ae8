#include <keel/core/utf8.hpp>

#include <doctest/doctest.h>

#include <string>
#include <string_view>

TEST_SUITE("unit") {
  TEST_CASE("utf8: sequence lengths and code points of well-formed text, 0 for every ill-formed kind") {
    struct sample {
      std::string_view bytes;
      std::size_t length;
      char32_t point;
    };
    for (const auto& [bytes, length, point] :
         {sample{"a", 1, U'a'}, sample{"\x7F", 1, 0x7F}, sample{"\xC2\x80", 2, 0x80},
          sample{"\xDF\xBF", 2, 0x7FF}, sample{"\xE0\xA0\x80", 3, 0x800}, sample{"\xE4\xB8\x96", 3, 0x4E16},
          sample{"\xED\x9F\xBF", 3, 0xD7FF}, sample{"\xEE\x80\x80", 3, 0xE000},
          sample{"\xF0\x90\x80\x80", 4, 0x10000}, sample{"\xF4\x8F\xBF\xBF", 4, 0x10FFFF}}) {
      CAPTURE(point);
      CHECK(keel::utf8_sequence_length(bytes) == length);
      CHECK(keel::utf8_code_point(bytes, length) == point);
      std::string written;
      keel::append_utf8(written, point);
      CHECK(written == bytes);
    }
    for (const std::string_view bad :
         {std::string_view(""), std::string_view("\x80"),
          std::string_view("\xC0\xAF"),                                        // continuation, overlong
          std::string_view("\xC1\xBF"), std::string_view("\xE0\x9F\xBF"),      // overlong
          std::string_view("\xED\xA0\x80"), std::string_view("\xED\xBF\xBF"),  // surrogates
          std::string_view("\xF0\x8F\xBF\xBF"),
          std::string_view("\xF4\x90\x80\x80"),                               // overlong, past U+10FFFF
          std::string_view("\xF5\x80\x80\x80"), std::string_view("\xC3"),     // bad lead, cut short
          std::string_view("\xE4\xB8"), std::string_view("\xE4\x28\x96")}) {  // cut short, bad continuation
      CAPTURE(bad.size());
      CHECK(keel::utf8_sequence_length(bad) == 0);
    }
    CHECK(keel::valid_utf8("plain, ¡ and 世界 and 😀"));
    CHECK(keel::valid_utf8(""));
    CHECK_FALSE(keel::valid_utf8("ok then \xC3"));
    CHECK_FALSE(keel::valid_utf8("a \xFF b"));
  }
}
