// keel::pg benchmarks against a real server: a private cluster (or KEEL_DATABASE_URL).
//   ./keel bench pg
// Figures: simple query round trips/s (one at a time vs pipeline mode), COPY rows/s,
// pool acquire+release/s.
#include <keel/pg/connection.hpp>
#include <keel/pg/copy.hpp>
#include <keel/pg/local_cluster.hpp>
#include <keel/pg/pipeline.hpp>
#include <keel/pg/pool.hpp>

#include "support/postgres.hpp"

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace {

std::string conninfo;

keel::pg::connection connect() {
  return keel::pg::connection::connect(conninfo).value();
}

void query_round_trips(benchmark::State& state) {
  auto c = connect();
  std::int64_t i = 0;
  for (auto _ : state) {
    auto r = c.query("SELECT $1::int8 + 1", i++);
    if (!r) state.SkipWithError("query failed");
    benchmark::DoNotOptimize(r);
  }
  state.counters["queries_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(query_round_trips)->UseRealTime();

void pipelined_round_trips(benchmark::State& state) {
  auto c = connect();
  const auto batch = state.range(0);
  auto p = keel::pg::pipeline::start(c).value();
  std::int64_t i = 0;
  for (auto _ : state) {
    for (std::int64_t k = 0; k < batch; ++k) (void)p.add("SELECT $1::int8 + 1", i++);
    auto results = p.sync();
    if (!results) state.SkipWithError("pipeline failed");
    benchmark::DoNotOptimize(results);
  }
  state.counters["queries_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
}
BENCHMARK(pipelined_round_trips)->Arg(100)->UseRealTime();

void copy_rows(benchmark::State& state) {
  auto c = connect();
  (void)c.execute(
      "DROP TABLE IF EXISTS bench_copy; CREATE UNLOGGED TABLE bench_copy (id int8, name text, score float8)");
  const auto batch = state.range(0);
  for (auto _ : state) {
    auto writer = keel::pg::copy_writer::start(c, "bench_copy", {"id", "name", "score"}).value();
    for (std::int64_t k = 0; k < batch; ++k) (void)writer.write_row(k, "row name", 0.5);
    if (!writer.finish()) state.SkipWithError("copy failed");
  }
  state.counters["rows_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
  (void)c.execute("DROP TABLE bench_copy");
}
BENCHMARK(copy_rows)->Arg(100'000)->UseRealTime()->Unit(benchmark::kMillisecond);

void pool_acquire_release(benchmark::State& state) {
  static keel::pg::pool pool({.conninfo = conninfo, .max_size = 4});
  for (auto _ : state) {
    auto c = pool.acquire();
    if (!c) state.SkipWithError("acquire failed");
    benchmark::DoNotOptimize(c);
  }
  state.counters["acquires_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(pool_acquire_release)->Threads(1)->Threads(2)->UseRealTime();

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
