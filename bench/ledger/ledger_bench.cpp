// keel::ledger benchmarks.
//   ./keel bench ledger
// Figures: transfers/s in memory (batches of 8,190, every transfer journaled, leaf-hashed and
// appended to the Merkle tree), transfers/s in Postgres (batches of 8,190, one transaction
// each), inclusion and consistency proofs generated + verified per second.
#include <keel/ledger.hpp>
#include <keel/ledger/pg_engine.hpp>
#include <keel/pg/local_cluster.hpp>

#include "support/postgres.hpp"

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>

#include <time.h>

namespace {

namespace ledger = keel::ledger;

std::string conninfo;
constexpr std::size_t batch_size = ledger::max_batch;
constexpr ledger::u128 account_count = 10'000;

std::vector<ledger::account> accounts() {
  std::vector<ledger::account> out;
  for (ledger::u128 id = 1; id <= account_count; ++id)
    out.push_back(
        {.id = id, .user_data = 0, .ledger = 1, .code = 1, .flags = 0, .timestamp = 0, .balances = {}});
  return out;
}

void create_accounts(ledger::engine& e) {
  const auto all = accounts();
  for (std::size_t at = 0; at < all.size(); at += batch_size) {
    const auto n = std::min(batch_size, all.size() - at);
    (void)e.create_accounts(std::span(all).subspan(at, n)).value();
  }
}

double thread_cpu_seconds() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// A batch of random transfers with fresh ids.
void fill_batch(std::vector<ledger::transfer>& batch, ledger::u128& next_id, std::mt19937_64& rng) {
  batch.resize(batch_size);
  for (auto& t : batch) {
    t = {};
    t.id = next_id++;
    t.debit_account_id = 1 + rng() % account_count;
    t.credit_account_id = 1 + (t.debit_account_id % account_count);
    t.amount = 1 + rng() % 1000;
    t.ledger = 1;
    t.code = 1;
  }
}

constexpr int memory_iterations = 40;

// Arg 1: the engine is told its capacity up front (memory_options::capacity), so the journal's
// storage is allocated and faulted in before the clock starts; arg 0 grows it while measuring.
void memory_transfers(benchmark::State& state) {
  const bool preallocated = state.range(0) != 0;
  ledger::memory_engine e({.clock = nullptr,
                           .capacity = preallocated ? std::uint64_t{account_count} +
                                                          std::uint64_t{memory_iterations} * batch_size + 64
                                                    : 0});
  create_accounts(e);
  std::vector<ledger::transfer> batch;
  ledger::u128 next_id = 1;
  std::mt19937_64 rng(42);
  double cpu_seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    fill_batch(batch, next_id, rng);
    state.ResumeTiming();
    const auto cpu_start = thread_cpu_seconds();
    auto results = e.create_transfers(batch);
    cpu_seconds += thread_cpu_seconds() - cpu_start;
    if (!results || (*results)[0] != ledger::transfer_result::ok) state.SkipWithError("transfer failed");
    benchmark::DoNotOptimize(results);
  }
  const auto transfers = static_cast<double>(state.iterations()) * static_cast<double>(batch_size);
  state.counters["transfers_per_second"] = benchmark::Counter(transfers, benchmark::Counter::kIsRate);
  // The same per second of this thread's CPU time: what one core does, whatever else the machine
  // is running (wall-clock rates drop when other processes take the cores).
  state.counters["transfers_per_cpu_second"] = transfers / cpu_seconds;
}
// Fixed iterations: the engine keeps every transfer in memory.
BENCHMARK(memory_transfers)
    ->ArgName("preallocated")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(memory_iterations)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void pg_transfers(benchmark::State& state) {
  auto c = keel::pg::connection::connect(conninfo).value();
  (void)c.execute(
      "DROP SCHEMA IF EXISTS ledger_bench CASCADE; CREATE SCHEMA ledger_bench; SET search_path = "
      "ledger_bench");
  if (!ledger::migrate(c)) {
    state.SkipWithError("migration failed");
    return;
  }
  ledger::pg_engine e(c);
  create_accounts(e);
  std::vector<ledger::transfer> batch;
  ledger::u128 next_id = 1;
  std::mt19937_64 rng(42);
  for (auto _ : state) {
    state.PauseTiming();
    fill_batch(batch, next_id, rng);
    state.ResumeTiming();
    auto results = e.create_transfers(batch);
    if (!results || (*results)[0] != ledger::transfer_result::ok) {
      state.SkipWithError(("transfer failed: " + c.last_error().to_string()).c_str());
      break;
    }
  }
  state.counters["transfers_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(batch_size), benchmark::Counter::kIsRate);
  (void)c.execute("DROP SCHEMA ledger_bench CASCADE");
}
BENCHMARK(pg_transfers)->Iterations(12)->Unit(benchmark::kMillisecond)->UseRealTime();

// A tree of 2^20 leaves; random inclusion proofs generated and verified.
const ledger::merkle_tree& big_tree() {
  static const ledger::merkle_tree tree = [] {
    ledger::merkle_tree t;
    for (std::uint64_t i = 0; i < (1U << 20U); ++i)
      t.append(ledger::leaf_hash(keel::bytes_view(reinterpret_cast<const std::uint8_t*>(&i), sizeof i)));
    return t;
  }();
  return tree;
}

void inclusion_proofs(benchmark::State& state) {
  const auto& tree = big_tree();
  const auto size = tree.size();
  const auto root = tree.root();
  std::mt19937_64 rng(7);
  for (auto _ : state) {
    const auto index = rng() % size;
    const auto proof = ledger::to_bytes(tree.inclusion_proof(index, size).value());
    const auto leaf = tree.leaf(index).value();
    if (!ledger::verify_inclusion(index, size, leaf, proof, root)) state.SkipWithError("proof failed");
  }
  state.counters["proofs_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(inclusion_proofs);

void consistency_proofs(benchmark::State& state) {
  const auto& tree = big_tree();
  const auto size = tree.size();
  const auto root = tree.root();
  std::mt19937_64 rng(9);
  for (auto _ : state) {
    const auto old_size = 1 + rng() % size;
    const auto proof = ledger::to_bytes(tree.consistency_proof(old_size, size).value());
    const auto old_root = tree.root(old_size).value();
    if (!ledger::verify_consistency(old_size, size, old_root, root, proof))
      state.SkipWithError("proof failed");
  }
  state.counters["proofs_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(consistency_proofs);

// The cost floor of journaling: one leaf hash of a 118-byte entry.
void leaf_hashes(benchmark::State& state) {
  ledger::encoded_entry entry{};
  std::uint64_t i = 0;
  for (auto _ : state) {
    entry[10] = static_cast<std::uint8_t>(++i);
    benchmark::DoNotOptimize(ledger::leaf_hash(entry));
  }
  state.counters["hashes_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(leaf_hashes);

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
