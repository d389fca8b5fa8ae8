// keel::ratelimit benchmarks; headline counter: decisions_per_second.
//   memory_decide/keys:K/threads:T   the in-process backend, one GCRA limit, K distinct keys
//   memory_decide_at, _coarse, _batch the same decisions with the time passed in, with the
//                                    coarse clock, and 64 per decide_batch() call
//   limiter_check/keys:K             the whole limiter path (policy match, key building, metrics)
//   redis_pipelined/depth:D          Redis backend, one connection, D decisions per round trip,
//                                    10k keys, against a redis-server this binary starts
//   redis_benchmark_ceiling/...      redis-benchmark -P 16 running the same script by EVALSHA
//                                    on the same server, in the same run: the ceiling
//   peer_rate_limiter_flexible/...   the peer, rate-limiter-flexible on ioredis, same server
#include <keel/ratelimit.hpp>
#include <keel/ratelimit_redis/redis.hpp>
#include <keel/redis/connection.hpp>

#include "support/peers.hpp"
#include "support/redis.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace rl = keel::ratelimit;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> make_keys(std::size_t n) {
  std::vector<std::string> keys;
  keys.reserve(n);
  for (std::size_t i = 0; i < n; ++i) keys.push_back("rl:api#0|8:" + std::to_string(10'000'000 + i));
  return keys;
}

// The same keys packed in one buffer, as a caller's keys are (built into its request buffer,
// hot in cache): 100k std::strings would add 6 MB of objects and heap blocks streaming through
// the cache and evicting the table under test.
struct packed_keys {
  std::string bytes;
  std::vector<std::string_view> views;

  explicit packed_keys(std::size_t n) {
    const auto keys = make_keys(n);
    for (const auto& k : keys) bytes += k;
    views.reserve(n);
    std::size_t at = 0;
    for (const auto& k : keys) {
      views.emplace_back(bytes.data() + at, k.size());
      at += k.size();
    }
  }
};

// The keys in turn, from the place `state`'s thread starts at, without a division per key (the
// benchmark would count it as the library's). Threads start evenly spaced round the keys, so
// none follows another through keys it has just touched (and holds in its own cache), as
// independent clients would not.
class key_cycle {
 public:
  key_cycle(std::span<const std::string_view> keys, const benchmark::State& state)
      : keys_(keys),
        at_(keys.size() * static_cast<std::size_t>(state.thread_index()) /
            static_cast<std::size_t>(state.threads())) {}
  std::string_view next() noexcept {
    const std::string_view k = keys_[at_];
    if (++at_ == keys_.size()) at_ = 0;
    return k;
  }

 private:
  std::span<const std::string_view> keys_;
  std::size_t at_;
};

rl::memory_backend& shared_store() {
  static rl::memory_backend store({.shards = 256, .max_keys = 1'000'000});
  return store;
}

// One decide() per iteration on `store`: the keys of state.range(0), taken in turn.
void decide_each(benchmark::State& state, rl::memory_backend& store) {
  static const packed_keys all_keys(100'000);
  const std::span<const std::string_view> keys(all_keys.views.data(),
                                               static_cast<std::size_t>(state.range(0)));
  // Generous enough that most decisions allow and spend, as in production.
  static const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 1'000'000'000, .period = 1s};
  key_cycle cycle(keys, state);
  rl::decision d;
  for (auto _ : state) {
    const rl::keyed_limit k{cycle.next(), &l};
    if (!store.decide({&k, 1}, 1, {&d, 1})) state.SkipWithError("decide failed");
    benchmark::DoNotOptimize(d);
  }
  state.counters["decisions_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void memory_decide(benchmark::State& state) {
  decide_each(state, shared_store());
}
BENCHMARK(memory_decide)->ArgName("keys")->Arg(1)->Arg(100'000)->Threads(1)->Threads(2)->UseRealTime();

// The same with the time passed in (decide_at), read once per 64 decisions: what a caller that
// already holds a timestamp (an event loop tick, a batch) pays. The clock read is ~20 ns here.
void memory_decide_at(benchmark::State& state) {
  static const packed_keys all_keys(100'000);
  const std::span<const std::string_view> keys(all_keys.views.data(),
                                               static_cast<std::size_t>(state.range(0)));
  static const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 1'000'000'000, .period = 1s};
  auto& store = shared_store();
  key_cycle cycle(keys, state);
  std::size_t i = 0;
  rl::decision d;
  std::int64_t now = 0;
  for (auto _ : state) {
    if (i % 64 == 0) now = std::chrono::steady_clock::now().time_since_epoch().count();
    const rl::keyed_limit k{cycle.next(), &l};
    if (!store.decide_at(now, {&k, 1}, 1, {&d, 1})) state.SkipWithError("decide failed");
    benchmark::DoNotOptimize(d);
    i += 1;
  }
  state.counters["decisions_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(memory_decide_at)->ArgName("keys")->Arg(1)->Arg(100'000)->Threads(1)->Threads(2)->UseRealTime();

// decide() with memory_options::coarse_clock: the clock read costs ~3 ns instead of ~28 ns.
rl::memory_backend& coarse_store() {
  static rl::memory_backend store({.shards = 256, .max_keys = 1'000'000, .coarse_clock = true});
  return store;
}

void memory_decide_coarse(benchmark::State& state) {
  decide_each(state, coarse_store());
}
BENCHMARK(memory_decide_coarse)->ArgName("keys")->Arg(1)->Arg(100'000)->Threads(1)->Threads(2)->UseRealTime();

// decide_batch(): 64 independent decisions per call, the same keys and the same work per
// decision as memory_decide (one GCRA limit, the clock read once per call). The keys are
// hashed and their slots prefetched ahead, so the table's cache misses overlap.
void memory_decide_batch(benchmark::State& state) {
  static const packed_keys all_keys(100'000);
  const std::span<const std::string_view> keys(all_keys.views.data(),
                                               static_cast<std::size_t>(state.range(0)));
  static const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 1'000'000'000, .period = 1s};
  auto& store = shared_store();
  constexpr std::size_t batch_size = 64;
  std::array<rl::keyed_limit, batch_size> limits{};
  std::array<rl::decision, batch_size> out{};
  std::array<rl::batch_request, batch_size> batch{};
  key_cycle cycle(keys, state);
  for (auto _ : state) {
    for (std::size_t j = 0; j < batch_size; ++j) {
      limits[j] = {cycle.next(), &l};
      batch[j] = {{&limits[j], 1}, 1, {&out[j], 1}};
    }
    if (!store.decide_batch(batch)) state.SkipWithError("decide failed");
    benchmark::DoNotOptimize(out);
  }
  state.counters["decisions_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(batch_size), benchmark::Counter::kIsRate);
}
BENCHMARK(memory_decide_batch)->ArgName("keys")->Arg(1)->Arg(100'000)->Threads(1)->Threads(2)->UseRealTime();

void memory_decide_algorithm(benchmark::State& state) {
  static const packed_keys all_keys(100'000);
  const auto a = static_cast<rl::algorithm>(state.range(0));
  const rl::limit l{
      .algorithm = a, .count = a == rl::algorithm::sliding_log ? 100U : 1'000'000U, .period = 1s};
  rl::memory_backend store({.max_keys = 1'000'000});
  key_cycle cycle(all_keys.views, state);
  rl::decision d;
  for (auto _ : state) {
    const rl::keyed_limit k{cycle.next(), &l};
    if (!store.decide({&k, 1}, 1, {&d, 1})) state.SkipWithError("decide failed");
    benchmark::DoNotOptimize(d);
  }
  state.SetLabel(std::string(rl::to_string(a)));
  state.counters["decisions_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(memory_decide_algorithm)->ArgName("algorithm")->DenseRange(0, 3);

void limiter_check(benchmark::State& state) {
  rl::memory_backend store({.max_keys = 1'000'000});
  rl::limiter limiter(store, {.cache_blocked_keys = false});
  rl::policy_set set;
  set.policies.push_back(
      {.name = "api",
       .key_by = {rl::attribute::ip},
       .routes = {"/api/*"},
       .limits = {{.algorithm = rl::algorithm::gcra, .count = 1'000'000'000, .period = 1s}}});
  if (!limiter.set_policies(set)) state.SkipWithError("bad policies");
  std::vector<std::string> ips;
  for (std::int64_t i = 0; i < state.range(0); ++i)
    ips.push_back("10." + std::to_string(i / 65536) + "." + std::to_string(i / 256 % 256) + "." +
                  std::to_string(i % 256));
  std::size_t i = 0;
  for (auto _ : state) {
    const auto v = limiter.check({.path = "/api/items", .ip = ips[i]});
    benchmark::DoNotOptimize(v.outcome);
    if (++i == ips.size()) i = 0;
  }
  state.counters["decisions_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(limiter_check)->ArgName("keys")->Arg(1)->Arg(100'000);

// ---- Redis ----------------------------------------------------------------------------------

keel::bench::redis_process& redis() {
  return keel::bench::redis_process::shared();
}

void redis_pipelined(benchmark::State& state) {
  if (!redis().error().empty()) return state.SkipWithError(redis().error().c_str());
  static const auto keys = make_keys(10'000);
  static const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 1'000'000'000, .period = 1s};
  rl::redis_backend store(
      {.port = redis().port(), .max_connections = 1, .command_timeout = std::chrono::seconds(5)});
  const auto depth = static_cast<std::size_t>(state.range(0));
  std::vector<rl::keyed_limit> limits(depth);
  std::vector<rl::decision> out(depth);
  std::vector<rl::batch_request> batch(depth);
  std::size_t next = 0;
  for (auto _ : state) {
    for (std::size_t i = 0; i < depth; ++i) {
      limits[i] = {keys[next++ % keys.size()], &l};
      batch[i] = {{&limits[i], 1}, 1, {&out[i], 1}};
    }
    if (!store.decide_batch(batch)) return state.SkipWithError("redis decide failed");
  }
  state.counters["decisions_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(depth), benchmark::Counter::kIsRate);
}
BENCHMARK(redis_pipelined)->ArgName("depth")->Arg(1)->Arg(16)->Arg(128)->UseRealTime();

// async_decide from one thread, D requests in flight on one connection: the client coalesces
// them into writes by itself (no explicit batch).
void redis_async(benchmark::State& state) {
  if (!redis().error().empty()) return state.SkipWithError(redis().error().c_str());
  static const auto keys = make_keys(10'000);
  static const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 1'000'000'000, .period = 1s};
  rl::redis_backend store(
      {.port = redis().port(), .max_connections = 1, .command_timeout = std::chrono::seconds(5)});
  const auto depth = static_cast<std::size_t>(state.range(0));
  std::vector<rl::keyed_limit> limits(depth);
  std::vector<rl::decision> out(depth);
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t done = 0;
  bool failed = false;
  std::size_t next = 0;
  for (auto _ : state) {
    {
      std::lock_guard guard(mutex);
      done = 0;
    }
    for (std::size_t i = 0; i < depth; ++i) {
      limits[i] = {keys[next++ % keys.size()], &l};
      store.async_decide({&limits[i], 1}, 1, {&out[i], 1}, [&](keel::error_code ec) {
        std::lock_guard guard(mutex);
        failed = failed || static_cast<bool>(ec);
        if (++done == depth) cv.notify_one();
      });
    }
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return done == depth; });
    if (failed) return state.SkipWithError("redis decide failed");
  }
  state.counters["decisions_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(depth), benchmark::Counter::kIsRate);
}
BENCHMARK(redis_async)->ArgName("in_flight")->Arg(128)->UseRealTime();

// redis-benchmark running our own script by EVALSHA (loaded first), pipelined 16 deep, over
// 10k random keys: what Redis itself can do with this script, without our client.
void redis_benchmark_ceiling(benchmark::State& state) {
  if (!redis().error().empty()) return state.SkipWithError(redis().error().c_str());
  auto c = keel::redis::connection::connect({.port = redis().port()});
  if (!c) return state.SkipWithError("cannot connect");
  auto sha = c->command({"SCRIPT", "LOAD", rl::redis_backend::decide_script()});
  if (!sha || sha->type != keel::redis::resp_value::kind::bulk_string)
    return state.SkipWithError("SCRIPT LOAD failed");
  const auto clients = state.range(0);
  const std::string command = "redis-benchmark -q -p " + std::to_string(redis().port()) + " -c " +
                              std::to_string(clients) + " -P 16 -n 300000 -r 10000 EVALSHA " + sha->text +
                              " 1 rl:bench:__rand_int__ 1 2 1000000000 1000000 1000000000 0 2>/dev/null";
  double rate = 0;
  for (auto _ : state) {
    FILE* p = ::popen(command.c_str(), "r");
    if (p == nullptr) return state.SkipWithError("cannot run redis-benchmark (redis-tools)");
    char line[4096];
    std::string all;
    while (std::fgets(line, sizeof line, p) != nullptr) all += line;
    ::pclose(p);
    // "EVALSHA ...: 123456.78 requests per second" (the last number before "requests").
    const auto at = all.rfind(" requests per second");
    if (at == std::string::npos)
      return state.SkipWithError(("unexpected redis-benchmark output: " + all).c_str());
    const auto start = all.rfind(' ', at - 1);
    rate = std::stod(all.substr(start + 1, at - start - 1));
  }
  state.counters["evalsha_per_second"] = rate;
  state.SetLabel("redis-benchmark -P 16 -c " + std::to_string(clients));
}
BENCHMARK(redis_benchmark_ceiling)->ArgName("clients")->Arg(1)->Arg(50)->Iterations(1)->UseRealTime();

// The peer the issue names: rate-limiter-flexible's RateLimiterRedis on ioredis (auto-pipelined,
// one connection, 10k keys), against the same redis-server in the same run.
void peer_rate_limiter_flexible(benchmark::State& state) {
  if (!redis().error().empty()) return state.SkipWithError(redis().error().c_str());
  keel::bench::peer_figure figure;
  for (auto _ : state)
    figure = keel::bench::run_peer("rate_limiter_flexible.mjs",
                                   {std::to_string(redis().port()), "200000", std::to_string(state.range(0))},
                                   "decisions_per_second");
  if (!figure.value) return state.SkipWithError(figure.problem.c_str());
  state.counters["decisions_per_second"] = *figure.value;
  state.SetLabel("rate-limiter-flexible + ioredis");
}
BENCHMARK(peer_rate_limiter_flexible)->ArgName("in_flight")->Arg(128)->Iterations(1)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
