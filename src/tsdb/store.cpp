// The store's lifecycle and the helpers its parts share. The parts: schema.cpp (migrations),
// series_index.cpp (series ids and label selection), ingest.cpp (heads and seals), rollups.cpp
// (rollup segments), read.cpp (scans and aggregates), maintenance.cpp (retention, compaction and
// their scheduler).
#include "store_state.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <utility>

namespace keel::tsdb {
namespace detail {

std::int64_t bucket_last(std::int64_t t, std::int64_t resolution) noexcept {
  const std::int64_t start = bucket_start(t, resolution);
  const std::uint64_t room = distance(start, std::numeric_limits<std::int64_t>::max());
  if (room < static_cast<std::uint64_t>(resolution - 1)) return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(start) +
                                   static_cast<std::uint64_t>(resolution - 1));
}

bool bucket_ends_by(std::int64_t start, std::int64_t resolution, std::int64_t cutoff) noexcept {
  return start < cutoff && distance(start, cutoff) >= static_cast<std::uint64_t>(resolution);
}

void normalize(std::vector<std::int64_t>& times, std::vector<double>& values, ordering policy) {
  if (std::is_sorted(times.begin(), times.end()) && policy != ordering::last_write_wins) return;
  std::vector<std::size_t> order(times.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return times[a] < times[b]; });
  std::vector<std::int64_t> t;
  std::vector<double> v;
  t.reserve(times.size());
  v.reserve(times.size());
  for (const auto i : order) {
    if (policy == ordering::last_write_wins && !t.empty() && t.back() == times[i]) {
      v.back() = values[i];
      continue;
    }
    t.push_back(times[i]);
    v.push_back(values[i]);
  }
  times = std::move(t);
  values = std::move(v);
}

}  // namespace detail

store::store(std::unique_ptr<detail::store_state> s) noexcept : state_(std::move(s)) {}
store::store(store&&) noexcept = default;
store& store::operator=(store&&) noexcept = default;
store::~store() = default;

const store_options& store::options() const noexcept {
  return state_->options;
}
pg::connection& store::connection() noexcept {
  return state_->conn;
}

result<store> store::open(std::string_view conninfo, store_options options) {
  if (options.seal_count == 0 || options.seal_count > (1U << 24) - 1 || options.seal_span <= 0)
    return errc::invalid_argument;
  for (const auto r : options.rollups)
    if (r <= 0) return errc::invalid_argument;
  std::sort(options.rollups.begin(), options.rollups.end());
  auto c = pg::connection::connect(conninfo);
  if (!c) return c.error();
  return store(std::make_unique<detail::store_state>(
      detail::store_state{std::move(*c), std::move(options), {}, {}, {}}));
}

}  // namespace keel::tsdb
