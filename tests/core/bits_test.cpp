#include <keel/core/bits.hpp>

#include <doctest/doctest.h>

#include <support/random.hpp>

using namespace keel;

namespace {
struct bit_field {
  std::uint64_t value;
  unsigned width;
};

std::vector<bit_field> random_fields(std::size_t count) {
  std::vector<bit_field> fields;
  for (std::size_t i = 0; i < count; ++i) {
    // Mostly short fields, as in codecs, with full-width ones mixed in.
    const unsigned width = test::uniform<int>(0, 9) == 0 ? 64 : test::uniform<unsigned>(0, 64);
    const std::uint64_t value =
        width == 0 ? 0 : test::uniform<std::uint64_t>(0, ~std::uint64_t{0}) >> (64 - width);
    fields.push_back({value, width});
  }
  return fields;
}
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("bits are packed most significant first") {
    bit_writer writer;
    writer.write(0b1, 1);
    writer.write(0b01, 2);
    writer.write(0b11111, 5);
    writer.write(0xABC, 12);
    CHECK(writer.bit_count() == 20);
    const auto data = writer.finish();
    CHECK(to_hex(data) == "bfabc0");  // 1 01 11111 | 1010 1011 1100 | 0000 padding
  }

  TEST_CASE("write ignores bits above the width") {
    bit_writer writer;
    writer.write(~std::uint64_t{0}, 3);
    writer.write(0, 5);
    CHECK(to_hex(writer.finish()) == "e0");
  }

  TEST_CASE("random fields round trip through writer and reader") {
    for (int round = 0; round < 200; ++round) {
      const auto fields = random_fields(test::uniform<std::size_t>(0, 400));
      bit_writer writer;
      std::size_t total = 0;
      for (const auto& f : fields) {
        writer.write(f.value, f.width);
        total += f.width;
      }
      REQUIRE(writer.bit_count() == total);
      const auto data = writer.finish();
      REQUIRE(data.size() == (total + 7) / 8);

      bit_reader reader(data);
      for (const auto& f : fields) {
        REQUIRE(reader.read(f.width) == f.value);
      }
      CHECK(reader.position() == total);
      CHECK_FALSE(reader.overrun());
      CHECK(reader.remaining() == data.size() * 8 - total);
    }
  }

  TEST_CASE("peek does not consume and agrees with read") {
    bit_writer writer;
    writer.write(0b1110, 4);
    writer.write(0x123456789ULL, 40);
    const auto data = writer.finish();
    bit_reader reader(data);
    CHECK(reader.peek(4) == 0b1110);
    CHECK(reader.peek(3) == 0b111);
    reader.skip(4);
    CHECK(reader.peek(40) == 0x123456789ULL);
    CHECK(reader.read(40) == 0x123456789ULL);
  }

  TEST_CASE("reading past the end yields zeros and sets overrun") {
    const bytes data{0xff};
    bit_reader reader(data);
    CHECK(reader.read(4) == 0xf);
    CHECK_FALSE(reader.overrun());
    CHECK(reader.read(4) == 0xf);
    CHECK_FALSE(reader.overrun());
    CHECK(reader.remaining() == 0);
    CHECK(reader.read(8) == 0);
    CHECK(reader.overrun());

    bit_reader partial(data);
    CHECK(partial.read(12) == 0xff0);
    CHECK(partial.overrun());

    bit_reader empty{bytes_view{}};
    CHECK(empty.read(64) == 0);
    CHECK(empty.overrun());
  }

  TEST_CASE("a reader on a truncated stream reports the overrun") {
    const auto fields = random_fields(200);
    bit_writer writer;
    for (const auto& f : fields) writer.write(f.value, f.width);
    auto data = writer.finish();
    REQUIRE(data.size() > 1);
    data.resize(data.size() / 2);
    bit_reader reader(data);
    for (const auto& f : fields) (void)reader.read(f.width);
    CHECK(reader.overrun());
  }

  TEST_CASE("the writer is reusable after finish") {
    bit_writer writer(128);
    writer.write(0xAA, 8);
    CHECK(to_hex(writer.finish()) == "aa");
    CHECK(writer.bit_count() == 0);
    writer.write(0x55, 8);
    CHECK(to_hex(writer.finish()) == "55");
  }
}
