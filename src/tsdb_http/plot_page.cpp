// The /tsdb page: one HTML document plotting a series raw against its LTTB downsampling as an
// inline SVG, with no scripts or assets from elsewhere.
#include "plot_page.hpp"

#include <keel/tsdb/query.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

namespace keel::tsdb_http::detail {

namespace {

std::string svg_polyline(std::span<const std::int64_t> t, std::span<const double> v,
                         std::span<const std::size_t> picks, std::int64_t t0, std::int64_t t1, double lo,
                         double hi, const char* id, const char* style) {
  std::string out = "<polyline id=\"";
  out += id;
  out += R"(" fill="none" )";
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

}  // namespace

std::string plot_page(std::span<const std::int64_t> t, std::span<const double> v, std::size_t points) {
  std::string html =
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>keel::tsdb plot</title><style>"
      "body{font-family:system-ui,sans-serif;margin:2em;color:#222}svg{border:1px solid #ddd;background:#fff}"
      ".raw{color:#bbb}.lttb{color:#1565c0}</style></head><body><h1>keel::tsdb: raw vs LTTB</h1>";
  if (t.empty()) return html + "<p id=\"empty\">No points in this series.</p></body></html>";
  const auto picks = tsdb::lttb(t, v, points);
  std::vector<std::size_t> all(t.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  double lo = std::numeric_limits<double>::infinity();
  double hi = -lo;
  for (const double x : v) {
    if (!std::isfinite(x)) continue;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  html += R"(<p><span class="raw">&#9632; raw: <b id="raw-count">)" + std::to_string(t.size()) +
          R"(</b> points</span> &nbsp; <span class="lttb">&#9632; LTTB: <b id="lttb-count">)" +
          std::to_string(picks.size()) + "</b> points</span></p>";
  html +=
      R"(<svg id="plot" xmlns="http://www.w3.org/2000/svg" width="960" height="380" viewBox="0 0 960 380">)";
  html += svg_polyline(t, v, all, t.front(), t.back(), lo, hi, "raw", R"(stroke="#bbb" stroke-width="1")");
  html += svg_polyline(t, v, picks, t.front(), t.back(), lo, hi, "lttb",
                       R"(stroke="#1565c0" stroke-width="1.5")");
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

}  // namespace keel::tsdb_http::detail
