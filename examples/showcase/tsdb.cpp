// keel::tsdb in the showcase: ingest and query routes over HTTP, and a page that plots a series
// raw against its LTTB downsampling as an inline SVG (no scripts or assets from elsewhere).
//   POST /api/tsdb/ingest   {"metric": "m", "labels": {"k": "v"}, "points": [[t_ms, value], ...]}
//   GET  /api/tsdb/series?metric=m
//   GET  /api/tsdb/query?series=1&from=..&to=..&step=..&fill=none|locf|linear&max_gap=n
//   GET  /api/tsdb/plot?series=1&points=300
//   GET  /tsdb?points=300
#include <keel/tsdb.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace showcase {
namespace {

constexpr std::int64_t minute = 60'000;
constexpr std::int64_t demo_start = 1'700'006'400'000;  // 2023-11-15 00:00 UTC
constexpr std::int64_t demo_points = 7 * 24 * 60;       // a week at 60 s

/// The store and its lock: a store is one connection and not thread-safe; requests take turns.
struct shared_store {
  explicit shared_store(keel::tsdb::store s) : store(std::move(s)) {}
  std::mutex lock;
  keel::tsdb::store store;
  std::int64_t demo_series = 0;
  std::optional<keel::tsdb::maintenance> maintenance;  // retention and compaction, every minute
};

std::optional<std::int64_t> int_param(const keel::net::request& req, std::string_view name) {
  const auto text = req.query_param(name);
  if (!text) return std::nullopt;
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size()) return std::nullopt;
  return value;
}

keel::net::response bad_request(std::string_view detail) {
  return keel::net::error_response(keel::net::status::bad_request, "invalid request", detail);
}

boost::json::value number_or_null(double v) {
  if (std::isfinite(v)) return v;
  return nullptr;
}

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

std::string svg_polyline(std::span<const std::int64_t> t, std::span<const double> v,
                         std::span<const std::size_t> picks, std::int64_t t0, std::int64_t t1, double lo,
                         double hi, const char* id, const char* style) {
  std::string out = "<polyline id=\"";
  out += id;
  out += "\" fill=\"none\" ";
  out += style;
  out += " points=\"";
  char buffer[64];
  // Unsigned differences: a series may hold times from both ends of int64 (t0 <= every t[i] <= t1).
  auto since_t0 = [t0](std::int64_t at) {
    return static_cast<double>(static_cast<std::uint64_t>(at) - static_cast<std::uint64_t>(t0));
  };
  const double span_t = std::max(since_t0(t1), 1.0);
  const double span_v = hi > lo ? hi - lo : 1;
  for (const auto i : picks) {
    if (!std::isfinite(v[i])) continue;
    const double x = 40 + 900 * since_t0(t[i]) / span_t;
    const double y = 20 + 340 * (1 - (v[i] - lo) / span_v);
    const int n = std::snprintf(buffer, sizeof buffer, "%.1f,%.1f ", x, y);
    out.append(buffer, static_cast<std::size_t>(n));
  }
  out += "\"/>";
  return out;
}

std::string plot_page(shared_store& s, std::int64_t series, std::size_t points) {
  std::vector<std::int64_t> t;
  std::vector<double> v;
  {
    std::lock_guard guard(s.lock);
    auto scan = s.store.scan(series, std::numeric_limits<std::int64_t>::min(),
                             std::numeric_limits<std::int64_t>::max());
    if (scan) scan->drain(t, v);
  }
  std::string html =
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>keel::tsdb plot</title><style>"
      "body{font-family:system-ui,sans-serif;margin:2em;color:#222}svg{border:1px solid #ddd;background:#fff}"
      ".raw{color:#bbb}.lttb{color:#1565c0}</style></head><body><h1>keel::tsdb: raw vs LTTB</h1>";
  if (t.empty()) return html + "<p id=\"empty\">No points in this series.</p></body></html>";
  const auto picks = keel::tsdb::lttb(t, v, points);
  std::vector<std::size_t> all(t.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  double lo = std::numeric_limits<double>::infinity();
  double hi = -lo;
  for (const double x : v) {
    if (!std::isfinite(x)) continue;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  html += "<p><span class=\"raw\">&#9632; raw: <b id=\"raw-count\">" + std::to_string(t.size()) +
          "</b> points</span> &nbsp; <span class=\"lttb\">&#9632; LTTB: <b id=\"lttb-count\">" +
          std::to_string(picks.size()) + "</b> points</span></p>";
  html +=
      "<svg id=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"380\" viewBox=\"0 0 960 "
      "380\">";
  html += svg_polyline(t, v, all, t.front(), t.back(), lo, hi, "raw", "stroke=\"#bbb\" stroke-width=\"1\"");
  html += svg_polyline(t, v, picks, t.front(), t.back(), lo, hi, "lttb",
                       "stroke=\"#1565c0\" stroke-width=\"1.5\"");
  char axis[160];
  std::snprintf(axis, sizeof axis,
                "<text x=\"4\" y=\"24\" font-size=\"11\">%.1f</text><text x=\"4\" y=\"362\" "
                "font-size=\"11\">%.1f</text>",
                hi, lo);
  html += axis;
  html +=
      "</svg><p>Try <a href=\"?points=50\">50</a>, <a href=\"?points=300\">300</a>, "
      "<a href=\"?points=1000\">1000</a> points.</p>"
      "<script>document.getElementById('plot').dataset.ready = 'true';</script></body></html>";
  return html;
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

  ctx.server.post(
      "/api/tsdb/ingest",
      keel::net::json_handler([shared](const keel::net::request&, const boost::json::value& body) {
        const auto* o = body.if_object();
        const auto* metric = o ? o->if_contains("metric") : nullptr;
        const auto* points = o ? o->if_contains("points") : nullptr;
        if (metric == nullptr || !metric->is_string() || points == nullptr || !points->is_array())
          return bad_request(
              R"(send {"metric": "name", "labels": {"k": "v"}, "points": [[time_ms, value], ...]})");
        std::vector<keel::tsdb::label> labels;
        if (const auto* l = o->if_contains("labels"); l != nullptr && l->is_object()) {
          for (const auto& [k, v] : l->as_object()) {
            if (!v.is_string()) return bad_request("label values must be strings");
            labels.push_back({std::string(k), std::string(v.as_string())});
          }
        }
        std::vector<std::int64_t> times;
        std::vector<double> values;
        for (const auto& p : points->as_array()) {
          const auto* pair = p.if_array();
          if (pair == nullptr || pair->size() != 2 || !pair->at(0).is_number() || !pair->at(1).is_number())
            return bad_request("each point is [time_ms, value] with numbers");
          boost::system::error_code ec;
          const auto t = pair->at(0).to_number<std::int64_t>(ec);
          if (ec) return bad_request("times are integers (milliseconds since 1970)");
          times.push_back(t);
          values.push_back(pair->at(1).to_number<double>());
        }
        std::lock_guard guard(shared->lock);
        auto id = shared->store.series(std::string_view(metric->as_string()), labels);
        if (!id) return keel::net::error_response(keel::net::status::bad_request, id.error());
        if (auto r = shared->store.buffer(*id, times, values); !r)
          return keel::net::error_response(keel::net::status::conflict, r.error());
        if (auto r = shared->store.flush(); !r)
          return keel::net::error_response(keel::net::status::internal_server_error, r.error());
        return keel::net::json_response(boost::json::object{{"series", *id}, {"accepted", times.size()}},
                                        keel::net::status::created);
      }));

  ctx.server.get("/api/tsdb/series", [shared](const keel::net::request& req) {
    const auto metric = req.query_param("metric");
    if (!metric) return bad_request("pass ?metric=name");
    std::lock_guard guard(shared->lock);
    auto found = shared->store.select(*metric);
    if (!found) return keel::net::error_response(keel::net::status::bad_request, found.error());
    boost::json::array list;
    for (const auto& s : *found) {
      boost::json::object labels;
      for (const auto& l : s.labels) labels[l.name] = l.value;
      list.push_back({{"id", s.id}, {"metric", s.metric}, {"labels", labels}});
    }
    return keel::net::json_response(boost::json::object{{"series", list}});
  });

  ctx.server.get("/api/tsdb/query", [shared](const keel::net::request& req) {
    const auto series = int_param(req, "series");
    const auto from = int_param(req, "from");
    const auto to = int_param(req, "to");
    const auto step = int_param(req, "step");
    if (!series || !from || !to || !step)
      return bad_request("pass series, from, to (ms) and step (ms) as integers, with to > from and step > 0");
    // The store refuses what makes no buckets (errc::invalid_range: step <= 0, to <= from, too many
    // buckets, a start before INT64_MIN): answered 400 below.
    keel::tsdb::query_plan plan;
    std::lock_guard guard(shared->lock);
    auto buckets = shared->store.aggregate(*series, {.from = *from, .to = *to, .width = *step}, &plan);
    if (!buckets) return keel::net::error_response(keel::net::status::bad_request, buckets.error());
    std::vector<double> avg;
    for (const auto& b : *buckets) avg.push_back(b.avg());
    const auto fill = req.query_param("fill").value_or("none");
    const auto how = fill == "locf" ? keel::tsdb::fill::locf
                                    : (fill == "linear" ? keel::tsdb::fill::linear : keel::tsdb::fill::none);
    const auto filled =
        keel::tsdb::gapfill(avg, how, static_cast<std::size_t>(int_param(req, "max_gap").value_or(0)));
    boost::json::array rows;
    for (std::size_t i = 0; i < buckets->size(); ++i) {
      const auto& b = (*buckets)[i];
      rows.push_back({{"start", b.start},
                      {"count", b.count},
                      {"avg", number_or_null(filled[i])},
                      {"min", b.count ? number_or_null(b.min) : nullptr},
                      {"max", b.count ? number_or_null(b.max) : nullptr},
                      {"stddev", number_or_null(b.stddev())}});
    }
    return keel::net::json_response(boost::json::object{{"buckets", rows},
                                                        {"plan",
                                                         {{"rollup", plan.rollup},
                                                          {"blocks_decoded", plan.blocks_decoded},
                                                          {"blocks_summarized", plan.blocks_summarized},
                                                          {"rollup_rows", plan.rollup_rows}}}});
  });

  ctx.server.get("/api/tsdb/plot", [shared](const keel::net::request& req) {
    const auto series = int_param(req, "series").value_or(shared->demo_series);
    const auto points =
        static_cast<std::size_t>(std::clamp<std::int64_t>(int_param(req, "points").value_or(300), 3, 100000));
    std::vector<std::int64_t> t;
    std::vector<double> v;
    {
      std::lock_guard guard(shared->lock);
      auto scan = shared->store.scan(series, std::numeric_limits<std::int64_t>::min(),
                                     std::numeric_limits<std::int64_t>::max());
      if (!scan) return keel::net::error_response(keel::net::status::bad_request, scan.error());
      scan->drain(t, v);
    }
    boost::json::array lttb;
    for (const auto i : keel::tsdb::lttb(t, v, points)) lttb.push_back({t[i], number_or_null(v[i])});
    return keel::net::json_response(boost::json::object{{"raw_points", t.size()}, {"lttb", lttb}});
  });

  ctx.server.get("/tsdb", [shared](const keel::net::request& req) {
    const auto points =
        static_cast<std::size_t>(std::clamp<std::int64_t>(int_param(req, "points").value_or(300), 3, 100000));
    const auto series = int_param(req, "series").value_or(shared->demo_series);
    return keel::net::text_response(plot_page(*shared, series, points), keel::net::status::ok,
                                    "text/html; charset=utf-8");
  });

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
