// Codec round trips on random and adversarial series, and decoders fed damaged blocks.
#include <keel/core/xxhash.hpp>
#include <keel/tsdb/codec.hpp>

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include <support/random.hpp>
#include <support/result.hpp>

namespace tsdb = keel::tsdb;
using keel::test::rng;
using keel::test::uniform;

namespace {

struct series {
  std::vector<std::int64_t> times;
  std::vector<double> values;
};

double random_bits_double() {
  return std::bit_cast<double>(uniform<std::uint64_t>(0, ~std::uint64_t{0}));
}

double adversarial_value() {
  switch (uniform(0, 9)) {
    case 0:
      return std::bit_cast<double>(std::uint64_t{0x7FF8000000000000} | uniform<std::uint64_t>(1, 0xFFFFF));
    case 1:
      return std::bit_cast<double>(std::uint64_t{0xFFF0000000000001});  // signalling NaN, sign set
    case 2:
      return std::numeric_limits<double>::infinity();
    case 3:
      return -std::numeric_limits<double>::infinity();
    case 4:
      return -0.0;
    case 5:
      return std::numeric_limits<double>::denorm_min() * uniform(1, 1000);
    case 6:
      return std::numeric_limits<double>::max();
    case 7:
      return std::numeric_limits<double>::lowest();
    case 8:
      return random_bits_double();
    default:
      return 0.0;
  }
}

/// One random series of a random kind: gauges with few decimals, counters, noise, constants,
/// adversarial doubles; timestamps on a grid, jittered, in nanoseconds, or arbitrary.
series random_series() {
  series s;
  const auto n = static_cast<std::size_t>(uniform(0, 1) == 0 ? uniform(0, 40) : uniform(0, 5000));
  const int time_kind = uniform(0, 4);
  const int value_kind = uniform(0, 6);
  std::int64_t t = uniform<std::int64_t>(-1'000'000'000, 1'700'000'000'000);
  const std::int64_t step = uniform<std::int64_t>(1, 120'000);
  double level = static_cast<double>(uniform(-100000, 100000)) / 100.0;
  const int decimals = uniform(0, 4);
  const double scale = std::pow(10.0, decimals);
  std::uint64_t counter = uniform<std::uint64_t>(0, 1'000'000);
  for (std::size_t i = 0; i < n; ++i) {
    switch (time_kind) {
      case 0:
        t += step;
        break;
      case 1:
        t += step + uniform<std::int64_t>(-step / 10, step / 10);
        break;
      case 2:
        t += 10'000'000'000LL + uniform<std::int64_t>(-5'000'000, 5'000'000);
        break;  // ns
      case 3:
        t = uniform<std::int64_t>(std::numeric_limits<std::int64_t>::min(),
                                  std::numeric_limits<std::int64_t>::max());
        break;
      default:
        t += uniform<std::int64_t>(0, 3) == 0 ? 0 : step;
        break;  // duplicates kept
    }
    s.times.push_back(t);
    double v = 0;
    switch (value_kind) {
      case 0:
        level += static_cast<double>(uniform(-50, 50));
        v = std::round(level * scale) / scale;
        break;
      case 1:
        counter += uniform<std::uint64_t>(0, 100);
        v = static_cast<double>(counter);
        break;
      case 2:
        v = std::uniform_real_distribution<double>(-1e6, 1e6)(rng());
        break;
      case 3:
        v = 42.5;
        break;
      case 4:
        v = adversarial_value();
        break;
      case 5:
        v = uniform(0, 20) == 0 ? adversarial_value() : static_cast<double>(uniform(0, 99999)) / 100.0;
        break;
      default:
        v = random_bits_double();
        break;
    }
    s.values.push_back(v);
  }
  return s;
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  return a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

void check_round_trip(const series& s, const tsdb::encode_options& options) {
  auto block = tsdb::encode_block(s.times, s.values, options);
  REQUIRE(block);
  std::vector<std::int64_t> times;
  std::vector<double> values;
  const auto decoded = tsdb::decode_block(*block, times, values);
  REQUIRE(decoded);
  CHECK(times == s.times);
  CHECK(same_bits(values, s.values));
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("every codec round-trips random and adversarial series bit for bit") {
    for (int round = 0; round < 300; ++round) {
      const series s = random_series();
      CAPTURE(s.times.size());
      for (const auto choice : {tsdb::codec_choice::automatic, tsdb::codec_choice::gorilla,
                                tsdb::codec_choice::decimal, tsdb::codec_choice::chimp}) {
        for (const bool zstd : {false, true}) {
          CAPTURE(static_cast<int>(choice));
          CAPTURE(zstd);
          check_round_trip(s, {.codec = choice, .zstd = zstd});
        }
      }
    }
  }

  TEST_CASE("Gorilla timestamps use the paper's buckets") {
    // 60 s cadence in seconds: after the first point, every regular delta costs one bit.
    std::vector<std::int64_t> times;
    for (int i = 0; i < 1001; ++i) times.push_back(1'700'000'000 + 60 * i);
    keel::bytes out;
    tsdb::codecs::gorilla_encode_times(times, out);
    // 1 flag bit + 64 bits first + one 9-bit code for the first delta (60 - 0 in [-63, 64]) + 999 zero bits.
    CHECK(out.size() == (1 + 64 + 9 + 999 + 7) / 8);
    std::vector<std::int64_t> back(times.size());
    REQUIRE(tsdb::codecs::gorilla_decode_times(out, times.size(), back.data()));
    CHECK(back == times);
  }

  TEST_CASE("Gorilla values: a repeated value costs one bit") {
    std::vector<double> values(1000, 12.5);
    keel::bytes out;
    tsdb::codecs::gorilla_encode_values(values, out);
    CHECK(out.size() == (64 + 999 + 7) / 8);
  }

  TEST_CASE("the automatic choice picks the decimal codec for decimals and an XOR codec for noise") {
    std::vector<std::int64_t> times;
    std::vector<double> decimals;
    std::vector<double> noise;
    for (int i = 0; i < 4096; ++i) {
      times.push_back(60'000LL * i);
      decimals.push_back(static_cast<double>(uniform(0, 5000)) / 100.0);
      noise.push_back(random_bits_double());
    }
    auto a = tsdb::encode_block(times, decimals);
    REQUIRE(a);
    CHECK(tsdb::read_block_info(*a)->values == tsdb::value_codec::decimal_runs);
    CHECK(tsdb::read_block_info(*a)->times == tsdb::time_codec::packed);
    auto g = tsdb::encode_block(times, decimals, {.codec = tsdb::codec_choice::gorilla});
    REQUIRE(g);
    CHECK(a->size() * 2 < g->size());  // 2 decimals in [0, 50]: ~13 bits against Gorilla's ~50
    auto b = tsdb::encode_block(times, noise);
    REQUIRE(b);
    // Noise: one of the XOR codecs, the one smaller on the first frame (Chimp128, narrowly, here).
    const auto chosen = tsdb::read_block_info(*b)->values;
    CHECK((chosen == tsdb::value_codec::gorilla || chosen == tsdb::value_codec::chimp128));
    CHECK(b->size() <= tsdb::encode_block(times, noise, {.codec = tsdb::codec_choice::gorilla})->size() + 64);
  }

  TEST_CASE("a truncated block is an error, at every length") {
    const series s = [] {
      series r;
      for (int i = 0; i < 300; ++i) {
        r.times.push_back(1000 * i);
        r.values.push_back(i % 7 == 0 ? std::nan("") : i * 0.25);
      }
      return r;
    }();
    for (const auto choice :
         {tsdb::codec_choice::gorilla, tsdb::codec_choice::decimal, tsdb::codec_choice::chimp}) {
      for (const bool zstd : {false, true}) {
        auto block = tsdb::encode_block(s.times, s.values, {.codec = choice, .zstd = zstd}).value();
        std::vector<std::int64_t> times;
        std::vector<double> values;
        for (std::size_t length = 0; length < block.size(); ++length) {
          const auto r = tsdb::decode_block(keel::bytes_view(block.data(), length), times, values);
          REQUIRE_FALSE(r);
          CHECK((r.error() == tsdb::errc::block_truncated || r.error() == tsdb::errc::block_corrupt));
        }
      }
    }
  }

  TEST_CASE("a flipped bit anywhere is caught") {
    const series s = random_series();
    auto block = tsdb::encode_block(s.times, s.values).value();
    std::vector<std::int64_t> times;
    std::vector<double> values;
    for (int round = 0; round < 2000; ++round) {
      auto damaged = block;
      const auto at = static_cast<std::size_t>(uniform<std::size_t>(0, damaged.size() - 1));
      damaged[at] ^= static_cast<std::uint8_t>(1U << uniform(0, 7));
      CHECK_FALSE(tsdb::decode_block(damaged, times, values));
    }
  }

  TEST_CASE("each codec decoder reports a section cut short at any length as truncated") {
    // 2,500 points: three integer frames, a spike that needs a patch, runs of repeats, raw
    // exceptions (NaN, a non-decimal), jittered times; each section cut at every length.
    series s;
    std::int64_t t = 1'700'000'000'000;
    for (int i = 0; i < 2500; ++i) {
      t += i == 1200 ? 9'000'000'000 : 1000 + (i % 3);
      s.times.push_back(t);
      double v = (i / 4) * 0.25;
      if (i % 97 == 0) v = std::nan("");
      if (i % 331 == 0) v = 1.0 / 3.0;
      if (i == 2000) v = 1e12;
      s.values.push_back(v);
    }
    const auto count = s.times.size();
    std::vector<std::int64_t> times(count);
    std::vector<double> values(count);
    keel::bytes gorilla_times;
    tsdb::codecs::gorilla_encode_times(s.times, gorilla_times);
    keel::bytes packed_times;
    tsdb::codecs::packed_encode_times(s.times, packed_times);
    keel::bytes gorilla_values;
    tsdb::codecs::gorilla_encode_values(s.values, gorilla_values);
    keel::bytes chimp_values;
    tsdb::codecs::chimp_encode_values(s.values, chimp_values);
    keel::bytes decimal_values;
    std::size_t exceptions = 0;
    REQUIRE(tsdb::codecs::decimal_encode_values(s.values, decimal_values,
                                                {.force = true, .exception_count = &exceptions}));
    CHECK(exceptions >= 30);
    using decoder = std::function<keel::result<void>(keel::bytes_view)>;
    const std::vector<std::pair<keel::bytes*, decoder>> sections = {
        {&gorilla_times,
         [&](keel::bytes_view in) { return tsdb::codecs::gorilla_decode_times(in, count, times.data()); }},
        {&packed_times,
         [&](keel::bytes_view in) { return tsdb::codecs::packed_decode_times(in, count, times.data()); }},
        {&gorilla_values,
         [&](keel::bytes_view in) { return tsdb::codecs::gorilla_decode_values(in, count, values.data()); }},
        {&chimp_values,
         [&](keel::bytes_view in) { return tsdb::codecs::chimp_decode_values(in, count, values.data()); }},
        {&decimal_values,
         [&](keel::bytes_view in) { return tsdb::codecs::decimal_decode_values(in, count, values.data()); }},
    };
    for (std::size_t k = 0; k < sections.size(); ++k) {
      CAPTURE(k);
      const keel::bytes& section = *sections[k].first;
      const auto& decode = sections[k].second;
      REQUIRE(decode(section));
      for (std::size_t length = 0; length < section.size(); ++length) {
        CAPTURE(length);
        const auto r = decode(keel::bytes_view(section.data(), length));
        REQUIRE_FALSE(r);
        CHECK(r.error() == tsdb::errc::block_truncated);
      }
      // Bytes after the last point are garbage, not padding.
      keel::bytes longer = section;
      longer.resize(section.size() + 8, 0xA5);
      const auto r = decode(longer);
      REQUIRE_FALSE(r);
      CHECK(r.error() == tsdb::errc::block_corrupt);
    }
  }

  TEST_CASE("codec decoders reject malformed sections without reading past them") {
    // The sections below the checksum, fed random bytes: any outcome but a crash is fine, and a
    // success must produce exactly `count` items (checked by ASan and the sizes).
    std::vector<std::int64_t> times(3000);
    std::vector<double> values(3000);
    for (int round = 0; round < 3000; ++round) {
      keel::bytes junk(static_cast<std::size_t>(uniform(0, 200)));
      for (auto& b : junk) b = static_cast<std::uint8_t>(uniform(0, 255));
      const auto count = static_cast<std::size_t>(uniform(0, 3000));
      (void)tsdb::codecs::gorilla_decode_times(junk, count, times.data());
      (void)tsdb::codecs::gorilla_decode_values(junk, count, values.data());
      (void)tsdb::codecs::packed_decode_times(junk, count, times.data());
      (void)tsdb::codecs::decimal_decode_values(junk, count, values.data());
      (void)tsdb::codecs::decimal_decode_values(junk, count, values.data(), false);
      (void)tsdb::codecs::chimp_decode_values(junk, count, values.data());
    }
  }

  TEST_CASE("decimals with many repeats use run frames, and codec 2 blocks stay readable") {
    // Like nyc29: 13-decimal coordinates, a third of them repeating the previous value.
    std::vector<std::int64_t> times;
    std::vector<double> values;
    for (int i = 0; i < 8192; ++i) {
      times.push_back(60'000LL * i);
      values.push_back(
          i > 0 && uniform(0, 2) == 0
              ? values.back()
              : -static_cast<double>(739'000'000'000'000 + uniform<std::int64_t>(0, 999'999'999'999)) / 1e13);
    }
    auto block = tsdb::encode_block(times, values).value();
    CHECK(tsdb::read_block_info(block)->values == tsdb::value_codec::decimal_runs);
    const auto gorilla = tsdb::encode_block(times, values, {.codec = tsdb::codec_choice::gorilla}).value();
    CAPTURE(block.size());
    CAPTURE(gorilla.size());
    CHECK(block.size() < gorilla.size());
    std::vector<std::int64_t> back_times;
    std::vector<double> back_values;
    REQUIRE(tsdb::decode_block(block, back_times, back_values));
    CHECK(back_times == times);
    CHECK(same_bits(back_values, values));

    // The same bytes labelled value codec 2 (written before run frames existed): a codec 2
    // reader refuses the run frames as corrupt...
    auto relabel = [](keel::bytes b, std::uint8_t codec) {
      b[4] = codec;
      const std::uint64_t seed = keel::xxh3_64(keel::bytes_view(b.data(), 20));
      const auto sum = static_cast<std::uint32_t>(keel::xxh3_64(keel::bytes_view(b).subspan(24), seed));
      for (int i = 0; i < 4; ++i)
        b[20 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(sum >> (8 * i));
      return b;
    };
    CHECK(tsdb::decode_block(relabel(block, 2), back_times, back_values).error() ==
          tsdb::errc::block_corrupt);
    // ... and a block without repeats reads the same under either number, as old blocks do.
    std::vector<double> distinct;
    for (int i = 0; i < 8192; ++i) distinct.push_back(static_cast<double>(i * 7 % 1000) / 100.0);
    const auto plain = tsdb::encode_block(times, distinct).value();
    REQUIRE(tsdb::decode_block(relabel(plain, 2), back_times, back_values));
    CHECK(same_bits(back_values, distinct));
    CHECK(tsdb::read_block_info(relabel(plain, 5)).error() == tsdb::errc::unsupported_block);
  }

  TEST_CASE("Chimp128 finds a value among the previous 128, and wins over Gorilla where that helps") {
    // Noise drawn from a small pool of arbitrary doubles: neighbours unrelated, but each value
    // seen again within the last 128 (what Chimp128's table finds).
    std::vector<double> pool;
    for (int i = 0; i < 20; ++i) pool.push_back(random_bits_double());
    std::vector<std::int64_t> times;
    std::vector<double> values;
    for (int i = 0; i < 8192; ++i) {
      times.push_back(60'000LL * i);
      double v = pool[static_cast<std::size_t>(uniform(0, 19))];
      if (std::isnan(v)) v = 1.0;
      values.push_back(v);
    }
    keel::bytes chimp;
    tsdb::codecs::chimp_encode_values(values, chimp);
    // After the pool is seen, each value costs the 9-bit `00` code: about 1.1 bytes a value.
    CHECK(chimp.size() < values.size() * 2);
    keel::bytes gorilla;
    tsdb::codecs::gorilla_encode_values(values, gorilla);
    CHECK(chimp.size() * 4 < gorilla.size());
    std::vector<double> back(values.size());
    REQUIRE(tsdb::codecs::chimp_decode_values(chimp, values.size(), back.data()));
    CHECK(same_bits(back, values));
    const auto block = tsdb::encode_block(times, values).value();
    CHECK(tsdb::read_block_info(block)->values == tsdb::value_codec::chimp128);
    std::vector<std::int64_t> block_times;
    REQUIRE(tsdb::decode_block(block, block_times, back));
    CHECK(same_bits(back, values));
  }

  TEST_CASE("a block from a newer format version is reported as such") {
    std::vector<std::int64_t> times{1, 2, 3};
    std::vector<double> values{1, 2, 3};
    auto block = tsdb::encode_block(times, values).value();
    block[2] = 2;
    CHECK(tsdb::read_block_info(block).error() == tsdb::errc::unsupported_block);
    CHECK(tsdb::encode_block(times, std::vector<double>{1.0}).error() == tsdb::errc::invalid_argument);
  }

  TEST_CASE("the ALP sample data round-trips, and the decimal codec beats Gorilla on it") {
    std::size_t all_gorilla = 0;
    std::size_t all_automatic = 0;
    for (const char* name : {"city_temperature_f_tw.bin", "food_prices_tw.bin", "gov26_tw.bin",
                             "nyc29_tw.bin", "bitcoin_transactions_f_tw.bin"}) {
      std::ifstream file(std::string(KEEL_TEST_DATA_DIR) + "/alp/" + name, std::ios::binary);
      REQUIRE(file);
      std::vector<double> all(131072);
      file.read(reinterpret_cast<char*>(all.data()),
                static_cast<std::streamsize>(all.size() * sizeof(double)));
      REQUIRE(file.gcount() == static_cast<std::streamsize>(all.size() * sizeof(double)));
      std::size_t gorilla = 0;
      std::size_t automatic = 0;
      for (std::size_t at = 0; at < all.size(); at += 8192) {
        series s;
        s.values.assign(all.begin() + static_cast<std::ptrdiff_t>(at),
                        all.begin() + static_cast<std::ptrdiff_t>(at + 8192));
        for (std::size_t i = 0; i < s.values.size(); ++i)
          s.times.push_back(static_cast<std::int64_t>((at + i) * 60'000));
        check_round_trip(s, {});
        gorilla +=
            tsdb::encode_block(s.times, s.values, {.codec = tsdb::codec_choice::gorilla}).value().size();
        automatic += tsdb::encode_block(s.times, s.values).value().size();
      }
      CAPTURE(name);
      CAPTURE(gorilla);
      CAPTURE(automatic);
      CHECK(automatic <= gorilla);
      all_gorilla += gorilla;
      all_automatic += automatic;
    }
    // The target: at least 25% smaller than Gorilla over the whole sample.
    CAPTURE(all_gorilla);
    CAPTURE(all_automatic);
    CHECK(all_automatic * 4 <= all_gorilla * 3);
  }
}
