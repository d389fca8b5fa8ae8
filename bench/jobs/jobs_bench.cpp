// keel::jobs benchmarks against a private Postgres (or KEEL_DATABASE_URL), like `river bench`.
//   ./keel bench jobs
// Figures: jobs processed per second with no-op handlers at concurrency 10 and 50
// (`jobs_per_second`), batch enqueue (`enqueued_per_second`), and enqueue→start latency when
// the worker is idle (`p50_ms`, `p99_ms`).
#include <keel/jobs.hpp>
#include <keel/pg/local_cluster.hpp>

#include "support/peers.hpp"
#include "support/postgres.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
namespace jobs = keel::jobs;

std::string conninfo;

keel::pg::connection connect() {
  return keel::pg::connection::connect(conninfo).value();
}

void reset_tables(keel::pg::connection& c) {
  (void)c.execute("TRUNCATE keel_jobs").value();
  (void)c.execute("VACUUM ANALYZE keel_jobs").value();
}

// Jobs of one kind with different args, as a real batch has (each job's args are parsed).
std::vector<jobs::new_job> batch_of(std::size_t n) {
  std::vector<jobs::new_job> batch;
  batch.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    batch.push_back({.kind = "noop", .args = R"({"n": )" + std::to_string(i) + "}"});
  }
  return batch;
}

// threads:2 is two producers, each on its own connection (so its own Postgres backend): what
// the table takes when the machine's two cores both enqueue; the counter is their sum.
void enqueue_batch(benchmark::State& state) {
  auto c = connect();
  if (state.thread_index() == 0) reset_tables(c);
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto batch = batch_of(n);
  for (auto _ : state) {
    auto put = jobs::enqueue_many(c, batch);
    if (!put) state.SkipWithError("enqueue failed");
  }
  state.counters["enqueued_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations() * static_cast<std::int64_t>(n)), benchmark::Counter::kIsRate);
}
BENCHMARK(enqueue_batch)
    ->Arg(1000)
    ->Arg(10'000)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void enqueue_single(benchmark::State& state) {
  auto c = connect();
  reset_tables(c);
  const jobs::new_job job{.kind = "noop"};
  for (auto _ : state) {
    if (!jobs::enqueue(c, job)) state.SkipWithError("enqueue failed");
  }
  state.counters["enqueued_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  reset_tables(c);
}
BENCHMARK(enqueue_single)->UseRealTime();

// Work off `total` waiting jobs with no-op handlers; the time runs from start() until every
// handler returned (acks of the last batch are flushed by stop(), untimed).
void process_jobs(benchmark::State& state, bool check_before_start) {
  auto c = connect();
  const auto concurrency = static_cast<std::size_t>(state.range(0));
  constexpr std::size_t total = 50'000;
  std::int64_t processed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    reset_tables(c);
    for (std::size_t i = 0; i < total; i += 10'000) (void)jobs::enqueue_many(c, batch_of(10'000)).value();
    jobs::worker w({.conninfo = conninfo,
                    .concurrency = concurrency,
                    .fetch_batch = 1000,
                    .prefetch = 1000,
                    .check_before_start = check_before_start});
    w.handle("noop", [](const jobs::job_context&) { return jobs::job_result::done(); });
    state.ResumeTiming();
    if (!w.start()) state.SkipWithError("worker did not start");
    while (w.stats().completed < total) std::this_thread::sleep_for(1ms);
    state.PauseTiming();
    w.stop();
    processed += static_cast<std::int64_t>(total);
    const auto done =
        c.query("SELECT count(*) FROM keel_jobs WHERE state = 'completed'")->value<std::int64_t>();
    if (!done || *done != static_cast<std::int64_t>(total))
      state.SkipWithError("not every job was completed");
    state.ResumeTiming();
  }
  state.counters["jobs_per_second"] =
      benchmark::Counter(static_cast<double>(processed), benchmark::Counter::kIsRate);
}
void process(benchmark::State& state) {
  process_jobs(state, true);
}
BENCHMARK(process)->Arg(10)->Arg(50)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same without the start check (worker_options::check_before_start = false): what it costs.
void process_unchecked(benchmark::State& state) {
  process_jobs(state, false);
}
BENCHMARK(process_unchecked)->Arg(10)->Arg(50)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

// The peer the issue names, graphile-worker, on the same Postgres in the same run: no-op tasks
// at concurrency 10, timed until every handler returned, with its default settings (arg 0) and
// with its documented throughput tuning (arg 1: local queue of 500, batched completions).
void peer_graphile_worker(benchmark::State& state) {
  const bool batched = state.range(0) != 0;
  keel::bench::peer_figure figure;
  for (auto _ : state)
    figure = keel::bench::run_peer("graphile_worker.mjs",
                                   {keel::bench::node_postgres_url(conninfo), batched ? "50000" : "10000",
                                    "10", batched ? "batched" : "default"},
                                   "jobs_per_second");
  if (!figure.value) return state.SkipWithError(figure.problem.c_str());
  state.counters["jobs_per_second"] = *figure.value;
  state.SetLabel(batched ? "graphile-worker, tuned" : "graphile-worker, defaults");
}
BENCHMARK(peer_graphile_worker)
    ->ArgName("batched")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One job at a time into an idle worker: enqueue (autocommit) → NOTIFY → fetch → handler.
void latency_idle(benchmark::State& state) {
  auto c = connect();
  reset_tables(c);
  std::atomic<std::int64_t> started_ns{0};
  jobs::worker w({.conninfo = conninfo, .concurrency = 10});
  w.handle("ping", [&](const jobs::job_context&) {
    started_ns = std::chrono::steady_clock::now().time_since_epoch().count();
    return jobs::job_result::done();
  });
  if (!w.start()) state.SkipWithError("worker did not start");
  std::this_thread::sleep_for(300ms);  // listener connected
  std::vector<double> latencies_ms;
  for (auto _ : state) {
    started_ns = 0;
    const auto t0 = std::chrono::steady_clock::now();
    (void)jobs::enqueue(c, {.kind = "ping"}).value();
    while (started_ns.load() == 0) std::this_thread::yield();
    const auto t1 = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(started_ns.load()));
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    state.PauseTiming();
    std::this_thread::sleep_for(5ms);  // idle again
    state.ResumeTiming();
  }
  w.stop();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto at = [&](double q) {
    return latencies_ms[static_cast<std::size_t>(q * static_cast<double>(latencies_ms.size() - 1))];
  };
  state.counters["p50_ms"] = at(0.50);
  state.counters["p99_ms"] = at(0.99);
  reset_tables(c);
}
BENCHMARK(latency_idle)->Iterations(500)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  auto postgres = keel::bench::postgres::start();
  if (!postgres) return 1;
  conninfo = postgres->conninfo;
  {
    auto c = connect();
    if (auto migrated = jobs::migrate(c); !migrated) {
      std::fprintf(stderr, "migrations failed: %s\n", c.last_error().to_string().c_str());
      return 1;
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
