// keel::tsdb benchmarks.
//   ./keel bench tsdb
// Figures: bytes per point, encode and decode points/s per codec on the ALP sample data (real
// values on a 60 s grid) and on synthetic counters and gauges; ingest into Postgres points/s
// (a private cluster, or KEEL_DATABASE_URL); a bucketed query over one day at 10 s resolution.
#include <keel/tsdb/codec.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#ifndef KEEL_BENCH_DATA_DIR
#error "KEEL_BENCH_DATA_DIR must name tests/data"
#endif

namespace {

namespace tsdb = keel::tsdb;

constexpr std::size_t block_points = 8192;

struct dataset {
  std::string name;
  std::vector<std::int64_t> times;
  std::vector<double> values;
};

std::vector<dataset> load_datasets() {
  std::vector<dataset> sets;
  for (const char* name : {"city_temperature_f", "food_prices", "gov26", "nyc29", "bitcoin_transactions_f"}) {
    const std::string file = std::string(KEEL_BENCH_DATA_DIR) + "/alp/" + name + "_tw.bin";
    std::ifstream in(file, std::ios::binary);
    dataset d{name, {}, std::vector<double>(131072)};
    in.read(reinterpret_cast<char*>(d.values.data()),
            static_cast<std::streamsize>(d.values.size() * sizeof(double)));
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", file.c_str());
      std::exit(1);
    }
    sets.push_back(std::move(d));
  }
  std::mt19937_64 rng(42);
  dataset counter{"synthetic_counter", {}, {}};
  dataset gauge{"synthetic_gauge", {}, {}};
  double total = 0;
  double level = 50;
  for (std::size_t i = 0; i < 131072; ++i) {
    total += static_cast<double>(rng() % 200);
    if (rng() % 5000 == 0) total = 0;  // a restart
    counter.values.push_back(total);
    level += static_cast<double>(static_cast<int>(rng() % 21) - 10) / 10.0;
    gauge.values.push_back(std::round(level * 10) / 10);  // one decimal, like a temperature
  }
  sets.push_back(std::move(counter));
  sets.push_back(std::move(gauge));
  for (auto& d : sets) {
    for (std::size_t i = 0; i < d.values.size(); ++i)
      d.times.push_back(1'700'000'000'000 + static_cast<std::int64_t>(i) * 60'000);  // 60 s grid, ms
  }
  return sets;
}

const std::vector<dataset>& datasets() {
  static const std::vector<dataset> sets = load_datasets();
  return sets;
}

constexpr std::array<tsdb::codec_choice, 2> choices = {tsdb::codec_choice::automatic,
                                                       tsdb::codec_choice::gorilla};
constexpr std::array<const char*, 2> choice_names = {"automatic", "gorilla"};

std::vector<keel::bytes> encode_all(const dataset& d, tsdb::codec_choice choice) {
  std::vector<keel::bytes> blocks;
  for (std::size_t at = 0; at < d.values.size(); at += block_points) {
    const std::size_t n = std::min(block_points, d.values.size() - at);
    blocks.push_back(tsdb::encode_block(std::span(d.times).subspan(at, n), std::span(d.values).subspan(at, n),
                                        {.codec = choice})
                         .value());
  }
  return blocks;
}

void codec_encode(benchmark::State& state) {
  const auto& d = datasets()[static_cast<std::size_t>(state.range(1))];
  const auto choice = choices[static_cast<std::size_t>(state.range(0))];
  state.SetLabel(std::string(choice_names[static_cast<std::size_t>(state.range(0))]) + "/" + d.name);
  std::size_t size = 0;
  for (auto _ : state) {
    auto blocks = encode_all(d, choice);
    size = 0;
    for (const auto& b : blocks) size += b.size();
    benchmark::DoNotOptimize(blocks);
  }
  state.counters["bytes_per_point"] = static_cast<double>(size) / static_cast<double>(d.values.size());
  state.counters["points_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * static_cast<double>(d.values.size()),
                         benchmark::Counter::kIsRate);
}

void codec_decode(benchmark::State& state) {
  const auto& d = datasets()[static_cast<std::size_t>(state.range(1))];
  const auto choice = choices[static_cast<std::size_t>(state.range(0))];
  state.SetLabel(std::string(choice_names[static_cast<std::size_t>(state.range(0))]) + "/" + d.name);
  const auto blocks = encode_all(d, choice);
  std::size_t size = 0;
  for (const auto& b : blocks) size += b.size();
  std::vector<std::int64_t> times;
  std::vector<double> values;
  times.reserve(block_points);
  values.reserve(block_points);
  for (auto _ : state) {
    for (const auto& b : blocks) {
      if (!tsdb::decode_block(b, times, values)) state.SkipWithError("decode failed");
      benchmark::DoNotOptimize(times.data());
      benchmark::DoNotOptimize(values.data());
    }
  }
  state.counters["bytes_per_point"] = static_cast<double>(size) / static_cast<double>(d.values.size());
  state.counters["points_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * static_cast<double>(d.values.size()),
                         benchmark::Counter::kIsRate);
}

void codec_args(benchmark::internal::Benchmark* b) {
  for (std::int64_t c = 0; c < 2; ++c)
    for (std::int64_t d = 0; d < 7; ++d) b->Args({c, d});
}

BENCHMARK(codec_encode)->Apply(codec_args)->Unit(benchmark::kMillisecond);
BENCHMARK(codec_decode)->Apply(codec_args)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
