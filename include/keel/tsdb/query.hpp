#pragma once
/// @file keel/tsdb/query.hpp
/// @brief Query operators over decoded points (times ascending): time_bucket aggregation with
/// approximate percentiles, moving windows, counter rate/increase, gap filling, LTTB and M4.
/// The store feeds them from blocks, block summaries or rollups; they also work on plain arrays.
/// Any int64 is a time: range arithmetic is exact up to both ends of int64.
#include <keel/core/result.hpp>
#include <keel/tsdb/error.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

namespace keel::tsdb {

/// A mergeable relative-error quantile sketch (DDSketch-style log buckets, 1% relative accuracy).
class quantile_sketch {
 public:
  void add(double v);
  void merge(const quantile_sketch& other);
  /// The q-quantile (q in [0, 1]) within 1% of the exact nearest-rank value; NaN when empty.
  [[nodiscard]] double quantile(double q) const;
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }

 private:
  std::map<int, std::uint64_t> positive_;
  std::map<int, std::uint64_t> negative_;
  std::uint64_t zeros_ = 0;
  std::uint64_t count_ = 0;
};

/// Aggregates of one bucket. NaN values are skipped. Mergeable, so buckets combine from block
/// summaries, rollups and raw points alike.
struct bucket {
  std::int64_t start = 0;  ///< bucket start time (inclusive); the end is start + width
  std::uint64_t count = 0;
  double sum = 0;
  double sum_squares = 0;
  double min = 0;
  double max = 0;
  double first = 0;
  double last = 0;
  std::int64_t first_time = 0;
  std::int64_t last_time = 0;
  std::optional<quantile_sketch> sketch;  ///< present when percentiles were asked for

  void add(std::int64_t t, double v);
  void merge(const bucket& other);
  [[nodiscard]] double avg() const;                 ///< NaN when empty
  [[nodiscard]] double stddev() const;              ///< population standard deviation; NaN when empty
  [[nodiscard]] double percentile(double q) const;  ///< NaN without a sketch or points
};

/// The bucket start for `t`: floor((t - origin) / width) * width + origin, computed exactly; INT64_MIN
/// when that is below INT64_MIN (the bucket then starts with int64). `width` must be positive.
[[nodiscard]] std::int64_t bucket_start(std::int64_t t, std::int64_t width, std::int64_t origin = 0) noexcept;

/// The most buckets one query makes: more than any screen or table shows.
inline constexpr std::size_t max_buckets = 10'000'000;

/// The buckets covering a query's [from, to): `count` buckets of `width` from `first`.
struct bucket_span {
  std::int64_t first = 0;
  std::int64_t width = 1;
  std::size_t count = 0;

  /// The start of bucket `i` (i < count).
  [[nodiscard]] std::int64_t start(std::size_t i) const noexcept {
    // Unsigned so the intermediate product wraps instead of overflowing; the result fits.
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(first) +
                                     static_cast<std::uint64_t>(i) * static_cast<std::uint64_t>(width));
  }
  /// The bucket holding `t` (first <= t).
  [[nodiscard]] std::size_t index(std::int64_t t) const noexcept {
    return static_cast<std::size_t>((static_cast<std::uint64_t>(t) - static_cast<std::uint64_t>(first)) /
                                    static_cast<std::uint64_t>(width));
  }
};

/// The buckets of width `width` covering [from, to). @returns errc::invalid_range when width <= 0,
/// to <= from, the first bucket would start before INT64_MIN, or there would be more than max_buckets.
[[nodiscard]] result<bucket_span> buckets_for(std::int64_t from, std::int64_t to, std::int64_t width,
                                              std::int64_t origin = 0) noexcept;

/// time_bucket: one bucket per width-wide interval in [from, to) — empty ones included (count 0)
/// so gap filling can see them. `with_percentiles` keeps a sketch per bucket. Empty when
/// buckets_for() refuses the range (it says why).
[[nodiscard]] std::vector<bucket> aggregate(std::span<const std::int64_t> times,
                                            std::span<const double> values, std::int64_t from,
                                            std::int64_t to, std::int64_t width,
                                            bool with_percentiles = false, std::int64_t origin = 0);

/// Moving sum and average over a time window: out[i] covers points with t in (t_i - window, t_i]
/// (none when window <= 0).
[[nodiscard]] std::vector<double> moving_sum(std::span<const std::int64_t> times,
                                             std::span<const double> values, std::int64_t window);
[[nodiscard]] std::vector<double> moving_average(std::span<const std::int64_t> times,
                                                 std::span<const double> values, std::int64_t window);

/// Counter increase per bucket in [from, to): the sum over consecutive samples (a, b) with b in
/// the bucket of b - a, or of b alone when the counter went down (a reset). Buckets without a
/// sample pair are NaN. Empty when buckets_for() refuses the range.
[[nodiscard]] std::vector<double> increase(std::span<const std::int64_t> times,
                                           std::span<const double> values, std::int64_t from, std::int64_t to,
                                           std::int64_t width);
/// increase() per second: divided by width / units_per_second (1000 for ms, 1e9 for ns).
[[nodiscard]] std::vector<double> rate(std::span<const std::int64_t> times, std::span<const double> values,
                                       std::int64_t from, std::int64_t to, std::int64_t width,
                                       double units_per_second);

/// How gapfill() fills an empty bucket.
enum class fill { none, locf, linear };

/// Fills missing values (NaN) in a bucketed series: last observation carried forward or linear
/// interpolation between the neighbours, but only across gaps of at most `max_gap` buckets
/// (0: no limit). Linear needs a value on both sides; LOCF only before.
[[nodiscard]] std::vector<double> gapfill(std::span<const double> bucket_values, fill how,
                                          std::size_t max_gap = 0);

/// Largest-Triangle-Three-Buckets downsampling to at most `n` points (n >= 3 keeps the first and
/// last). @returns indices into the input, ascending.
[[nodiscard]] std::vector<std::size_t> lttb(std::span<const std::int64_t> times,
                                            std::span<const double> values, std::size_t n);

/// M4 downsampling for `n` pixel columns over [from, to): per column the first, last, min and max
/// point, so a line plot at that width is pixel-identical. @returns ascending unique indices.
[[nodiscard]] std::vector<std::size_t> m4(std::span<const std::int64_t> times, std::span<const double> values,
                                          std::int64_t from, std::int64_t to, std::size_t n);

}  // namespace keel::tsdb
