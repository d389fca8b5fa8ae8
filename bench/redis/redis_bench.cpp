// keel::redis benchmarks, against a redis-server this binary starts on loopback; headline
// counter: commands_per_second.
//   pipelined/depth:D        one connection, D INCRs per submit (one write, one round trip)
//   callers/in_flight:N      one connection, N single-command requests in flight from one
//                            thread: the client coalesces them into few writes
//   blocking_command         one command per round trip, for contrast
#include <keel/redis.hpp>

#include "support/redis.hpp"

#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace {

keel::bench::redis_process& redis() {
  return keel::bench::redis_process::shared();
}

keel::redis::options bench_options() {
  return {.port = redis().port(), .max_connections = 1, .command_timeout = std::chrono::seconds(5)};
}

void pipelined(benchmark::State& state) {
  if (!redis().error().empty()) return state.SkipWithError(redis().error().c_str());
  keel::redis::client client(bench_options());
  const auto depth = static_cast<std::size_t>(state.range(0));
  std::string batch;
  for (std::size_t i = 0; i < depth; ++i) keel::redis::append_command(batch, {"INCR", "bench:pipelined"});
  for (auto _ : state) {
    auto replies = client.pipeline(batch, depth);
    if (!replies) return state.SkipWithError(replies.error().message().c_str());
    benchmark::DoNotOptimize(replies->back().integer);
  }
  state.counters["commands_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(depth), benchmark::Counter::kIsRate);
}
BENCHMARK(pipelined)->ArgName("depth")->Arg(1)->Arg(16)->Arg(128)->UseRealTime();

void callers(benchmark::State& state) {
  if (!redis().error().empty()) return state.SkipWithError(redis().error().c_str());
  keel::redis::client client(bench_options());
  const auto in_flight = state.range(0);
  std::string command;
  keel::redis::append_command(command, {"INCR", "bench:callers"});
  std::mutex mutex;
  std::condition_variable cv;
  std::int64_t outstanding = 0;
  bool failed = false;
  for (auto _ : state) {
    {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return outstanding < in_flight; });
      ++outstanding;
    }
    client.submit(command, 1, [&](keel::error_code ec, std::vector<keel::redis::resp_value>) {
      std::lock_guard guard(mutex);
      failed = failed || static_cast<bool>(ec);
      --outstanding;
      cv.notify_one();
    });
  }
  std::unique_lock lock(mutex);
  cv.wait(lock, [&] { return outstanding == 0; });
  if (failed) return state.SkipWithError("a command failed");
  state.counters["commands_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(callers)->ArgName("in_flight")->Arg(128)->UseRealTime();

void blocking_command(benchmark::State& state) {
  if (!redis().error().empty()) return state.SkipWithError(redis().error().c_str());
  auto c = keel::redis::connection::connect(bench_options());
  if (!c) return state.SkipWithError(c.error().message().c_str());
  for (auto _ : state) {
    auto reply = c->command({"INCR", "bench:blocking"});
    if (!reply) return state.SkipWithError(reply.error().message().c_str());
  }
  state.counters["commands_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(blocking_command)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
