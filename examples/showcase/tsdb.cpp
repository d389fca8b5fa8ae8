// keel::tsdb in the showcase: a week of demo temperatures, retention and compaction on the
// library's scheduler, and keel::tsdb_http's routes and plot page (raw against LTTB):
//   POST /api/tsdb/ingest   {"metric": "m", "labels": {"k": "v"}, "points": [[t_ms, value], ...]}
//   GET  /api/tsdb/series?metric=m
//   GET  /api/tsdb/query?series=1&from=..&to=..&step=..&fill=none|locf|linear&max_gap=n
//   GET  /api/tsdb/plot?series=1&points=300
//   GET  /tsdb?points=300
#include <keel/net.hpp>
#include <keel/tsdb.hpp>
#include <keel/tsdb_http.hpp>

#include "showcase.hpp"

#include <cmath>
#include <memory>
#include <optional>
#include <vector>

namespace showcase {
namespace {

constexpr std::int64_t minute = 60'000;
constexpr std::int64_t demo_start = 1'700'006'400'000;  // 2023-11-15 00:00 UTC
constexpr std::int64_t demo_points = 7 * 24 * 60;       // a week at 60 s

/// The store the routes serve from, its demo series, and the maintenance schedule.
struct shared_store {
  explicit shared_store(keel::tsdb::store s) : store(std::move(s)) {}
  keel::tsdb::store store;
  std::int64_t demo_series = 0;
  std::optional<keel::tsdb::maintenance> maintenance;  // retention and compaction, every minute
};

/// A decimal-looking demo temperature: a daily cycle, weather drift and sensor noise, one decimal.
keel::result<void> seed_demo(shared_store& s) {
  auto id = s.store.series("demo_temperature", {{"site", "showcase"}, {"unit", "celsius"}});
  if (!id) return id.error();
  s.demo_series = *id;
  auto existing = s.store.aggregate(
      *id, {.from = demo_start, .to = demo_start + demo_points * minute, .width = demo_points * minute});
  if (!existing) return existing.error();
  if (!existing->empty() && existing->front().count > 0) return {};
  std::vector<std::int64_t> times;
  std::vector<double> values;
  std::uint64_t state = 0x9E3779B97F4A7C15ULL;
  double drift = 0;
  for (std::int64_t i = 0; i < demo_points; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const double noise = static_cast<double>(state >> 40) / static_cast<double>(1ULL << 24) - 0.5;
    drift = 0.999 * drift + 0.05 * noise;
    const double day = std::sin(2 * 3.141592653589793 * static_cast<double>(i % 1440) / 1440.0);
    times.push_back(demo_start + i * minute);
    values.push_back(std::round((12.0 + 6.0 * day + 20 * drift + 0.4 * noise) * 10) / 10);
  }
  if (auto r = s.store.buffer(*id, times, values); !r) return r;
  return s.store.flush();
}

}  // namespace

keel::result<void> mount_tsdb(context& ctx) {
  {
    auto c = ctx.pool.acquire();
    if (!c) return c.error();
    if (auto migrated = keel::tsdb::migrate(**c); !migrated) return migrated.error();
  }
  auto opened = keel::tsdb::store::open(ctx.conninfo);
  if (!opened) return opened.error();
  auto shared = std::make_shared<shared_store>(std::move(*opened));
  if (auto seeded = seed_demo(*shared); !seeded) return seeded;
  // Every showcase process may start one; one per database runs (tsdb_maintenance_* on /metrics).
  auto maintenance =
      keel::tsdb::maintenance::start({.conninfo = ctx.conninfo, .metrics = &ctx.server.metrics()});
  if (!maintenance) return maintenance.error();
  shared->maintenance.emplace(std::move(*maintenance));

  // The store belongs to the routes while the server runs; the middleware holds it (and the
  // maintenance) alive until the server's routes are destroyed.
  ctx.server.use(
      [shared](keel::net::request& req, const keel::net::next_handler& next) { return next(req); });
  // The page and the API; writes from loopback only, the library's default.
  keel::tsdb_http::mount(ctx.server, shared->store, {.default_series = shared->demo_series});

  ctx.endpoints.push_back({"GET", "/tsdb", "keel::tsdb: a week of demo temperatures, raw vs LTTB (SVG)"});
  ctx.endpoints.push_back(
      {"POST", "/api/tsdb/ingest", "appends {\"metric\", \"labels\", \"points\": [[t_ms, v]]}"});
  ctx.endpoints.push_back({"GET", "/api/tsdb/series?metric=demo_temperature", "series of a metric"});
  ctx.endpoints.push_back({"GET", "/api/tsdb/query?series=1&from=1700006400000&to=1700092800000&step=3600000",
                           "hourly buckets (from rollups when aligned)"});
  ctx.endpoints.push_back({"GET", "/api/tsdb/plot?series=1&points=300", "LTTB-downsampled points as JSON"});
  return {};
}

}  // namespace showcase
