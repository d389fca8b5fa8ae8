// keel::dsl benchmarks, on the Chinook-like database of the tests (tests/data/dsl) in a private
// Postgres (or KEEL_DATABASE_URL).
//   ./keel bench dsl
// Figures:
// - `queries_per_second` and `us_per_query` compiling the differential corpus (98 queries; the
//   same texts prqlc compiles in the tests), cold (no cache) for an unrestricted role and for a
//   role whose policy filters every table, and cached (a hit: the compiled query shared);
// - npm's prqlc compiling the same corpus in the same run (bench/peers/prqlc_compile.mjs);
// - end to end: a policy-filtered query (compile from the cache, bind, run) against the same
//   SQL written by hand through keel::pg, interleaved in one loop: `overhead_percent`.
#include <keel/dsl.hpp>
#include <keel/dsl_pg.hpp>
#include <keel/pg/connection.hpp>

#include "support/peers.hpp"
#include "support/postgres.hpp"

#include <benchmark/benchmark.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace dsl = keel::dsl;

std::string conninfo;
const std::string corpus_path = KEEL_BENCH_DATA_DIR "/dsl/corpus.prql";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<std::string> corpus() {
  const auto text = read_file(corpus_path);
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const auto next = text.find("\n# ---\n", at);
    const auto block = text.substr(at, next == std::string::npos ? std::string::npos : next - at);
    at = next == std::string::npos ? text.size() : next + 7;
    if (block.starts_with("# name: ")) out.push_back(block.substr(block.find('\n') + 1));
  }
  return out;
}

struct fixture {
  std::vector<std::string> queries = corpus();
  std::optional<dsl::compiler> compiler;
  dsl::session admin{.role = "admin"};
  dsl::session tenant{.role = "tenant", .attributes = {{"country", std::string("USA")}}};
};

fixture& shared() {
  static fixture f = [] {
    fixture made;
    auto conn = keel::pg::connection::connect(conninfo).value();
    auto cat = dsl::introspect(conn, {"keel_dsl_bench"}).value();
    dsl::role admin{.name = "admin"};
    dsl::role tenant{.name = "tenant"};
    cat.attributes.push_back({.name = "country", .type = dsl::value_type::text});
    for (const auto& t : cat.tables) {
      admin.grants.push_back({.table = t.name, .columns = {"*"}, .aggregates = true});
      // A filter on every table (by country where it has one), so every reference is grafted.
      std::string filter = "true";
      if (t.find("country") != nullptr) filter = "country == @country";
      if (t.find("billing_country") != nullptr) filter = "billing_country == @country";
      tenant.grants.push_back({.table = t.name, .columns = {"*"}, .row_filter = filter, .aggregates = true});
    }
    cat.roles = {admin, tenant};
    made.compiler = dsl::compiler::create(std::move(cat)).value();
    return made;
  }();
  return f;
}

void compile_corpus(benchmark::State& state, const dsl::session& who, bool cached) {
  auto& f = shared();
  std::size_t compiled = 0;
  if (cached) {
    for (const auto& q : f.queries) (void)f.compiler->compile(q, who);
  }
  const auto started = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (const auto& q : f.queries) {
      auto result = cached ? f.compiler->compile(q, who) : f.compiler->compile_uncached(q, who);
      if (!result) return state.SkipWithError(result.error().message.c_str());
      benchmark::DoNotOptimize(result);
      ++compiled;
    }
  }
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  state.counters["queries_per_second"] = static_cast<double>(compiled) / seconds;
  state.counters["us_per_query"] = seconds * 1e6 / static_cast<double>(compiled);
}

void compile_cold(benchmark::State& state) {
  compile_corpus(state, shared().admin, false);
  state.SetLabel("98 corpus queries, no cache, unrestricted role");
}
BENCHMARK(compile_cold)->Unit(benchmark::kMillisecond);

void compile_cold_policy(benchmark::State& state) {
  compile_corpus(state, shared().tenant, false);
  state.SetLabel("98 corpus queries, no cache, a row filter grafted on every table");
}
BENCHMARK(compile_cold_policy)->Unit(benchmark::kMillisecond);

void compile_cached(benchmark::State& state) {
  compile_corpus(state, shared().tenant, true);
  state.SetLabel("98 corpus queries, from the cache");
}
BENCHMARK(compile_cached)->Unit(benchmark::kMicrosecond);

void peer_prqlc(benchmark::State& state) {
  keel::bench::peer_figure figure;
  for (auto _ : state)
    figure = keel::bench::run_peer("prqlc_compile.mjs", {corpus_path, "20"}, "queries_per_second");
  if (!figure.value) return state.SkipWithError(figure.problem.c_str());
  state.counters["queries_per_second"] = *figure.value;
  state.counters["us_per_query"] = 1e6 / *figure.value;
  state.SetLabel("npm prqlc 0.13.14 (WebAssembly), the same corpus");
}
BENCHMARK(peer_prqlc)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same question through keel::dsl under a policy and as hand-written SQL, interleaved.
void end_to_end_overhead(benchmark::State& state) {
  auto& f = shared();
  auto conn = keel::pg::connection::connect(conninfo).value();
  const std::string query =
      "from invoices | filter total > $1 | select {invoice_id, customer_id, invoice_date, total} | sort "
      "{-total, "
      "invoice_id} | take 20";
  const std::string by_hand =
      "SELECT invoice_id, customer_id, invoice_date, total FROM invoices WHERE billing_country = $1 AND "
      "total > $2 "
      "ORDER BY total DESC, invoice_id LIMIT 20";
  const dsl::arguments args{.positional = {"5"}};
  using clock = std::chrono::steady_clock;
  clock::duration through_dsl{};
  clock::duration through_sql{};
  std::size_t rows = 0;
  for (auto _ : state) {
    const auto a = clock::now();
    auto compiled = f.compiler->compile(query, f.tenant);
    if (!compiled) return state.SkipWithError(compiled.error().message.c_str());
    auto ours = dsl::run(conn, **compiled, f.tenant, args);
    const auto b = clock::now();
    auto theirs = conn.query(by_hand, std::string("USA"), std::string("5"));
    const auto c = clock::now();
    if (!ours || !theirs || ours->size() != theirs->size())
      return state.SkipWithError("the two answers differ");
    rows += ours->size();
    through_dsl += b - a;
    through_sql += c - b;
  }
  const auto n = static_cast<double>(state.iterations());
  const auto us = [&](clock::duration d) { return std::chrono::duration<double, std::micro>(d).count() / n; };
  state.counters["dsl_us"] = us(through_dsl);
  state.counters["sql_us"] = us(through_sql);
  state.counters["overhead_percent"] = 100.0 * (us(through_dsl) / us(through_sql) - 1.0);
  state.counters["rows"] = static_cast<double>(rows) / n;
  state.SetLabel("policy-filtered invoices, top 20, compile (cached) + bind + run vs keel::pg");
}
BENCHMARK(end_to_end_overhead)->Iterations(3000)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  auto server = keel::bench::postgres::start();
  if (!server) return 1;
  // The music store in a schema of its own (a KEEL_DATABASE_URL server keeps its other tables).
  {
    auto conn = keel::pg::connection::connect(server->conninfo).value();
    (void)conn.execute("CREATE SCHEMA IF NOT EXISTS keel_dsl_bench").value();
  }
  conninfo = server->conninfo;
  if (conninfo.starts_with("postgres")) {
    conninfo.append(conninfo.find('?') == std::string::npos ? "?" : "&")
        .append("options=-csearch_path%3Dkeel_dsl_bench");
  } else {
    conninfo.append(" options='-csearch_path=keel_dsl_bench'");
  }
  {
    auto conn = keel::pg::connection::connect(conninfo).value();
    (void)conn.execute(read_file(KEEL_BENCH_DATA_DIR "/dsl/chinook.sql")).value();
    (void)conn.execute("ANALYZE").value();
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
