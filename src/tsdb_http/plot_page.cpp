// The /tsdb page: one HTML document plotting a series raw against its LTTB downsampling as an
// inline SVG, with no scripts or assets from elsewhere.
#include "plot_page.hpp"

#include <keel/net/http.hpp>
#include <keel/tsdb/query.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::tsdb_http::detail {

namespace {

// Plot area: x from plot_left to plot_left + plot_width, y from plot_top to plot_top + plot_height.
constexpr double plot_left = 64, plot_width = 876, plot_top = 20, plot_height = 340;

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
    const double x = plot_left + plot_width * since_t0(t[i]) / span_t;
    const double y = plot_top + plot_height * (1 - (v[i] - lo) / span_v);
    const int n = std::snprintf(buffer, sizeof buffer, "%.1f,%.1f ", x, y);
    out.append(buffer, static_cast<std::size_t>(n));
  }
  out += "\"/>";
  return out;
}

// 10080 → "10,080".
// Built by appending: GCC 12 warns falsely (-Wrestrict) on string::insert at -O3.
std::string grouped(std::size_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t k = 0; k < digits.size(); ++k) {
    if (k > 0 && (digits.size() - k) % 3 == 0) out += ',';
    out += digits[k];
  }
  return out;
}

// A 1, 2 or 5 × 10^k step that cuts `span` into at most `ticks` parts.
double nice_step(double span, int ticks) {
  if (!(span > 0)) return 1;
  const double raw = span / ticks;
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  for (const double f : {1.0, 2.0, 5.0, 10.0}) {
    if (f * magnitude >= raw) return f * magnitude;
  }
  return 10 * magnitude;
}

std::string format_value(double x, double step) {
  char text[48];
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step)));
  std::snprintf(text, sizeof text, "%.*f", decimals, std::abs(x) < step / 2 ? 0.0 : x);
  return text;
}

std::string value_axis(double lo, double hi, double step, const std::string& unit) {
  std::string out = R"(<g id="y-axis" class="axis">)";
  char line[256];
  // Counted in whole ticks: adding a step to a double would drift.
  const auto ticks = static_cast<int>(std::lround((hi - lo) / step));
  for (int tick = 0; tick <= ticks; ++tick) {
    const double y = lo + tick * step;
    const double at = plot_top + plot_height * (1 - (y - lo) / (hi - lo));
    std::snprintf(
        line, sizeof line,
        R"(<line class="grid" x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f"/><text x="%.0f" y="%.1f" text-anchor="end">)",
        plot_left, plot_left + plot_width, at, at, plot_left - 6, at + 4);
    out += line;
    out += format_value(y, step);
    if (!unit.empty()) {
      out += ' ';
      out += keel::net::escape_html(unit);
    }
    out += "</text>";
  }
  return out + "</g>";
}

// Ticks at a round interval in UTC, labelled with the time of day, or the date at midnight.
std::string time_axis(std::int64_t t0, std::int64_t t1) {
  constexpr std::int64_t second = 1000, minute = 60 * second, hour = 60 * minute, day = 24 * hour;
  static constexpr std::int64_t steps[] = {
      second,     2 * second,  5 * second,  10 * second, 15 * second, 30 * second, minute,   2 * minute,
      5 * minute, 10 * minute, 15 * minute, 30 * minute, hour,        2 * hour,    3 * hour, 6 * hour,
      12 * hour,  day,         2 * day,     7 * day,     30 * day,    365 * day};
  const auto span = static_cast<double>(static_cast<std::uint64_t>(t1) - static_cast<std::uint64_t>(t0));
  std::int64_t step = steps[std::size(steps) - 1];
  for (const auto s : steps) {
    if (span / static_cast<double>(s) <= 8) {
      step = s;
      break;
    }
  }
  std::string out = R"(<g id="x-axis" class="axis">)";
  if (span <= 0 || t0 > std::numeric_limits<std::int64_t>::max() - step) return out + "</g>";
  char line[256];
  const std::int64_t first = t0 % step == 0 ? t0 : t0 - (t0 % step + step) % step + step;
  for (std::int64_t at = first; at <= t1 && at >= first; at += step) {
    const double x = plot_left + plot_width * static_cast<double>(at - t0) / span;
    const auto seconds = static_cast<std::time_t>(at / 1000);
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    char label[40];
    const bool midnight = utc.tm_hour == 0 && utc.tm_min == 0 && utc.tm_sec == 0;
    std::strftime(label, sizeof label,
                  step >= day || midnight ? "%a %d %b" : (step >= minute ? "%H:%M" : "%H:%M:%S"), &utc);
    std::snprintf(
        line, sizeof line,
        R"(<line class="grid" x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f"/><text x="%.1f" y="%.0f" text-anchor="middle">)",
        x, x, plot_top, plot_top + plot_height + 4, x, plot_top + plot_height + 18);
    out += line;
    out += label;
    out += "</text>";
    if (at > std::numeric_limits<std::int64_t>::max() - step) break;
  }
  return out + "</g>";
}

}  // namespace

std::string unit_of(std::string_view metric, std::string_view unit_label) {
  static constexpr std::pair<std::string_view, std::string_view> names[] = {
      {"celsius", "°C"}, {"fahrenheit", "°F"}, {"seconds", "s"}, {"milliseconds", "ms"}, {"bytes", "B"},
      {"percent", "%"},  {"ratio", ""},        {"volts", "V"},   {"watts", "W"},         {"meters", "m"}};
  const auto named = [](std::string_view word) -> std::optional<std::string> {
    for (const auto& [name, symbol] : names) {
      if (word == name) return std::string(symbol);
    }
    return std::nullopt;
  };
  if (!unit_label.empty()) return named(unit_label).value_or(std::string(unit_label));
  const auto underscore = metric.rfind('_');
  if (underscore == std::string_view::npos) return {};
  return named(metric.substr(underscore + 1)).value_or("");
}

std::string plot_page(std::span<const std::int64_t> t, std::span<const double> v, std::size_t points,
                      const plot_labels& labels) {
  std::string html =
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>keel::tsdb plot</title><style>"
      "body{font-family:system-ui,sans-serif;margin:2em;color:#222}svg{border:1px solid #ddd;background:#fff}"
      ".raw{color:#bbb}.lttb{color:#1565c0}.axis text{font-size:11px;fill:#555}.grid{stroke:#eee}"
      "</style></head><body><h1>keel::tsdb: raw vs LTTB</h1>";
  html += "<p id=\"series\">" + keel::net::escape_html(labels.title) + "</p>";
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
  if (!std::isfinite(lo)) lo = hi = 0;
  // The value axis runs over whole ticks around the data.
  const double step_v = nice_step(hi - lo, 6);
  lo = std::floor(lo / step_v) * step_v;
  hi = std::max(std::ceil(hi / step_v) * step_v, lo + step_v);
  html += R"(<p><span class="raw">&#9632; raw: <b id="raw-count">)" + grouped(t.size()) +
          R"(</b> points</span> &nbsp; <span class="lttb">&#9632; LTTB: <b id="lttb-count">)" +
          std::to_string(picks.size()) + "</b> points</span></p>";
  html +=
      R"(<svg id="plot" xmlns="http://www.w3.org/2000/svg" width="960" height="410" viewBox="0 0 960 410">)";
  html += value_axis(lo, hi, step_v, labels.unit);
  html += time_axis(t.front(), t.back());
  html += svg_polyline(t, v, all, t.front(), t.back(), lo, hi, "raw", R"(stroke="#bbb" stroke-width="1")");
  html += svg_polyline(t, v, picks, t.front(), t.back(), lo, hi, "lttb",
                       R"(stroke="#1565c0" stroke-width="1.5")");
  html +=
      "</svg><p>Times in UTC. Try <a href=\"?points=50\">50</a>, <a href=\"?points=300\">300</a>, "
      "<a href=\"?points=1000\">1,000</a> points.</p>"
      "<script>document.getElementById('plot').dataset.ready = 'true';</script></body></html>";
  return html;
}

}  // namespace keel::tsdb_http::detail
