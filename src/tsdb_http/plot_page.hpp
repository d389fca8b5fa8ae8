#pragma once
// The /tsdb page's HTML, kept in its own file so the routes stay readable.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace keel::tsdb_http::detail {

/// What the page says about the series besides its points.
struct plot_labels {
  std::string title;  ///< metric{label="value",...}
  std::string unit;   ///< for the value axis: "°C", "s", "B", ... (empty: none known)
};

/// The unit a series' values are in: its "unit" label, else its metric name's Prometheus suffix
/// (_seconds, _bytes, _celsius, _ratio, _percent, _total); empty when neither says.
std::string unit_of(std::string_view metric, std::string_view unit_label);

/// The page plotting `times` (milliseconds since the epoch) / `values` raw against their LTTB
/// downsampling to `points` points, with a time axis in UTC and a value axis in the unit.
std::string plot_page(std::span<const std::int64_t> times, std::span<const double> values, std::size_t points,
                      const plot_labels& labels);

}  // namespace keel::tsdb_http::detail
