#include <keel/core/byte_io.hpp>
#include <keel/core/endian.hpp>

#include "support/random.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <variant>
#include <vector>

TEST_SUITE("unit") {
  TEST_CASE("endian loads and stores match the byte order by hand") {
    std::array<std::uint8_t, 8> buf{};
    keel::store_be<std::uint32_t>(buf.data(), 0x01020304U);
    CHECK(buf[0] == 1);
    CHECK(buf[3] == 4);
    CHECK(keel::load_be<std::uint32_t>(buf.data()) == 0x01020304U);
    CHECK(keel::load_le<std::uint32_t>(buf.data()) == 0x04030201U);
    keel::store_le<std::int16_t>(buf.data() + 1, -2);  // unaligned on purpose
    CHECK(buf[1] == 0xFE);
    CHECK(buf[2] == 0xFF);
    CHECK(keel::load_le<std::int16_t>(buf.data() + 1) == -2);
    keel::store_be<std::uint64_t>(buf.data(), 0x0102030405060708ULL);
    CHECK(keel::load_be<std::uint64_t>(buf.data()) == 0x0102030405060708ULL);
    CHECK(buf[7] == 8);
  }

  TEST_CASE("byte_reader reads what byte_writer wrote, in any mix (property)") {
    auto& rng = keel::test::rng();
    using field =
        std::variant<std::uint8_t, std::uint16_t, std::uint32_t, std::uint64_t, std::int64_t, keel::bytes>;
    for (int round = 0; round < 2000; ++round) {
      std::vector<field> fields;
      std::vector<bool> little;
      keel::bytes out;
      keel::byte_writer w(out);
      const int n = keel::test::uniform(0, 12);
      for (int i = 0; i < n; ++i) {
        const bool le = rng() % 2 == 0;
        little.push_back(le);
        switch (rng() % 7) {
          case 0:
            fields.emplace_back(static_cast<std::uint8_t>(rng()));
            w.u8(std::get<0>(fields.back()));
            break;
          case 1:
            fields.emplace_back(static_cast<std::uint16_t>(rng()));
            le ? w.le(std::get<1>(fields.back())) : w.be(std::get<1>(fields.back()));
            break;
          case 2:
            fields.emplace_back(static_cast<std::uint32_t>(rng()));
            le ? w.le(std::get<2>(fields.back())) : w.be(std::get<2>(fields.back()));
            break;
          case 3:
            fields.emplace_back(static_cast<std::uint64_t>(rng()));
            le ? w.le(std::get<3>(fields.back())) : w.be(std::get<3>(fields.back()));
            break;
          case 4:
            fields.emplace_back(static_cast<std::int64_t>(rng()));
            w.varint(keel::zigzag_encode(std::get<4>(fields.back())));
            break;
          default: {
            keel::bytes run(rng() % 40);
            for (auto& b : run) b = static_cast<std::uint8_t>(rng());
            w.append_varint_prefixed(run);
            fields.emplace_back(std::move(run));
          }
        }
      }
      REQUIRE(w.size() == out.size());
      keel::byte_reader r(out);
      for (std::size_t i = 0; i < fields.size(); ++i) {
        const bool le = little[i];
        std::visit(
            [&]<class T>(const T& expected) {
              if constexpr (std::is_same_v<T, keel::bytes>) {
                const auto got = r.take_varint_prefixed(1024);
                REQUIRE(got.has_value());
                CHECK(keel::bytes(got->begin(), got->end()) == expected);
              } else if constexpr (std::is_same_v<T, std::int64_t>) {
                const auto got = r.varint();
                REQUIRE(got.has_value());
                CHECK(keel::zigzag_decode(*got) == expected);
              } else if constexpr (std::is_same_v<T, std::uint8_t>) {
                CHECK(r.u8().value() == expected);
              } else {
                CHECK((le ? r.le<T>() : r.be<T>()).value() == expected);
              }
            },
            fields[i]);
      }
      CHECK(r.expect_end().has_value());
    }
  }

  TEST_CASE("byte_reader refuses to read past the end, and a failed read consumes nothing") {
    keel::bytes out;
    keel::byte_writer w(out);
    w.be<std::uint32_t>(7);
    w.append_varint_prefixed(keel::as_bytes("hello"));
    for (std::size_t cut = 0; cut < out.size(); ++cut) {
      INFO("cut at ", cut);
      keel::byte_reader r(keel::bytes_view(out).first(cut));
      const auto first = r.be<std::uint32_t>();
      if (cut < 4) {
        CHECK(first.error() == keel::errc::truncated);
        CHECK(r.position() == 0);
        continue;
      }
      CHECK(*first == 7);
      const auto run = r.take_varint_prefixed(16);
      CHECK_FALSE(run.has_value());
      CHECK(r.position() == 4);  // the length prefix is given back too
    }
    keel::byte_reader r(out);
    CHECK(r.skip(4).has_value());
    CHECK(r.take_varint_prefixed(4).error() == keel::errc::length_too_large);
    CHECK(r.position() == 4);
    CHECK(r.take_varint_prefixed(5).has_value());
    CHECK(r.u8().error() == keel::errc::truncated);
    keel::byte_reader extra(out);
    CHECK(extra.skip(1).has_value());
    CHECK(extra.expect_end().error() == keel::errc::trailing_bytes);
  }

  TEST_CASE("byte_reader over random bytes never reads out of bounds (fuzz-style)") {
    auto& rng = keel::test::rng();
    for (int round = 0; round < 5000; ++round) {
      // An exact-size heap buffer, so ASan sees any read past its end.
      std::vector<std::uint8_t> input(rng() % 32);
      for (auto& b : input) b = static_cast<std::uint8_t>(rng());
      keel::byte_reader r(input);
      for (int step = 0; step < 16 && !r.empty(); ++step) {
        const auto before = r.position();
        bool ok = true;
        switch (rng() % 6) {
          case 0:
            ok = r.u8().has_value();
            break;
          case 1:
            ok = r.be<std::uint32_t>().has_value();
            break;
          case 2:
            ok = r.le<std::uint64_t>().has_value();
            break;
          case 3:
            ok = r.varint().has_value();
            break;
          case 4:
            ok = r.take_varint_prefixed(64).has_value();
            break;
          default:
            ok = r.take(rng() % 8).has_value();
            break;
        }
        CHECK(r.position() <= input.size());
        if (!ok) CHECK(r.position() == before);
      }
    }
  }
}
