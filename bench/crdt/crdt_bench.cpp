// keel::crdt benchmarks, on the sequential editing trace of the tests (tests/data/crdt,
// seph-blog1: 137,993 edits to a 56,769-character blog post).
//   ./keel bench crdt
// Figures:
// - `replay_trace/1`: the trace into a keel::crdt::text, one edit per operation: `ops_per_second`,
//   `ms`; `/0` the same with no undo history kept (what keeping it costs);
// - `save` / `load` of the final document: `ms`, `encoded_bytes`; `memory_bytes`, what the
//   final document holds on the heap (malloc's count before and after building it);
// - `peer_yjs`: npm yjs replaying the same trace in the same run (bench/peers/yjs_replay.mjs),
//   with its encoded size and load time;
// - the Yjs codec (keel::crdt::yjs) on the updates npm yjs writes replaying the same trace
//   (bench/peers/yjs_updates.mjs makes them, one per edit, and times Yjs's own functions on
//   them in the same run): `bytes_per_second` of input merging runs of 64 consecutive updates,
//   diffing the final document against the state vector after half the edits, and reading the
//   state vector of the final document; `peer_yjs_codec` has Yjs's figures for the same work.
#include <keel/crdt.hpp>

#include "support/peers.hpp"

#include <benchmark/benchmark.h>
#include <boost/json.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <malloc.h>
#include <unistd.h>

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

crdt::text replay(const trace& t, bool keep_undo = true) {
  crdt::text doc(1);
  if (!keep_undo) doc.set_undo_limit(0);
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
  const bool keep_undo = state.range(0) != 0;
  double best_ms = 1e300;
  for (auto _ : state) {
    const auto started = std::chrono::steady_clock::now();
    auto doc = replay(t, keep_undo);
    best_ms = std::min(best_ms, milliseconds_since(started));
    if (doc.str() != t.end_content) return state.SkipWithError("the replay ended with a different text");
    benchmark::DoNotOptimize(doc);
  }
  state.counters["ops_per_second"] = static_cast<double>(t.patches.size()) / (best_ms / 1e3);
  state.counters["ms"] = best_ms;
  state.counters["ops"] = static_cast<double>(t.patches.size());
  state.SetLabel(keep_undo
                     ? "seph-blog1, one edit per operation, undo kept (1,000 steps); ms: the best iteration"
                     : "the same, no undo kept");
}
BENCHMARK(replay_trace)->Arg(1)->Arg(0)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

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
  keel::bench::peer_run run;
  for (auto _ : state) run = keel::bench::run_peer_script("yjs_replay.mjs", {trace_path, "3"});
  const auto seconds = run.figure("seconds");
  if (!seconds.value) return state.SkipWithError(seconds.problem.c_str());
  state.counters["ms"] = *seconds.value * 1e3;
  state.counters["ops_per_second"] = static_cast<double>(sequential_trace().patches.size()) / *seconds.value;
  for (const char* figure : {"encoded_bytes", "load_ms", "save_ms"}) {
    if (const auto value = run.figure(figure).value) state.counters[figure] = *value;
  }
  state.SetLabel("npm yjs 13.6.33, the same trace, one transaction per edit; ms: the best of 3");
}
BENCHMARK(peer_yjs)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- the Yjs codec ----------------------------------------------------------------------------
constexpr std::size_t merge_group = 64;

struct yjs_fixture {
  std::vector<keel::bytes> updates;
  std::size_t update_bytes = 0;
  keel::bytes final_document;
  keel::bytes half_state;
  keel::bench::peer_run peer;
};

keel::bytes read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

const yjs_fixture& yjs_updates() {
  static const yjs_fixture loaded = [] {
    yjs_fixture f;
    const auto prefix =
        std::filesystem::temp_directory_path() / ("keel-crdt-bench-" + std::to_string(::getpid()));
    f.peer = keel::bench::run_peer_script("yjs_updates.mjs",
                                          {trace_path, prefix.string(), std::to_string(merge_group)});
    if (!f.peer.problem.empty()) return f;
    const auto packed = read_bytes(prefix.string() + ".updates");
    for (std::size_t at = 0; at + 4 <= packed.size();) {
      const std::size_t length = packed[at] | (packed[at + 1] << 8U) | (packed[at + 2] << 16U) |
                                 (static_cast<std::size_t>(packed[at + 3]) << 24U);
      f.updates.emplace_back(packed.begin() + static_cast<std::ptrdiff_t>(at + 4),
                             packed.begin() + static_cast<std::ptrdiff_t>(at + 4 + length));
      f.update_bytes += length;
      at += 4 + length;
    }
    f.final_document = read_bytes(prefix.string() + ".final");
    f.half_state = read_bytes(prefix.string() + ".half");
    for (const char* suffix : {".updates", ".final", ".half"})
      std::filesystem::remove(prefix.string() + suffix);
    return f;
  }();
  return loaded;
}

void yjs_merge(benchmark::State& state) {
  const auto& f = yjs_updates();
  if (f.updates.empty()) return state.SkipWithError(f.peer.problem.c_str());
  std::vector<keel::bytes_view> views(f.updates.begin(), f.updates.end());
  for (auto _ : state) {
    for (std::size_t at = 0; at < views.size(); at += merge_group) {
      const auto n = std::min(merge_group, views.size() - at);
      auto merged = crdt::yjs::merge_updates(std::span<const keel::bytes_view>(views).subspan(at, n));
      if (!merged) return state.SkipWithError("merge failed");
      benchmark::DoNotOptimize(merged->data());
    }
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(f.update_bytes));
  state.counters["updates"] = static_cast<double>(f.updates.size());
  state.SetLabel("Yjs's per-edit updates of seph-blog1, merged 64 at a time");
}
BENCHMARK(yjs_merge)->UseRealTime()->Unit(benchmark::kMillisecond);

void yjs_diff(benchmark::State& state) {
  const auto& f = yjs_updates();
  if (f.updates.empty()) return state.SkipWithError(f.peer.problem.c_str());
  for (auto _ : state) {
    auto diff = crdt::yjs::diff_update(f.final_document, f.half_state);
    if (!diff) return state.SkipWithError("diff failed");
    benchmark::DoNotOptimize(diff->data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(f.final_document.size()));
  state.SetLabel("the final document against the state after half the edits");
}
BENCHMARK(yjs_diff)->UseRealTime()->Unit(benchmark::kMillisecond);

void yjs_state_vector(benchmark::State& state) {
  const auto& f = yjs_updates();
  if (f.updates.empty()) return state.SkipWithError(f.peer.problem.c_str());
  for (auto _ : state) {
    auto sv = crdt::yjs::state_vector_from_update(f.final_document);
    if (!sv) return state.SkipWithError("state vector failed");
    benchmark::DoNotOptimize(sv->data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(f.final_document.size()));
  state.SetLabel("of the final document");
}
BENCHMARK(yjs_state_vector)->UseRealTime()->Unit(benchmark::kMillisecond);

void peer_yjs_codec(benchmark::State& state) {
  const auto& f = yjs_updates();
  for (auto _ : state) benchmark::DoNotOptimize(f.peer.output.data());
  const auto merge = f.peer.figure("merge_bytes_per_second");
  const auto diff = f.peer.figure("diff_bytes_per_second");
  const auto sv = f.peer.figure("state_vector_bytes_per_second");
  if (!merge.value || !diff.value || !sv.value) return state.SkipWithError(merge.problem.c_str());
  state.counters["merge_bytes_per_second"] = *merge.value;
  state.counters["diff_bytes_per_second"] = *diff.value;
  state.counters["state_vector_bytes_per_second"] = *sv.value;
  state.SetLabel(
      "npm yjs 13.6.33: Y.mergeUpdates, Y.diffUpdate, Y.encodeStateVectorFromUpdate on the same updates");
}
BENCHMARK(peer_yjs_codec)->Iterations(1)->UseRealTime();

}  // namespace
