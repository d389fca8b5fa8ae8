// keel::redis benchmarks, against a redis-server this binary starts on loopback; headline
// counter: commands_per_second.
//   pipelined/depth:D        one connection, D INCRs per submit (one write, one round trip)
//   callers/in_flight:N      one connection, N single-command requests in flight from one
//                            thread: the client coalesces them into few writes
//   blocking_command         one command per round trip, for contrast
#include <keel/redis.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <string>
#include <thread>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct redis_process {
  std::uint16_t port = 0;
  pid_t pid = -1;
  std::string error;

  redis_process() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      error = "no free port";
    }
    ::close(fd);
    port = ntohs(addr.sin_port);
    const std::string port_text = std::to_string(port);
    pid = ::fork();
    if (pid == 0) {
      const int quiet = ::open("/dev/null", O_WRONLY);
      ::dup2(quiet, 1);
      ::dup2(quiet, 2);
      ::execlp("redis-server", "redis-server", "--port", port_text.c_str(), "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      if (auto c = keel::redis::connection::connect({.port = port})) {
        if (auto pong = c->command({"PING"}); pong && pong->text == "PONG") return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    error = "redis-server did not start (is the redis-server package installed?)";
  }
  ~redis_process() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
  redis_process(const redis_process&) = delete;
  redis_process& operator=(const redis_process&) = delete;
};

redis_process& redis() {
  static redis_process instance;
  return instance;
}

keel::redis::options bench_options() {
  return {.port = redis().port, .max_connections = 1, .command_timeout = std::chrono::seconds(5)};
}

void pipelined(benchmark::State& state) {
  if (!redis().error.empty()) return state.SkipWithError(redis().error.c_str());
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
  if (!redis().error.empty()) return state.SkipWithError(redis().error.c_str());
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
  if (!redis().error.empty()) return state.SkipWithError(redis().error.c_str());
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
