// keel::crdt benchmarks, on the sequential editing trace of the tests (tests/data/crdt,
// seph-blog1: 137,993 edits to a 56,769-character blog post).
//   ./keel bench crdt
// Figures:
// - `replay`: the trace into a keel::crdt::text, one edit per operation: `ops_per_second`, `ms`;
// - `save` / `load` of the final document: `ms`, `encoded_bytes`; `memory_bytes`, what the
//   final document holds on the heap (malloc's count before and after building it);
// - `peer_yjs`: npm yjs replaying the same trace in the same run (bench/peers/yjs_replay.mjs),
//   with its encoded size and load time, and `keel_speedup`, Yjs's time over keel's.
#include <keel/crdt.hpp>

#include "support/peers.hpp"

#include <benchmark/benchmark.h>
#include <boost/json.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <malloc.h>

namespace {

namespace crdt = keel::crdt;

const std::string trace_path = KEEL_BENCH_DATA_DIR "/crdt/seph-blog1.json.gz";

struct patch {
  std::size_t position;
  std::size_t deleted;
  std::string inserted;
};

struct trace {
  std::vector<patch> patches;
  std::string end_content;
};

std::string gunzip(const std::string& path) {
  FILE* pipe = ::popen(("gzip -dc '" + path + "'").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run gzip");
  std::string out;
  std::array<char, 65536> chunk{};
  while (const auto n = std::fread(chunk.data(), 1, chunk.size(), pipe)) out.append(chunk.data(), n);
  if (::pclose(pipe) != 0) throw std::runtime_error("cannot read " + path);
  return out;
}

const trace& sequential_trace() {
  static const trace loaded = [] {
    trace t;
    const auto json = boost::json::parse(gunzip(trace_path));
    for (const auto& txn : json.at("txns").as_array()) {
      for (const auto& p : txn.at("patches").as_array()) {
        const auto& fields = p.as_array();
        const auto& inserted = fields[2].as_string();
        t.patches.push_back({static_cast<std::size_t>(fields[0].to_number<std::int64_t>()),
                             static_cast<std::size_t>(fields[1].to_number<std::int64_t>()),
                             std::string(inserted.data(), inserted.size())});
      }
    }
    const auto& end = json.at("endContent").as_string();
    t.end_content.assign(end.data(), end.size());
    return t;
  }();
  return loaded;
}

crdt::text replay(const trace& t) {
  crdt::text doc(1);
  for (const auto& p : t.patches) {
    if (p.deleted > 0) (void)doc.erase(p.position, p.deleted).value();
    if (!p.inserted.empty()) (void)doc.insert(p.position, p.inserted).value();
  }
  return doc;
}

double milliseconds_since(std::chrono::steady_clock::time_point started) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
}

void replay_trace(benchmark::State& state) {
  const auto& t = sequential_trace();
  double best_ms = 1e300;
  for (auto _ : state) {
    const auto started = std::chrono::steady_clock::now();
    auto doc = replay(t);
    best_ms = std::min(best_ms, milliseconds_since(started));
    if (doc.size() != t.end_content.size() && doc.str() != t.end_content)
      return state.SkipWithError("the replay ended with a different text");
    benchmark::DoNotOptimize(doc);
  }
  state.counters["ops_per_second"] = static_cast<double>(t.patches.size()) / (best_ms / 1e3);
  state.counters["ms"] = best_ms;
  state.counters["ops"] = static_cast<double>(t.patches.size());
  state.SetLabel("seph-blog1, one edit per operation; ms: the best iteration");
}
BENCHMARK(replay_trace)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

void save_document(benchmark::State& state) {
  const auto started_heap = ::mallinfo2().uordblks;
  const auto doc = replay(sequential_trace());
  const auto heap = ::mallinfo2().uordblks - started_heap;
  keel::bytes saved;
  for (auto _ : state) {
    saved = doc.save();
    benchmark::DoNotOptimize(saved.data());
  }
  state.counters["encoded_bytes"] = static_cast<double>(saved.size());
  state.counters["memory_bytes"] = static_cast<double>(heap);
  state.counters["items"] = static_cast<double>(doc.item_count());
  state.SetLabel("the final seph-blog1 document");
}
BENCHMARK(save_document)->UseRealTime()->Unit(benchmark::kMillisecond);

void load_document(benchmark::State& state) {
  const auto& t = sequential_trace();
  const auto original = replay(t);
  const auto saved = original.save();
  for (auto _ : state) {
    auto doc = crdt::text::load(saved, 2);
    if (!doc || doc->size() != original.size()) return state.SkipWithError("load failed");
    benchmark::DoNotOptimize(doc);
  }
  state.counters["encoded_bytes"] = static_cast<double>(saved.size());
  state.SetLabel("the final seph-blog1 document");
}
BENCHMARK(load_document)->UseRealTime()->Unit(benchmark::kMillisecond);

void peer_yjs(benchmark::State& state) {
  keel::bench::peer_figure seconds, encoded, load_ms;
  for (auto _ : state) {
    seconds = keel::bench::run_peer("yjs_replay.mjs", {trace_path, "3"}, "seconds");
  }
  if (!seconds.value) return state.SkipWithError(seconds.problem.c_str());
  state.counters["ms"] = *seconds.value * 1e3;
  state.counters["ops_per_second"] = static_cast<double>(sequential_trace().patches.size()) / *seconds.value;
  state.SetLabel("npm yjs 13.6.33, the same trace, one transaction per edit; ms: the best of 3");
}
BENCHMARK(peer_yjs)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
