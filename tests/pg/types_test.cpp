// Codec tests that need no server, plus round trips of every mapped type through a real one.
#include <keel/pg/connection.hpp>

#include <doctest/doctest.h>

#include <limits>

#include <support/pg.hpp>
#include <support/random.hpp>

using namespace keel;
using namespace std::chrono_literals;

TEST_SUITE("unit") {
  TEST_CASE("uuid parses and prints the canonical form") {
    const auto u = pg::uuid::parse("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11").value();
    CHECK(u.to_string() == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    CHECK(pg::uuid::parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1").error() == pg::errc::bad_value);
    CHECK(pg::uuid::parse("a0eebc99x9c0b-4ef8-bb6d-6bb9bd380a11").error() == pg::errc::bad_value);
    CHECK(pg::uuid::parse("g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").error() == pg::errc::bad_value);
  }

  TEST_CASE("numeric binary decodes to exact text") {
    auto numeric_bytes = [](std::initializer_list<int> header, std::initializer_list<int> digits) {
      bytes raw;
      byte_writer w(raw);
      for (int h : header) w.be(static_cast<std::uint16_t>(h));
      for (int d : digits) w.be(static_cast<std::uint16_t>(d));
      return raw;
    };
    auto numeric = [&](std::initializer_list<int> header, std::initializer_list<int> digits) {
      return pg::detail::numeric_to_text(numeric_bytes(header, digits));
    };
    // ndigits, weight, sign, dscale
    CHECK(numeric({2, 0, 0, 2}, {12, 5000}).value() == "12.50");
    CHECK(numeric({1, -1, 0x4000, 3}, {10}).value() == "-0.001");
    CHECK(numeric({2, 1, 0, 0}, {1, 0}).value() == "10000");
    CHECK(numeric({0, 0, 0, 0}, {}).value() == "0");
    CHECK(numeric({0, 0, 0xC000, 0}, {}).value() == "NaN");
    CHECK(numeric({1, 0, 0, 0}, {10000}).error() == pg::errc::bad_value);
    CHECK(numeric({3, 0, 0, 0}, {1}).error() == pg::errc::bad_value);     // truncated
    CHECK(numeric({1, 0, 0, 0}, {1, 2}).error() == pg::errc::bad_value);  // trailing bytes
    // Every cut of a valid value inside its header or digits is an error, never a read past it.
    const auto whole = numeric_bytes({3, 1, 0, 4}, {12, 3456, 7800});
    REQUIRE(pg::detail::numeric_to_text(whole).value() == "123456.7800");
    for (std::size_t cut = 0; cut < whole.size(); ++cut)
      CHECK(pg::detail::numeric_to_text(bytes_view(whole).first(cut)).error() == pg::errc::bad_value);
  }

  TEST_CASE("fixed-width binary values of the wrong length are bad_value, not read past") {
    bytes raw;
    byte_writer w(raw);
    w.be(std::int64_t{-2});
    CHECK(pg::codec<std::int64_t>::decode(pg::oids::int8, raw).value() == -2);
    CHECK(pg::codec<std::int64_t>::decode(pg::oids::int2, bytes_view(raw).last(2)).value() == -2);  // widened
    for (std::size_t cut = 0; cut < raw.size(); ++cut) {
      const auto part = bytes_view(raw).first(cut);
      CHECK(pg::codec<std::int64_t>::decode(pg::oids::int8, part).error() == pg::errc::bad_value);
      CHECK(pg::codec<double>::decode(pg::oids::float8, part).error() == pg::errc::bad_value);
      CHECK(pg::codec<timestamp>::decode(pg::oids::timestamptz, part).error() == pg::errc::bad_value);
      if (cut != 4)
        CHECK(pg::codec<std::int32_t>::decode(pg::oids::int4, part).error() == pg::errc::bad_value);
      if (cut != 4) CHECK(pg::codec<float>::decode(pg::oids::float4, part).error() == pg::errc::bad_value);
    }
    CHECK(pg::codec<std::int16_t>::decode(pg::oids::int2, bytes_view(raw).first(3)).error() ==
          pg::errc::bad_value);
  }

  TEST_CASE("array decoding rejects malformed input instead of reading past it") {
    bytes raw;
    pg::detail::encode_array_header(raw, pg::oids::int8, 2);
    byte_writer w(raw);
    w.be(std::int32_t{8});
    w.be(std::int64_t{7});
    CHECK(pg::detail::parse_array(raw, pg::oids::int8).error() == pg::errc::bad_value);  // 1 of 2
    w.be(std::int32_t{8});
    w.be(std::int64_t{9});
    CHECK(pg::detail::parse_array(raw, pg::oids::int8).value().size() == 2);
    CHECK(pg::detail::parse_array(raw, pg::oids::int4).error() == pg::errc::bad_value);
    for (std::size_t cut = 0; cut < raw.size(); ++cut) {
      CHECK_FALSE(pg::detail::parse_array(bytes_view(raw).first(cut), pg::oids::int8).has_value());
    }
  }

  TEST_CASE("params refuse text with NUL bytes rather than truncating it") {
    pg::params p(std::string_view("ab\0c", 4));
    CHECK_FALSE(p.valid());
    pg::params ok(std::string("abc"), std::int64_t{5}, std::optional<int>{});
    CHECK(ok.valid());
    CHECK(ok.size() == 3);
    CHECK(ok.values()[2] == nullptr);
  }
}

TEST_SUITE("pg") {
  TEST_CASE("row::text renders every common type as Postgres's own text form does") {
    test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute("SET TIME ZONE 'UTC'"));
    const char* expressions[] = {
        "true",
        "false",
        "(-32768)::int2",
        "2147483647::int4",
        "(-9223372036854775808)::int8",
        "1.5::float4",
        "0.1::float8",
        "(-1e300)::float8",
        "'NaN'::float8",
        "'Infinity'::float8",
        "123.4500::numeric",
        "(-0.000001)::numeric",
        "'héllo'::text",
        "'x'::varchar(3)",
        "DATE '2026-12-06'",
        "DATE '1999-12-31'",
        "DATE '0044-03-15 BC'",
        "DATE 'infinity'",
        "TIME '23:59:59.999999'",
        "TIME '00:00:00'",
        "TIME '10:30:00.5'",
        "TIMESTAMP '2026-12-06 10:30:00'",
        "TIMESTAMP '1969-07-20 20:17:40.123'",
        "TIMESTAMP '0044-03-15 12:00:00 BC'",
        "TIMESTAMPTZ '2026-12-06 10:30:00.25+00'",
        "'6ba7b810-9dad-11d1-80b4-00c04fd430c8'::uuid",
        "'{\"a\": [1, 2]}'::jsonb",
        "'{\"a\":1}'::json",
        "'\\x00ff10'::bytea",
    };
    for (const std::string e : expressions) {
      CAPTURE(e);
      auto rows = c.query("SELECT " + e + ", (" + e + ")::text, NULL::int4");
      REQUIRE_MESSAGE(rows, c.last_error().message);
      const auto row = (*rows)[0];
      const auto ours = row.text(0).value();
      REQUIRE(ours.has_value());
      CHECK(*ours == row.get<std::string>(1).value());
      CHECK_FALSE(row.text(2).value().has_value());  // NULL
    }
    // char(n) keeps its padding, as its output does (a cast to text would strip it).
    CHECK(c.query("SELECT 'ab'::char(4)").value()[0].text(0).value() == "ab  ");
    // A type it does not render: a clear error, not bytes.
    auto point = c.query("SELECT point(1, 2)").value();
    CHECK(point[0].text(0).error() == pg::errc::type_mismatch);
    CHECK(point[0].text(5).error() == pg::errc::out_of_range);
  }

  TEST_CASE("every mapped type round trips through the server") {
    test::scratch_schema schema;
    auto c = schema.connect();

    CHECK(c.query("SELECT $1::bool", true).value().value<bool>().value() == true);
    CHECK(c.query("SELECT $1", std::int16_t{-12}).value().value<std::int16_t>().value() == -12);
    CHECK(c.query("SELECT $1", std::int32_t{-70000}).value().value<std::int32_t>().value() == -70000);
    const auto big = std::numeric_limits<std::int64_t>::min();
    CHECK(c.query("SELECT $1", big).value().value<std::int64_t>().value() == big);
    CHECK(c.query("SELECT $1::int2", std::int16_t{7}).value().value<std::int64_t>().value() ==
          7);  // widening
    CHECK(c.query("SELECT $1", 0.1).value().value<double>().value() == 0.1);
    CHECK(c.query("SELECT $1", 1.5f).value().value<float>().value() == 1.5f);
    CHECK(c.query("SELECT $1::text", "héllo").value().value<std::string>().value() == "héllo");
    CHECK(c.query("SELECT $1::text", std::string()).value().value<std::string>().value().empty());

    const bytes blob{0, 1, 2, 255, 0};
    CHECK(c.query("SELECT $1", blob).value().value<bytes>().value() == blob);
    CHECK(c.query("SELECT $1", bytes{}).value().value<bytes>().value().empty());

    const auto id = pg::uuid::parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").value();
    CHECK(c.query("SELECT $1", id).value().value<pg::uuid>().value() == id);
    CHECK(c.query("SELECT $1", id).value().value<std::string>().value() == id.to_string());

    const auto doc =
        c.query("SELECT $1", pg::jsonb{R"({"b": [1, 2], "a": "x"})"}).value().value<pg::jsonb>().value();
    CHECK(doc.text == R"({"a": "x", "b": [1, 2]})");  // jsonb normalizes key order
    CHECK(c.query("SELECT ($1::jsonb)->>'a'", pg::jsonb{R"({"a": "x"})"})
              .value()
              .value<std::string>()
              .value() == "x");

    for (const char* n : {"12.50", "-0.001", "123456789012345678901234567890.000000001", "0", "NaN"}) {
      CAPTURE(n);
      CHECK(c.query("SELECT $1", pg::numeric{n}).value().value<pg::numeric>().value().text == n);
    }

    const timestamp t{1'700'000'000'123'456'000ns};
    CHECK(c.query("SELECT $1", t).value().value<timestamp>().value() == t);
    const timestamp before_1970{-86'400'000'000'000ns - 1000ns};
    CHECK(c.query("SELECT $1", before_1970).value().value<timestamp>().value() == before_1970);
    CHECK(c.query("SELECT $1", timestamp{1500ns}).value().value<timestamp>().value() ==
          timestamp{1000ns});  // truncated
    CHECK(c.query("SELECT 'infinity'::timestamptz").value().value<timestamp>().error() ==
          pg::errc::out_of_range);

    const std::vector<std::int64_t> numbers{1, -2, std::numeric_limits<std::int64_t>::max()};
    CHECK(c.query("SELECT $1", numbers).value().value<std::vector<std::int64_t>>().value() == numbers);
    CHECK(c.query("SELECT $1", std::vector<std::int64_t>{})
              ->value<std::vector<std::int64_t>>()
              .value()
              .empty());
    CHECK(c.query("SELECT ARRAY[1,2]::int4[]").value().value<std::vector<std::int64_t>>().value() ==
          std::vector<std::int64_t>{1, 2});
    const std::vector<std::string> words{"a", "", "ünï", "with \"quotes\""};
    CHECK(c.query("SELECT $1", words).value().value<std::vector<std::string>>().value() == words);
    CHECK(c.query("SELECT ARRAY[1, NULL]::int8[]").value().value<std::vector<std::int64_t>>().error() ==
          pg::errc::unexpected_null);
  }

  TEST_CASE("NULLs, type mismatches and bad indexes are errors, optionals read NULL") {
    test::scratch_schema schema;
    auto c = schema.connect();
    auto r = c.query("SELECT NULL::int8 AS n, 5::int8 AS five, 'x'::text AS s").value();
    CHECK(r[0].get<std::int64_t>("n").error() == pg::errc::unexpected_null);
    CHECK(r[0].get<std::optional<std::int64_t>>("n").value() == std::nullopt);
    CHECK(r[0].get<std::optional<std::int64_t>>("five").value() == 5);
    CHECK(r[0].get<std::int32_t>("five").error() == pg::errc::type_mismatch);  // would narrow
    CHECK(r[0].get<std::int64_t>("s").error() == pg::errc::type_mismatch);
    CHECK(r[0].get<std::int64_t>("missing").error() == pg::errc::out_of_range);
    CHECK(r[0].get<std::int64_t>(9).error() == pg::errc::out_of_range);
    CHECK(r[0].is_null(0));
    CHECK(c.query("SELECT $1::int8", std::optional<std::int64_t>{})
              ->value<std::optional<std::int64_t>>()
              .value() == std::nullopt);
  }

  TEST_CASE("random values survive a table round trip") {
    test::scratch_schema schema;
    auto c = schema.connect();
    // `k` orders the rows: a heap's scan order is not insertion order (the free space map may
    // place a later row in an earlier page).
    REQUIRE(c.execute("CREATE TABLE t (k int4, i int8, d float8, s text, b bytea)"));
    std::vector<std::tuple<std::int64_t, double, std::string, bytes>> expected;
    for (int i = 0; i < 200; ++i) {
      std::string s(test::uniform<std::size_t>(0, 40), 'x');
      for (auto& ch : s) ch = static_cast<char>(test::uniform<int>(1, 127));
      bytes b(test::uniform<std::size_t>(0, 40));
      for (auto& byte : b) byte = test::uniform<std::uint8_t>(0, 255);
      const auto n = test::uniform<std::int64_t>(std::numeric_limits<std::int64_t>::min(),
                                                 std::numeric_limits<std::int64_t>::max());
      const double d = std::bit_cast<double>(test::uniform<std::uint64_t>(0, 0x7FEFFFFFFFFFFFFFULL));
      REQUIRE(c.query("INSERT INTO t VALUES ($1, $2, $3, $4, $5)", std::int32_t{i}, n, d, s, b));
      expected.emplace_back(n, d, s, b);
    }
    const auto rows = c.query("SELECT i, d, s, b FROM t ORDER BY k").value();
    REQUIRE(rows.size() == expected.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      CHECK(rows[i].get<std::int64_t>(0).value() == std::get<0>(expected[i]));
      CHECK(rows[i].get<double>(1).value() == std::get<1>(expected[i]));
      CHECK(rows[i].get<std::string>(2).value() == std::get<2>(expected[i]));
      CHECK(rows[i].get<bytes>(3).value() == std::get<3>(expected[i]));
    }
  }
}
