// keel::ratelimit benchmarks; headline counter: decisions_per_second.
//   memory_decide/keys:K/threads:T   the in-process backend, one GCRA limit, K distinct keys
//   limiter_check/keys:K             the whole limiter path (policy match, key building, metrics)
#include <keel/ratelimit.hpp>

#include <benchmark/benchmark.h>

#include <string>
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

rl::memory_backend& shared_store() {
  static rl::memory_backend store({.shards = 256, .max_keys = 1'000'000});
  return store;
}

void memory_decide(benchmark::State& state) {
  static const auto keys = make_keys(static_cast<std::size_t>(state.range(0)));
  // Generous enough that most decisions allow and spend, as in production.
  static const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 1'000'000'000, .period = 1s};
  auto& store = shared_store();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  rl::decision d;
  for (auto _ : state) {
    const rl::keyed_limit k{keys[i % keys.size()], &l};
    if (!store.decide({&k, 1}, 1, {&d, 1})) state.SkipWithError("decide failed");
    benchmark::DoNotOptimize(d);
    i += 1;
  }
  state.counters["decisions_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(memory_decide)->ArgName("keys")->Arg(1)->Arg(100'000)->Threads(1)->Threads(2)->UseRealTime();

void memory_decide_algorithm(benchmark::State& state) {
  static const auto keys = make_keys(100'000);
  const auto a = static_cast<rl::algorithm>(state.range(0));
  const rl::limit l{
      .algorithm = a, .count = a == rl::algorithm::sliding_log ? 100U : 1'000'000U, .period = 1s};
  rl::memory_backend store({.max_keys = 1'000'000});
  std::size_t i = 0;
  rl::decision d;
  for (auto _ : state) {
    const rl::keyed_limit k{keys[i++ % keys.size()], &l};
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
    const auto v = limiter.check({.path = "/api/items", .ip = ips[i++ % ips.size()]});
    benchmark::DoNotOptimize(v.outcome);
  }
  state.counters["decisions_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(limiter_check)->ArgName("keys")->Arg(1)->Arg(100'000);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
