// keel::events benchmarks against a private Postgres (or KEEL_DATABASE_URL).
//   ./keel bench events
// Figures (`events_per_second`): batched append (100 events a call, 10,000 streams of one
// category, 1 and 2 writers), single-event append latency (`p50_us`, `p99_us`; also with an inline
// projection), `$all` read throughput on one connection, a projection rebuild (a fold over `$all` with
// for_each), and append → handler latency for a live subscriber (`p50_us`, `p99_us`). Appends run on a
// cluster with durability off (as the tests) and on one with durable commits. The append rows also run, on
// the same workload, the two designs keel avoids, written as plain SQL around the same append: a global lock
// (Commanded links every event into `$all` under one row lock) and a per-category advisory lock (message-db's
// write_message), so the table shows what each costs.
#include <keel/events.hpp>
#include <keel/pg/local_cluster.hpp>

#include "support/postgres.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

namespace ev = keel::events;
std::string conninfo;          // durability off (fsync, synchronous_commit): what tests use
std::string durable_conninfo;  // a second cluster with durable commits, as production runs

keel::pg::connection connect(bool durable = false) {
  return keel::pg::connection::connect(durable ? durable_conninfo : conninfo).value();
}

void reset(keel::pg::connection& c) {
  (void)c.execute("TRUNCATE keel_events, keel_events_streams, keel_events_sequence").value();
  (void)c.execute("UPDATE keel_events_sequencer SET last_sequence = 0, transaction_id = 0, position = 0")
      .value();
  (void)c.execute("UPDATE keel_bench_all SET version = 0").value();
  (void)c.execute("VACUUM ANALYZE keel_events, keel_events_streams").value();
}

std::vector<ev::new_event> batch_of(std::size_t n, std::uint64_t salt) {
  std::vector<ev::new_event> batch;
  batch.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    batch.push_back({.type = i % 3 == 0 ? "order_placed" : "line_added",
                     .data = R"({"order": )" + std::to_string(salt + i) +
                             R"(, "sku": "ABC-123", "quantity": 2, "price": 1999})",
                     .metadata = R"({"correlation_id": "c-)" + std::to_string(salt) + "\"}"});
  }
  return batch;
}

// What surrounds each append: nothing (keel, one statement that also sends the NOTIFY live
// subscriptions wake on), a transaction of its own (the same round trips as the locking designs),
// a global row lock, a category advisory lock, or nothing with the NOTIFY turned off (what the
// wake-up costs: Postgres serialises the commits of notifying transactions on one queue lock).
enum class design { keel, keel_in_transaction, global_lock, category_lock, keel_without_notify };

void append_batched(benchmark::State& state) {
  auto c = connect(state.range(1) != 0);
  if (state.thread_index() == 0) reset(c);
  const auto mode = static_cast<design>(state.range(0));
  constexpr std::size_t per_call = 100;
  const ev::store store(ev::store_options{.notify = mode != design::keel_without_notify});
  std::mt19937_64 rng(static_cast<std::uint64_t>(state.thread_index()) + 1);
  const auto batch = batch_of(per_call, static_cast<std::uint64_t>(state.thread_index()) * 1'000'000);
  for (auto _ : state) {
    const auto stream = "order-" + std::to_string(rng() % 10'000);
    bool ok = true;
    const bool own_transaction = mode != design::keel && mode != design::keel_without_notify;
    if (own_transaction) ok = ok && c.execute("BEGIN").has_value();
    if (mode == design::global_lock) {
      ok = ok &&
           c.query("UPDATE keel_bench_all SET version = version + $1", std::int64_t{per_call}).has_value();
    } else if (mode == design::category_lock) {
      ok = ok && c.query("SELECT pg_advisory_xact_lock(hashtext($1))", ev::category_of(stream)).has_value();
    }
    auto appended = store.append(c, stream, ev::expected_version::any(), batch);
    ok = ok && appended && *appended;
    if (own_transaction) ok = ok && c.execute("COMMIT").has_value();
    if (!ok) {
      state.SkipWithError("append failed");
      break;
    }
  }
  state.counters["events_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations() * static_cast<std::int64_t>(per_call)),
                         benchmark::Counter::kIsRate);
}
BENCHMARK(append_batched)
    // design: 0 keel, 1 keel in BEGIN/COMMIT, 2 global lock, 3 category lock, 4 keel without NOTIFY;
    // durable: 0 fsync off, 1 durable commits (fsync, synchronous_commit on)
    ->ArgNames({"design", "durable"})
    ->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1}})
    ->Threads(1)
    ->Threads(2)
    ->MinTime(2.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The strict mode's price: the same batched appends (2 writers, durability off) while a
// sequencer numbers the events densely as they commit, in batches of up to 10,000; reports the
// appends and what the sequencer kept up with.
void append_with_sequencer(benchmark::State& state) {
  auto c = connect();
  if (state.thread_index() == 0) reset(c);
  constexpr std::size_t per_call = 100;
  const ev::store store;
  std::mt19937_64 rng(static_cast<std::uint64_t>(state.thread_index()) + 7);
  const auto batch = batch_of(per_call, static_cast<std::uint64_t>(state.thread_index()) * 1'000'000);
  std::atomic<bool> running{true};
  std::atomic<std::uint64_t> sequenced{0};
  std::thread sequencer;
  if (state.thread_index() == 0) {
    sequencer = std::thread([&] {
      auto sc = connect();
      while (running.load()) {
        auto numbered = store.assign_sequence(sc, 10'000);
        if (!numbered) break;
        sequenced += numbered->assigned;
        if (numbered->assigned == 0) std::this_thread::yield();
      }
    });
  }
  for (auto _ : state) {
    if (!store.append(c, "order-" + std::to_string(rng() % 10'000), ev::expected_version::any(), batch)) {
      state.SkipWithError("append failed");
      break;
    }
  }
  if (state.thread_index() == 0) {
    running = false;
    sequencer.join();
    state.counters["sequenced_per_second"] =
        benchmark::Counter(static_cast<double>(sequenced.load()), benchmark::Counter::kIsRate);
  }
  state.counters["events_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations() * static_cast<std::int64_t>(per_call)),
                         benchmark::Counter::kIsRate);
}
BENCHMARK(append_with_sequencer)->Threads(2)->MinTime(2.0)->UseRealTime()->Unit(benchmark::kMillisecond);

// Arg 1: with an inline projection (one upsert per event in the append's transaction), to show
// what keeping a read model in step with the stream costs.
void append_single_latency(benchmark::State& state) {
  auto c = connect();
  reset(c);
  (void)c.execute("CREATE TABLE IF NOT EXISTS keel_bench_counts (stream text PRIMARY KEY, n bigint NOT NULL)")
      .value();
  (void)c.execute("TRUNCATE keel_bench_counts").value();
  const std::vector<ev::inline_projection> counting{
      {.name = "counts",
       .apply = [](keel::pg::connection& on,
                   std::span<const ev::recorded_event> events) -> keel::result<void> {
         for (const auto& e : events) {
           auto done = on.query(
               "INSERT INTO keel_bench_counts AS t VALUES ($1, 1) ON CONFLICT (stream) DO UPDATE SET n = t.n "
               "+ 1",
               e.stream);
           if (!done) return done.error();
         }
         return {};
       }}};
  const ev::store store(ev::store_options{
      .inline_projections = state.range(0) == 1 ? std::span<const ev::inline_projection>(counting)
                                                : std::span<const ev::inline_projection>()});
  const auto batch = batch_of(1, 7);
  std::vector<double> micros;
  std::int64_t k = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    auto appended =
        store.append(c, "order-" + std::to_string(++k % 1000), ev::expected_version::any(), batch);
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
    if (!appended) {
      state.SkipWithError("append failed");
      break;
    }
  }
  std::sort(micros.begin(), micros.end());
  const auto at = [&](double q) {
    return micros.empty() ? 0.0
                          : micros[static_cast<std::size_t>(q * static_cast<double>(micros.size() - 1))];
  };
  state.counters["p50_us"] = at(0.50);
  state.counters["p99_us"] = at(0.99);
  state.counters["events_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(append_single_latency)
    ->ArgName("inline_projection")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(5000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Append → handler latency for a live subscriber on $all: each iteration appends one event and
// waits until the subscription has handled it (woken by the append's NOTIFY).
void live_latency(benchmark::State& state) {
  auto c = connect();
  reset(c);
  const ev::store store;
  std::atomic<std::uint64_t> handled{0};
  ev::subscription sub({.conninfo = conninfo}, [&](const ev::recorded_event&) -> keel::result<void> {
    ++handled;
    return {};
  });
  if (!sub.start()) {
    state.SkipWithError("subscription failed to start");
    return;
  }
  // Listening once the LISTEN connection's first wake-up was handled.
  while (sub.stats().wakeups == 0) std::this_thread::yield();
  const auto batch = batch_of(1, 11);
  std::vector<double> micros;
  std::uint64_t sent = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (!store.append(c, "order-1", ev::expected_version::any(), batch)) {
      state.SkipWithError("append failed");
      break;
    }
    if (!sub.wait_for_count(++sent, std::chrono::seconds(10))) {
      state.SkipWithError("the subscriber did not see the event within 10 s");
      break;
    }
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  sub.stop();
  std::sort(micros.begin(), micros.end());
  const auto at = [&](double q) {
    return micros.empty() ? 0.0
                          : micros[static_cast<std::size_t>(q * static_cast<double>(micros.size() - 1))];
  };
  state.counters["p50_us"] = at(0.50);
  state.counters["p99_us"] = at(0.99);
}
BENCHMARK(live_latency)->Iterations(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);

constexpr std::int64_t stored_for_reads = 200'000;

// 200,000 events in 500 streams, for the read benchmarks (written once).
bool preload(keel::pg::connection& c, const ev::store& store) {
  static bool loaded = false;
  if (loaded) return true;
  reset(c);
  const auto batch = batch_of(1000, 0);
  for (std::int64_t k = 0; k < stored_for_reads / 1000; ++k) {
    if (!store.append(c, "order-" + std::to_string(k % 500), ev::expected_version::any(), batch))
      return false;
  }
  loaded = c.execute("VACUUM ANALYZE keel_events").has_value();
  return loaded;
}

// $all from the start to the horizon with read_all, in pages of range(0) events, on one
// connection: every event materialised.
void read_all(benchmark::State& state) {
  auto c = connect();
  const ev::store store;
  if (!preload(c, store)) {
    state.SkipWithError("preload failed");
    return;
  }
  const auto page = static_cast<std::size_t>(state.range(0));
  std::int64_t read = 0;
  for (auto _ : state) {
    ev::all_position after;
    for (;;) {
      auto got = store.read_all(c, {.after = after, .max_count = page});
      if (!got) {
        state.SkipWithError("read failed");
        return;
      }
      read += static_cast<std::int64_t>(got->events.size());
      after = got->next;
      if (got->caught_up) break;
    }
  }
  state.counters["events_per_second"] =
      benchmark::Counter(static_cast<double>(read), benchmark::Counter::kIsRate);
}
BENCHMARK(read_all)->Arg(1000)->Arg(10'000)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

// $all from the start to the horizon with for_each (the read-ahead API: the next page is read
// while the handler sees this one), pages of range(0), the handler only counting.
void read_all_ahead(benchmark::State& state) {
  auto c = connect();
  const ev::store store;
  if (!preload(c, store)) {
    state.SkipWithError("preload failed");
    return;
  }
  const auto page = static_cast<std::size_t>(state.range(0));
  std::int64_t read = 0;
  for (auto _ : state) {
    auto end = store.for_each(c, {.max_count = page}, [&](const ev::recorded_event& e) {
      benchmark::DoNotOptimize(e.data.size());
      ++read;
      return true;
    });
    if (!end) {
      state.SkipWithError("read failed");
      return;
    }
  }
  state.counters["events_per_second"] =
      benchmark::Counter(static_cast<double>(read), benchmark::Counter::kIsRate);
}
BENCHMARK(read_all_ahead)->Arg(1000)->Arg(5000)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

// A projection rebuild: for_each over $all (the next page read while this one is folded),
// folding each event into a per-stream count and byte total, as a read model would.
void rebuild_fold(benchmark::State& state) {
  auto c = connect();
  const ev::store store;
  if (!preload(c, store)) {
    state.SkipWithError("preload failed");
    return;
  }
  const auto page = static_cast<std::size_t>(state.range(0));
  std::int64_t folded = 0;
  for (auto _ : state) {
    std::unordered_map<std::string, std::pair<std::int64_t, std::size_t>> per_stream;
    auto end = store.for_each(c, {.max_count = page}, [&](const ev::recorded_event& e) {
      auto& [count, bytes] = per_stream[e.stream];
      ++count;
      bytes += e.data.size();
      return true;
    });
    if (!end) {
      state.SkipWithError("rebuild failed");
      return;
    }
    for (const auto& [stream, totals] : per_stream) folded += totals.first;
    benchmark::DoNotOptimize(per_stream);
  }
  state.counters["events_per_second"] =
      benchmark::Counter(static_cast<double>(folded), benchmark::Counter::kIsRate);
}
BENCHMARK(rebuild_fold)->Arg(1000)->Arg(5000)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  auto postgres = keel::bench::postgres::start();
  if (!postgres) return 1;
  conninfo = postgres->conninfo;
  std::optional<keel::pg::local_cluster> durable;
  durable_conninfo = conninfo;
  if (postgres->cluster) {
    auto started = keel::pg::local_cluster::start({.durable = true});
    if (!started) {
      std::fprintf(stderr, "could not start the durable cluster: %s\n", started.error().message().c_str());
      return 1;
    }
    durable.emplace(std::move(*started));
    durable_conninfo = durable->conninfo();
  }
  for (const bool on_durable : {false, true}) {
    auto c = connect(on_durable);
    if (auto migrated = ev::migrate(c); !migrated) {
      std::fprintf(stderr, "migrations failed: %s\n", c.last_error().to_string().c_str());
      return 1;
    }
    // Commanded's $all row, for the global-lock design.
    if (!c.execute("CREATE TABLE IF NOT EXISTS keel_bench_all (version bigint NOT NULL);"
                   "INSERT INTO keel_bench_all SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM keel_bench_all)")) {
      std::fprintf(stderr, "setup failed: %s\n", c.last_error().to_string().c_str());
      return 1;
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
