// keel::tsdb benchmarks.
//   ./keel bench tsdb
// Figures: bytes per point, encode and decode points/s per codec on the ALP sample data (real
// values on a 60 s grid) and on synthetic counters and gauges; ingest into Postgres points/s
// (a private cluster, or KEEL_DATABASE_URL); a bucketed query over one day at 10 s resolution.
#include <keel/pg/local_cluster.hpp>
#include <keel/tsdb/codec.hpp>
#include <keel/tsdb/store.hpp>

#include "support/postgres.hpp"

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

constexpr std::array<tsdb::codec_choice, 3> choices = {
    tsdb::codec_choice::automatic, tsdb::codec_choice::gorilla, tsdb::codec_choice::chimp};
constexpr std::array<const char*, 3> choice_names = {"automatic", "gorilla", "chimp128"};

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
  for (std::int64_t c = 0; c < 3; ++c)
    for (std::int64_t d = 0; d < 7; ++d) b->Args({c, d});
}

BENCHMARK(codec_encode)->Apply(codec_args)->Unit(benchmark::kMillisecond);
BENCHMARK(codec_decode)->Apply(codec_args)->Unit(benchmark::kMillisecond);

std::string conninfo;
int schema_counter = 0;

/// A fresh schema per benchmark run, migrated; returns its conninfo.
std::string fresh_schema() {
  auto admin = keel::pg::connection::connect(conninfo).value();
  const std::string name = "tsdb_bench_" + std::to_string(++schema_counter);
  (void)admin.execute("DROP SCHEMA IF EXISTS " + name + " CASCADE");
  (void)admin.execute("CREATE SCHEMA " + name).value();
  const std::string info = conninfo + " options='-c search_path=" + name + "'";
  auto c = keel::pg::connection::connect(info).value();
  (void)tsdb::migrate(c).value();
  return info;
}

// Ingest: 100 gauge series at 10 s, appended in batches of 1000 points per series, sealed in
// blocks of 8192 and written with binary COPY; rollups per the argument (0: none, 1: 1 h,
// 2: 1 min + 1 h). Points/s counts the whole path: head, encode, COPY, rollup upserts, commit.
void ingest(benchmark::State& state) {
  const std::string info = fresh_schema();
  std::vector<std::int64_t> rollups;
  if (state.range(0) >= 1) rollups.push_back(3'600'000);
  if (state.range(0) >= 2) rollups.insert(rollups.begin(), 60'000);
  auto store = tsdb::store::open(info, {.rollups = rollups}).value();
  constexpr int series_count = 100;
  constexpr std::size_t batch = 1000;
  std::vector<std::int64_t> ids;
  for (int i = 0; i < series_count; ++i)
    ids.push_back(store.series("bench_gauge", {{"id", std::to_string(i)}}).value());
  const auto& gauge = datasets()[6].values;
  std::vector<std::int64_t> times(batch);
  std::vector<double> values(batch);
  std::int64_t t0 = 1'700'000'000'000;
  std::size_t offset = 0;
  std::uint64_t points = 0;
  for (auto _ : state) {
    for (std::size_t i = 0; i < batch; ++i) times[i] = t0 + static_cast<std::int64_t>(i) * 10'000;
    for (const auto id : ids) {
      for (std::size_t i = 0; i < batch; ++i)
        values[i] = gauge[(offset + i + static_cast<std::size_t>(id) * 7) % gauge.size()];
      if (!store.buffer(id, times, values)) state.SkipWithError("buffer failed");
    }
    t0 += static_cast<std::int64_t>(batch) * 10'000;
    offset += batch;
    points += batch * ids.size();
  }
  if (!store.flush()) state.SkipWithError("flush failed");
  state.counters["points_per_second"] =
      benchmark::Counter(static_cast<double>(points), benchmark::Counter::kIsRate);
}
BENCHMARK(ingest)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// One day of one series at 10 s resolution (8,640 points): hourly buckets on aligned bounds
// (arg 0: the 1-hour rollup answers), 5-minute buckets on aligned bounds (arg 1: the 1-minute
// rollup would be exact but costs more than the blocks, so the planner takes blocks), 5-minute
// buckets on unaligned bounds (arg 2), and 5-minute buckets with percentiles (arg 3: every block
// decoded into sketches).
void query_day(benchmark::State& state) {
  static std::string info;
  static std::int64_t id = 0;
  static std::unique_ptr<tsdb::store> store;
  const std::int64_t day_start = 1'700'006'400'000;  // a whole hour
  if (!store) {
    info = fresh_schema();
    store = std::make_unique<tsdb::store>(tsdb::store::open(info, {.seal_count = 2048}).value());
    id = store->series("bench_day").value();
    const auto& gauge = datasets()[6].values;
    std::vector<std::int64_t> times;
    std::vector<double> values;
    for (std::int64_t i = 0; i < 8640 * 3; ++i) {
      times.push_back(day_start - 86'400'000 + i * 10'000);
      values.push_back(gauge[static_cast<std::size_t>(i)]);
    }
    if (!store->buffer(id, times, values) || !store->flush()) state.SkipWithError("load failed");
  }
  const std::int64_t from = day_start + (state.range(0) == 2 ? 1234 : 0);
  const std::int64_t width = state.range(0) == 0 ? 3'600'000 : 300'000;
  tsdb::query_plan plan;
  for (auto _ : state) {
    auto buckets = store->aggregate(
        id, {.from = from, .to = from + 86'400'000, .width = width, .percentiles = state.range(0) == 3},
        &plan);
    if (!buckets || buckets->size() < 24) state.SkipWithError("query failed");
    benchmark::DoNotOptimize(buckets);
  }
  state.SetLabel(plan.rollup != 0 ? "rollup " + std::to_string(plan.rollup) + " ms"
                                  : std::to_string(plan.blocks_decoded) + " blocks decoded, " +
                                        std::to_string(plan.blocks_summarized) + " from summaries");
  state.counters["queries_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(query_day)->Arg(0)->Arg(1)->Arg(2)->Arg(3)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  auto postgres = keel::bench::postgres::start();
  if (!postgres) return 1;
  conninfo = postgres->conninfo;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
