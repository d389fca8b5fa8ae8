#include <keel/core/varint.hpp>

#include <doctest/doctest.h>

#include <limits>

#include <support/random.hpp>

using namespace keel;

TEST_SUITE("unit") {
  TEST_CASE("varint encodes as protobuf does") {
    const std::pair<std::uint64_t, std::string_view> vectors[] = {
        {0, "00"},
        {1, "01"},
        {127, "7f"},
        {128, "8001"},
        {300, "ac02"},
        {16384, "808001"},
        {std::numeric_limits<std::uint64_t>::max(), "ffffffffffffffffff01"},
    };
    for (const auto& vector : vectors) {
      const auto value = vector.first;
      const auto encoded = vector.second;
      CAPTURE(value);
      bytes out;
      append_varint(out, value);
      CHECK(to_hex(out) == encoded);
      CHECK(varint_size(value) == out.size());
      std::size_t offset = 0;
      CHECK(decode_varint(out, offset).value() == value);
      CHECK(offset == out.size());
    }
  }

  TEST_CASE("varint decoding rejects truncated, overflowing and padded input") {
    std::size_t offset = 0;
    CHECK(decode_varint(bytes{}, offset).error() == errc::varint_truncated);
    CHECK(decode_varint(from_hex("80").value(), offset).error() == errc::varint_truncated);
    CHECK(decode_varint(from_hex("ffffffffffffffffff02").value(), offset).error() == errc::varint_overflow);
    CHECK(decode_varint(from_hex("ffffffffffffffffff8001").value(), offset).error() == errc::varint_overflow);
    CHECK(decode_varint(from_hex("8000").value(), offset).error() == errc::varint_noncanonical);
    CHECK(offset == 0);  // unchanged on error
  }

  TEST_CASE("varints round trip random values of every width, back to back") {
    bytes stream;
    std::vector<std::uint64_t> values;
    for (int i = 0; i < 5000; ++i) {
      const auto bits = test::uniform<unsigned>(0, 64);
      const std::uint64_t value =
          bits == 0 ? 0 : test::uniform<std::uint64_t>(0, ~std::uint64_t{0}) >> (64 - bits);
      values.push_back(value);
      append_varint(stream, value);
    }
    std::size_t offset = 0;
    for (const auto value : values) REQUIRE(decode_varint(stream, offset).value() == value);
    CHECK(offset == stream.size());
  }

  TEST_CASE("zigzag maps small magnitudes to small codes and round trips") {
    CHECK(zigzag_encode(0) == 0);
    CHECK(zigzag_encode(-1) == 1);
    CHECK(zigzag_encode(1) == 2);
    CHECK(zigzag_encode(-2) == 3);
    CHECK(zigzag_encode(std::numeric_limits<std::int64_t>::max()) == ~std::uint64_t{0} - 1);
    CHECK(zigzag_encode(std::numeric_limits<std::int64_t>::min()) == ~std::uint64_t{0});
    for (int i = 0; i < 10000; ++i) {
      const auto v = test::uniform<std::int64_t>(std::numeric_limits<std::int64_t>::min(),
                                                 std::numeric_limits<std::int64_t>::max());
      REQUIRE(zigzag_decode(zigzag_encode(v)) == v);
    }
    static_assert(zigzag_decode(zigzag_encode(-12345)) == -12345);
  }
}
