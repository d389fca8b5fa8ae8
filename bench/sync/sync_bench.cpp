// keel::sync benchmarks: the Yjs rooms (keel::sync::rooms on keel::net) against npm
// @hocuspocus/server in the same run, with the same clients (bench/peers/sync_fanout.mjs and
// sync_join.mjs: raw `ws` clients speaking the Yjs sync protocol, in one node process).
//   ./keel bench sync
// Figures:
// - `fanout_*`: one room, 100 clients; the first 1 (or 10) of them send one-character Y.Text
//   inserts as fast as they can, each keeping at most 16 updates not yet received by every
//   other client: `delivered_per_s` (receipts at the other clients per second), `p50_ms` and
//   `p99_ms` (send to receipt), `client_cpu` (the node process's cores busy), `vs_hocuspocus`
//   (delivered_per_s over Hocuspocus's with as many writers), `server_us_per_delivery` (the
//   server process's CPU time over the run per update delivered; Postgres's own not counted)
//   and `cpu_vs_hocuspocus` (Hocuspocus's over keel's: the figure the noisy machine disturbs
//   least). `fanout_hocuspocus` is the peer, in memory; `fanout_keel/0` keel in memory, `/1` on
//   Postgres (one INSERT carrying a NOTIFY per update, the default), `/2` on Postgres without
//   across_processes (an INSERT alone); `fanout_relay` a keel::net WebSocket route that only
//   passes each message on (no Yjs, no room): what the clients and the transport carry at most;
// - `fanout_paced/<server>/<k>`: one writer, open loop at k × Hocuspocus's updates/s (k = 1, 5):
//   the p99 at that rate; server /0 keel in memory, /1 keel on Postgres, /2 Hocuspocus;
// - `join_codec`: the server's work answering a new client's sync step 1 (an empty state
//   vector) in a room holding a 260,000-edit document — keel::crdt::yjs::diff_update plus the
//   state vector it sends on joining: `join_ms`, the median, `state_vector_ms` the part of it
//   the state vector takes; /1 on a thread of its own, as the server's I/O threads run it, /0 on
//   the main thread (slow in a fresh process: see join_codec);
// - `join_websocket`: the same from a node client, step 1 sent to step 2 received (the median of
//   10 joins), keel in memory (/0), on Postgres (/1), and Hocuspocus (/2) holding the same document.
// The 260,000-edit document: npm yjs replays the seph-blog1 trace (137,993 edits), then replays
// it again after the text it made until 260,000 edits are in (bench/peers/yjs_document.mjs).
#include <keel/crdt.hpp>
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>
#include <keel/sync/server.hpp>

#include "support/peers.hpp"
#include "support/postgres.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

namespace {

namespace sync = keel::sync;
namespace yjs = keel::crdt::yjs;

const std::string trace_path = KEEL_BENCH_DATA_DIR "/crdt/seph-blog1.json.gz";
constexpr int clients = 100;
constexpr int join_edits = 260'000;
std::string conninfo;

// Where each kind of server keeps its rooms.
enum class storage : std::uint8_t { memory, postgres, postgres_one_process };

// A keel::net server with the rooms mounted, on a free loopback port.
struct keel_rooms {
  std::unique_ptr<keel::pg::pool> pool;
  keel::net::server server{{.port = 0, .threads = 2}};
  std::shared_ptr<sync::rooms> rooms;
  std::string problem;

  explicit keel_rooms(storage where) {
    if (where != storage::memory) {
      if (conninfo.empty()) {
        problem = "no Postgres for the benchmark";
        return;
      }
      pool = std::make_unique<keel::pg::pool>(keel::pg::pool_options{.conninfo = conninfo});
    }
    auto mounted =
        sync::rooms::mount(server, {.pool = pool.get(), .across_processes = where == storage::postgres});
    if (!mounted) {
      problem = "mount failed: " + mounted.error().message();
      return;
    }
    rooms = std::move(*mounted);
    if (auto started = server.start(); !started) problem = "start failed: " + started.error().message();
  }
  keel_rooms(const keel_rooms&) = delete;
  keel_rooms& operator=(const keel_rooms&) = delete;
  ~keel_rooms() {
    server.stop();
    server.wait();
  }
  [[nodiscard]] std::string url(const std::string& room) const {
    return "ws://127.0.0.1:" + std::to_string(server.port()) + "/sync/" + room;
  }
};

// @hocuspocus/server in its own node process (bench/peers/hocuspocus_server.mjs), stopped with
// SIGTERM when this goes.
struct hocuspocus {
  FILE* pipe = nullptr;
  pid_t pid = 0;
  int port = 0;
  std::string problem;

  hocuspocus() {
    const char* dir = std::getenv("KEEL_PEERS_DIR");
    if (dir == nullptr || *dir == '\0') {
      problem = "KEEL_PEERS_DIR is not set: run the benchmarks with ./keel bench, which installs the peers";
      return;
    }
    std::string command = "cd '";
    command.append(dir).append("' && exec node hocuspocus_server.mjs");
    pipe = ::popen(command.c_str(), "r");
    std::array<char, 512> line{};
    if (pipe == nullptr || std::fgets(line.data(), line.size(), pipe) == nullptr) {
      problem = "hocuspocus_server.mjs did not start";
      return;
    }
    const keel::bench::peer_run said{line.data(), {}};
    port = static_cast<int>(said.figure("port").value.value_or(0));
    pid = static_cast<pid_t>(said.figure("pid").value.value_or(0));
    if (port == 0 || pid == 0) problem = std::string("hocuspocus_server.mjs said: ") + line.data();
  }
  hocuspocus(const hocuspocus&) = delete;
  hocuspocus& operator=(const hocuspocus&) = delete;
  ~hocuspocus() {
    if (pid != 0) ::kill(pid, SIGTERM);
    if (pipe != nullptr) ::pclose(pipe);
  }
  [[nodiscard]] std::string url() const { return "ws://127.0.0.1:" + std::to_string(port) + "/"; }
};

// A WebSocket route that passes each binary message to every other socket and answers sync
// step 1 with an empty step 2: no Yjs, no room, the ceiling of the clients and the transport.
struct relay {
  keel::net::server server{{.port = 0, .threads = 2}};
  std::mutex lock;
  std::map<std::uint64_t, keel::net::websocket_connection> sockets;
  std::string problem;

  relay() {
    server.websocket("/relay",
                     {.on_open =
                          [this](const keel::net::websocket_connection& c) {
                            const std::lock_guard guard(lock);
                            sockets.emplace(c.id(), c);
                          },
                      .on_message =
                          [this](const keel::net::websocket_connection& c, std::string_view message, bool) {
                            // Sync step 1 (0, 0, ...): answered with an empty update.
                            if (message.size() >= 2 && message[0] == 0 && message[1] == 0) {
                              (void)c.send_binary(std::string("\x00\x01\x02\x00\x00", 5));
                              return;
                            }
                            const std::string copy(message);
                            const std::lock_guard guard(lock);
                            for (const auto& [id, other] : sockets) {
                              if (id != c.id()) (void)other.send_binary(copy);
                            }
                          },
                      .on_close =
                          [this](const keel::net::websocket_connection& c, const keel::net::close_reason&) {
                            const std::lock_guard guard(lock);
                            sockets.erase(c.id());
                          }});
    if (auto started = server.start(); !started) problem = started.error().message();
  }
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;
  ~relay() {
    server.stop();
    server.wait();
  }
};

// CPU seconds used so far by this process (the keel servers run in it) and by another one.
double own_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  // Fields after the command's closing parenthesis: state is the 3rd, utime the 14th, stime the 15th.
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string skip;
  for (int field = 3; field < 14; ++field) fields >> skip;
  double user = 0;
  double system = 0;
  fields >> user >> system;
  return (user + system) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

int room_counter = 0;
std::string fresh_room() {
  return "bench-" + std::to_string(::getpid()) + "-" + std::to_string(++room_counter);
}

// Hocuspocus's delivered updates per second by writer count, and its updates sent per second
// with one writer, for the ratios and the paced rate.
std::map<int, double> hocuspocus_delivered;
std::map<int, double> hocuspocus_us_per_delivery;
std::optional<double> hocuspocus_sent_per_s;

// Runs sync_fanout.mjs and puts its figures into the counters; @returns delivered_per_s.
std::optional<double> fanout(benchmark::State& state, const std::function<double()>& server_cpu,
                             const std::string& protocol, const std::string& url, const std::string& room,
                             int writers, double rate = 0) {
  keel::bench::peer_run run;
  double cpu_seconds = 0;
  for (auto _ : state) {
    const auto cpu_started = server_cpu();
    run = keel::bench::run_peer_script(
        "sync_fanout.mjs",
        {protocol, url, room, std::to_string(clients), std::to_string(writers), std::to_string(rate), "5"});
    cpu_seconds = server_cpu() - cpu_started;
  }
  const auto delivered = run.figure("delivered_per_s");
  if (!delivered.value) {
    state.SkipWithError(delivered.problem.c_str());
    return std::nullopt;
  }
  for (const char* figure :
       {"delivered_per_s", "p50_ms", "p99_ms", "sent_per_s", "client_cpu", "undelivered"}) {
    if (const auto value = run.figure(figure).value) state.counters[figure] = *value;
  }
  // The server's CPU time per update delivered (over the whole script: joins included).
  if (const auto count = run.figure("delivered").value; count && *count > 0) {
    const double us = cpu_seconds * 1e6 / *count;
    state.counters["server_us_per_delivery"] = us;
    if (protocol == "hocuspocus" && rate == 0) hocuspocus_us_per_delivery[writers] = us;
    // How many times fewer server CPU seconds an update delivered costs than with Hocuspocus.
    if (const auto peer = hocuspocus_us_per_delivery.find(writers);
        protocol != "hocuspocus" && peer != hocuspocus_us_per_delivery.end() && us > 0)
      state.counters["cpu_vs_hocuspocus"] = peer->second / us;
  }
  if (const auto peer = hocuspocus_delivered.find(writers);
      peer != hocuspocus_delivered.end() && peer->second > 0)
    state.counters["vs_hocuspocus"] = *delivered.value / peer->second;
  return delivered.value;
}

void fanout_hocuspocus(benchmark::State& state) {
  const hocuspocus peer;
  if (!peer.problem.empty()) return state.SkipWithError(peer.problem.c_str());
  const auto writers = static_cast<int>(state.range(0));
  const auto delivered = fanout(
      state, [&] { return process_cpu_seconds(peer.pid); }, "hocuspocus", peer.url(), fresh_room(), writers);
  if (!delivered) return;
  hocuspocus_delivered[writers] = *delivered;
  if (writers == 1) hocuspocus_sent_per_s = state.counters["sent_per_s"].value;
  state.SetLabel("npm @hocuspocus/server 3.4.4, in memory, its own node process");
}
BENCHMARK(fanout_hocuspocus)->Arg(1)->Arg(10)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void fanout_keel(benchmark::State& state) {
  const auto where = static_cast<storage>(state.range(0));
  const keel_rooms server(where);
  if (!server.problem.empty()) return state.SkipWithError(server.problem.c_str());
  const auto room = fresh_room();
  (void)fanout(state, own_cpu_seconds, "y-websocket", server.url(room), room,
               static_cast<int>(state.range(1)));
  state.SetLabel(where == storage::memory     ? "keel::sync::rooms in memory"
                 : where == storage::postgres ? "on Postgres: INSERT + NOTIFY per update"
                                              : "on Postgres, across_processes off: INSERT per update");
}
BENCHMARK(fanout_keel)
    ->ArgsProduct({{0, 1, 2}, {1, 10}})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void fanout_relay(benchmark::State& state) {
  relay server;
  if (!server.problem.empty()) return state.SkipWithError(server.problem.c_str());
  (void)fanout(state, own_cpu_seconds, "y-websocket",
               "ws://127.0.0.1:" + std::to_string(server.server.port()) + "/relay", fresh_room(),
               static_cast<int>(state.range(0)));
  state.SetLabel("keel::net passing each message on, no Yjs: the clients' and transport's ceiling");
}
BENCHMARK(fanout_relay)->Arg(1)->Arg(10)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// Open loop at a multiple of Hocuspocus's updates/s with one writer: /0 keel in memory,
// /1 keel on Postgres, /2 Hocuspocus; then the multiple (1 or 5).
void fanout_paced(benchmark::State& state) {
  if (!hocuspocus_sent_per_s) return state.SkipWithError("no Hocuspocus figure to pace at");
  const auto which = state.range(0);
  const double rate = static_cast<double>(state.range(1)) * *hocuspocus_sent_per_s;
  const auto room = fresh_room();
  if (which == 2) {
    const hocuspocus peer;
    if (!peer.problem.empty()) return state.SkipWithError(peer.problem.c_str());
    (void)fanout(
        state, [&] { return process_cpu_seconds(peer.pid); }, "hocuspocus", peer.url(), room, 1, rate);
  } else {
    const keel_rooms server(which == 0 ? storage::memory : storage::postgres);
    if (!server.problem.empty()) return state.SkipWithError(server.problem.c_str());
    (void)fanout(state, own_cpu_seconds, "y-websocket", server.url(room), room, 1, rate);
  }
  state.counters["rate"] = rate;
  state.SetLabel(which == 0   ? "keel in memory, one writer, open loop at rate"
                 : which == 1 ? "keel on Postgres (INSERT + NOTIFY per update)"
                              : "npm @hocuspocus/server");
}
BENCHMARK(fanout_paced)
    ->Args({2, 1})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 5})
    ->Args({1, 5})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- join ------------------------------------------------------------------------------------
struct join_fixture {
  std::filesystem::path path;
  keel::bytes document;
  keel::bench::peer_run made;
};

std::filesystem::path join_path;  // removed at exit once made

const join_fixture& join_document() {
  static const join_fixture loaded = [] {
    join_fixture f;
    join_path = f.path =
        std::filesystem::temp_directory_path() / ("keel-sync-bench-" + std::to_string(::getpid()) + ".ydoc");
    f.made = keel::bench::run_peer_script("yjs_document.mjs",
                                          {trace_path, std::to_string(join_edits), f.path.string()});
    if (!f.made.problem.empty()) return f;
    std::ifstream in(f.path, std::ios::binary);
    f.document.assign(std::istreambuf_iterator<char>(in), {});
    return f;
  }();
  return loaded;
}

// On a thread of its own (/1), as the server's I/O threads run it, and on the main thread (/0).
// Run first in a fresh process, /0 is several times slower: read_update builds every struct of
// the document, and glibc hands the main heap's memory back to the system after each call, the
// next call faulting it in again; after the fan-out rows have grown the heap it is not.
void join_codec(benchmark::State& state) {
  const auto& f = join_document();
  if (f.document.empty()) return state.SkipWithError(f.made.problem.c_str());
  const keel::bytes empty_state_vector{0};
  std::vector<double> times;
  std::vector<double> vector_times;
  bool failed = false;
  const auto join = [&] {
    const auto started = std::chrono::steady_clock::now();
    auto vector = yjs::state_vector_from_update(f.document);
    const auto vector_done = std::chrono::steady_clock::now();
    auto missing = yjs::diff_update(f.document, empty_state_vector);
    const auto done = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::milli>(done - started).count());
    vector_times.push_back(std::chrono::duration<double, std::milli>(vector_done - started).count());
    failed = failed || !vector || !missing;
    if (missing) benchmark::DoNotOptimize(missing->data());
  };
  for (auto _ : state) {
    if (state.range(0) == 0) {
      join();
    } else {
      std::thread(join).join();
    }
  }
  if (failed) return state.SkipWithError("the document does not decode");
  std::sort(times.begin(), times.end());
  std::sort(vector_times.begin(), vector_times.end());
  state.counters["join_ms"] = times[times.size() / 2];
  state.counters["state_vector_ms"] = vector_times[vector_times.size() / 2];
  state.counters["document_bytes"] = static_cast<double>(f.document.size());
  state.counters["edits"] = join_edits;
  state.SetLabel(
      state.range(0) == 0
          ? "diff_update(document, empty state vector) + state_vector_from_update, main thread; median"
          : "the same on another thread, as the server's; median");
}
BENCHMARK(join_codec)->Arg(1)->Arg(0)->Iterations(20)->UseRealTime()->Unit(benchmark::kMillisecond);

void join_websocket(benchmark::State& state) {
  const auto& f = join_document();
  if (f.document.empty()) return state.SkipWithError(f.made.problem.c_str());
  const auto which = state.range(0);
  std::optional<keel_rooms> keel;
  std::optional<hocuspocus> peer;
  std::string protocol = "y-websocket";
  std::string url;
  const auto room = fresh_room();
  if (which < 2) {
    keel.emplace(which == 0 ? storage::memory : storage::postgres);
    if (!keel->problem.empty()) return state.SkipWithError(keel->problem.c_str());
    url = keel->url(room);
  } else {
    peer.emplace();
    if (!peer->problem.empty()) return state.SkipWithError(peer->problem.c_str());
    protocol = "hocuspocus";
    url = peer->url();
  }
  keel::bench::peer_run run;
  for (auto _ : state)
    run = keel::bench::run_peer_script("sync_join.mjs", {protocol, url, room, f.path.string(), "10"});
  const auto join = run.figure("join_ms");
  if (!join.value) return state.SkipWithError(join.problem.c_str());
  for (const char* figure : {"join_ms", "min_ms", "max_ms", "answer_bytes"}) {
    if (const auto value = run.figure(figure).value) state.counters[figure] = *value;
  }
  state.SetLabel(which == 0   ? "keel in memory; node client, step 1 sent to step 2 received, median of 10"
                 : which == 1 ? "keel on Postgres"
                              : "npm @hocuspocus/server 3.4.4 holding the same document");
}
BENCHMARK(join_websocket)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  // Without a Postgres the in-memory and Hocuspocus rows still run.
  auto postgres = keel::bench::postgres::start();
  if (postgres) {
    conninfo = postgres->conninfo;
    auto c = keel::pg::connection::connect(conninfo);
    if (!c || !sync::migrate(*c)) {
      std::fprintf(stderr, "the sync tables could not be made: the Postgres rows are skipped\n");
      conninfo.clear();
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (!join_path.empty()) std::filesystem::remove(join_path);
  return 0;
}
