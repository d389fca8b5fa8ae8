// docs/tsdb.md quotes this file; ctest runs it (examples.tsdb_quickstart).
#include <keel/pg/local_cluster.hpp>
#include <keel/tsdb.hpp>

#include <cstdio>

int main() {
  auto cluster = keel::pg::local_cluster::start().value();
  auto c = keel::pg::connection::connect(cluster.conninfo()).value();
  (void)keel::tsdb::migrate(c).value();

  // Times in milliseconds; 1-minute and 1-hour rollups are kept up to date on ingest.
  auto db = keel::tsdb::store::open(cluster.conninfo()).value();
  const auto cpu = db.series("cpu_celsius", {{"host", "web-1"}}).value();
  std::vector<std::int64_t> times;
  std::vector<double> values;
  for (int i = 0; i < 8640; ++i) {  // one day at 10 s
    times.push_back(1'700'006'400'000 + i * 10'000LL);
    values.push_back(40 + (i % 360) / 10.0);
  }
  (void)db.buffer(cpu, times, values).value();
  (void)db.flush().value();  // sealed into a compressed block in Postgres

  // Hourly max over the day, answered from the 1-hour rollup.
  const auto hours =
      db.aggregate(cpu, {.from = 1'700'006'400'000, .to = 1'700'092'800'000, .width = 3'600'000}).value();
  std::printf("%zu hours, first hour max %.1f\n", hours.size(), hours.front().max);
  return hours.size() == 24 && hours.front().max == 75.9 ? 0 : 1;
}
