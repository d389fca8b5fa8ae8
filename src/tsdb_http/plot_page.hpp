#pragma once
// The /tsdb page's HTML, kept in its own file so the routes stay readable.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace keel::tsdb_http::detail {

/// The page plotting `times`/`values` raw against their LTTB downsampling to `points` points.
std::string plot_page(std::span<const std::int64_t> times, std::span<const double> values,
                      std::size_t points);

}  // namespace keel::tsdb_http::detail
