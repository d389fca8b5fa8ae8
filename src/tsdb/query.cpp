#include <keel/tsdb/query.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace keel::tsdb {
namespace {

constexpr double sketch_gamma = 1.02;  // bucket i holds (gamma^(i-1), gamma^i]: 1% relative error
const double log_gamma = std::log(sketch_gamma);
constexpr double nan = std::numeric_limits<double>::quiet_NaN();
constexpr std::int64_t lowest_time = std::numeric_limits<std::int64_t>::min();

// Bucket arithmetic in 128 bits: t - origin and the bucket start before INT64_MIN are exact there.
// NOLINTNEXTLINE(modernize-use-using): `__extension__` applies to a typedef, not to `using`
__extension__ typedef __int128 wide;

wide floor_start(std::int64_t t, std::int64_t width, std::int64_t origin) noexcept {
  const wide offset = wide{t} - origin;
  wide q = offset / width;
  if (offset % width < 0) --q;  // floor for times before the origin
  return q * width + origin;
}

/// later - earlier for later >= earlier, exact even when the difference exceeds INT64_MAX.
std::uint64_t distance(std::int64_t earlier, std::int64_t later) noexcept {
  return static_cast<std::uint64_t>(later) - static_cast<std::uint64_t>(earlier);
}

int sketch_index(double magnitude) {
  return static_cast<int>(std::ceil(std::log(magnitude) / log_gamma));
}
double sketch_value(int index) {
  return 2.0 * std::pow(sketch_gamma, index) / (sketch_gamma + 1.0);
}

}  // namespace

void quantile_sketch::add(double v) {
  if (std::isnan(v)) return;
  ++count_;
  if (v == 0 || std::fabs(v) < 1e-300) {
    ++zeros_;
  } else if (v > 0) {
    ++positive_[sketch_index(std::min(v, 1e300))];
  } else {
    ++negative_[sketch_index(std::min(-v, 1e300))];
  }
}

void quantile_sketch::merge(const quantile_sketch& other) {
  for (const auto& [i, c] : other.positive_) positive_[i] += c;
  for (const auto& [i, c] : other.negative_) negative_[i] += c;
  zeros_ += other.zeros_;
  count_ += other.count_;
}

double quantile_sketch::quantile(double q) const {
  if (count_ == 0) return nan;
  q = std::clamp(q, 0.0, 1.0);
  // Nearest rank: the smallest value with at least ceil(q * n) values at or below it.
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::max<std::uint64_t>(rank, 1);
  std::uint64_t seen = 0;
  // Most negative first. (A reverse iterator loop: std::views::reverse does not compile with
  // clang 14 on libstdc++ 12, and keel builds with both.)
  // NOLINTNEXTLINE(modernize-loop-convert)
  for (auto it = negative_.rbegin(); it != negative_.rend(); ++it) {
    seen += it->second;
    if (seen >= rank) return -sketch_value(it->first);
  }
  seen += zeros_;
  if (seen >= rank) return 0;
  for (const auto& [i, c] : positive_) {
    seen += c;
    if (seen >= rank) return sketch_value(i);
  }
  return positive_.empty() ? 0 : sketch_value(positive_.rbegin()->first);
}

void bucket::add(std::int64_t t, double v) {
  if (std::isnan(v)) return;
  if (count == 0) {
    min = max = first = last = v;
    first_time = last_time = t;
  } else {
    min = std::min(min, v);
    max = std::max(max, v);
    if (t < first_time) {
      first_time = t;
      first = v;
    }
    if (t >= last_time) {
      last_time = t;
      last = v;
    }
  }
  ++count;
  sum += v;
  sum_squares += v * v;
  if (sketch) sketch->add(v);
}

void bucket::merge(const bucket& other) {
  if (other.count == 0) return;
  if (count == 0) {
    const std::int64_t keep = start;
    std::optional<quantile_sketch> mine = std::move(sketch);
    *this = other;
    start = keep;
    if (mine) {
      sketch = std::move(mine);
      if (other.sketch) sketch->merge(*other.sketch);
    }
    return;
  }
  count += other.count;
  sum += other.sum;
  sum_squares += other.sum_squares;
  min = std::min(min, other.min);
  max = std::max(max, other.max);
  if (other.first_time < first_time) {
    first_time = other.first_time;
    first = other.first;
  }
  if (other.last_time >= last_time) {
    last_time = other.last_time;
    last = other.last;
  }
  if (sketch && other.sketch) sketch->merge(*other.sketch);
}

double bucket::avg() const {
  return count == 0 ? nan : sum / static_cast<double>(count);
}

double bucket::stddev() const {
  if (count == 0) return nan;
  const auto n = static_cast<double>(count);
  const double mean = sum / n;
  return std::sqrt(std::max(0.0, sum_squares / n - mean * mean));
}

double bucket::percentile(double q) const {
  return sketch ? sketch->quantile(q) : nan;
}

std::int64_t bucket_start(std::int64_t t, std::int64_t width, std::int64_t origin) noexcept {
  if (width <= 0) return t;
  const wide start = floor_start(t, width, origin);
  return start < lowest_time ? lowest_time : static_cast<std::int64_t>(start);  // start <= t
}

result<bucket_span> buckets_for(std::int64_t from, std::int64_t to, std::int64_t width,
                                std::int64_t origin) noexcept {
  if (width <= 0 || to <= from) return errc::invalid_range;
  const wide first = floor_start(from, width, origin);
  if (first < lowest_time) return errc::invalid_range;
  const wide count = (wide{to} - first + width - 1) / width;
  if (count > static_cast<wide>(max_buckets)) return errc::invalid_range;
  return bucket_span{
      .first = static_cast<std::int64_t>(first), .width = width, .count = static_cast<std::size_t>(count)};
}

std::vector<bucket> aggregate(std::span<const std::int64_t> times, std::span<const double> values,
                              std::int64_t from, std::int64_t to, std::int64_t width, bool with_percentiles,
                              std::int64_t origin) {
  std::vector<bucket> out;
  const auto span = buckets_for(from, to, width, origin);
  if (!span) return out;
  out.resize(span->count);
  for (std::size_t i = 0; i < span->count; ++i) {
    out[i].start = span->start(i);
    if (with_percentiles) out[i].sketch.emplace();
  }
  const auto begin = std::lower_bound(times.begin(), times.end(), from);
  for (auto it = begin; it != times.end() && *it < to; ++it) {
    const auto i = static_cast<std::size_t>(it - times.begin());
    out[span->index(*it)].add(*it, values[i]);
  }
  return out;
}

std::vector<double> moving_sum(std::span<const std::int64_t> times, std::span<const double> values,
                               std::int64_t window) {
  std::vector<double> out(times.size());
  // times[tail] is in (times[i] - window, times[i]]: exact when times[i] - window overflows.
  auto in_window = [&](std::size_t tail, std::size_t i) {
    return window > 0 && distance(times[tail], times[i]) < static_cast<std::uint64_t>(window);
  };
  // Kahan-free running sum would drift over long series; recompute from the window when it is
  // cheap enough, which it always is here because each point enters and leaves once.
  double sum = 0;
  std::size_t tail = 0;
  for (std::size_t i = 0; i < times.size(); ++i) {
    if (!std::isnan(values[i])) sum += values[i];
    while (tail <= i && !in_window(tail, i)) {
      if (!std::isnan(values[tail])) sum -= values[tail];
      ++tail;
    }
    // Subtracting every point out again leaves rounding residue; an empty window sums to zero.
    out[i] = tail > i ? 0 : sum;
  }
  return out;
}

std::vector<double> moving_average(std::span<const std::int64_t> times, std::span<const double> values,
                                   std::int64_t window) {
  std::vector<double> out(times.size());
  auto in_window = [&](std::size_t tail, std::size_t i) {
    return window > 0 && distance(times[tail], times[i]) < static_cast<std::uint64_t>(window);
  };
  double sum = 0;
  std::size_t count = 0;
  std::size_t tail = 0;
  for (std::size_t i = 0; i < times.size(); ++i) {
    if (!std::isnan(values[i])) {
      sum += values[i];
      ++count;
    }
    while (tail <= i && !in_window(tail, i)) {
      if (!std::isnan(values[tail])) {
        sum -= values[tail];
        --count;
      }
      ++tail;
    }
    out[i] = count == 0 ? nan : sum / static_cast<double>(count);
  }
  return out;
}

std::vector<double> increase(std::span<const std::int64_t> times, std::span<const double> values,
                             std::int64_t from, std::int64_t to, std::int64_t width) {
  std::vector<double> out;
  const auto span = buckets_for(from, to, width);
  if (!span) return out;
  out.assign(span->count, nan);
  for (std::size_t i = 1; i < times.size(); ++i) {
    if (times[i] < from || times[i] >= to) continue;
    const double a = values[i - 1];
    const double b = values[i];
    if (std::isnan(a) || std::isnan(b)) continue;
    const double delta = b >= a ? b - a : b;  // a reset restarts the counter from zero
    double& slot = out[span->index(times[i])];
    slot = std::isnan(slot) ? delta : slot + delta;
  }
  return out;
}

std::vector<double> rate(std::span<const std::int64_t> times, std::span<const double> values,
                         std::int64_t from, std::int64_t to, std::int64_t width, double units_per_second) {
  auto out = increase(times, values, from, to, width);
  const double seconds = static_cast<double>(width) / units_per_second;
  for (auto& v : out) v /= seconds;
  return out;
}

std::vector<double> gapfill(std::span<const double> in, fill how, std::size_t max_gap) {
  std::vector<double> out(in.begin(), in.end());
  if (how == fill::none) return out;
  std::size_t i = 0;
  std::optional<std::size_t> previous;
  while (i < in.size()) {
    if (!std::isnan(in[i])) {
      previous = i;
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < in.size() && std::isnan(in[end])) ++end;
    const std::size_t gap = end - i;
    if (previous && (max_gap == 0 || gap <= max_gap)) {
      if (how == fill::locf) {
        for (std::size_t k = i; k < end; ++k) out[k] = in[*previous];
      } else if (end < in.size()) {
        const double a = in[*previous];
        const double b = in[end];
        const auto span = static_cast<double>(end - *previous);
        for (std::size_t k = i; k < end; ++k)
          out[k] = a + (b - a) * static_cast<double>(k - *previous) / span;
      }
    }
    i = end;
  }
  return out;
}

std::vector<std::size_t> lttb(std::span<const std::int64_t> times, std::span<const double> values,
                              std::size_t n) {
  std::vector<std::size_t> out;
  const std::size_t size = times.size();
  if (n >= size || n < 3) {
    if (n >= size) {
      for (std::size_t i = 0; i < size; ++i) out.push_back(i);
    } else {
      for (std::size_t i = 0; i < std::min(n, size); ++i) out.push_back(i == 0 ? 0 : size - 1);
    }
    return out;
  }
  // Buckets between the fixed first and last points; each picks the point forming the largest
  // triangle with the previous pick and the average of the next bucket.
  const double every = static_cast<double>(size - 2) / static_cast<double>(n - 2);
  std::size_t a = 0;
  out.push_back(0);
  for (std::size_t b = 0; b < n - 2; ++b) {
    const auto start = static_cast<std::size_t>(std::floor(static_cast<double>(b) * every)) + 1;
    const auto end =
        std::min(static_cast<std::size_t>(std::floor(static_cast<double>(b + 1) * every)) + 1, size - 1);
    const auto next_start = end;
    const auto next_end =
        std::min(static_cast<std::size_t>(std::floor(static_cast<double>(b + 2) * every)) + 1, size);
    double avg_t = 0;
    double avg_v = 0;
    for (std::size_t k = next_start; k < next_end; ++k) {
      avg_t += static_cast<double>(distance(times[0], times[k]));
      avg_v += values[k];
    }
    const double span = static_cast<double>(std::max<std::size_t>(next_end - next_start, 1));
    avg_t /= span;
    avg_v /= span;
    const auto at = static_cast<double>(distance(times[0], times[a]));
    const double av = values[a];
    double best_area = -1;
    std::size_t best = start;
    for (std::size_t k = start; k < end; ++k) {
      const double area = std::fabs((at - avg_t) * (values[k] - av) -
                                    (at - static_cast<double>(distance(times[0], times[k]))) * (avg_v - av));
      if (area > best_area) {
        best_area = area;
        best = k;
      }
    }
    out.push_back(best);
    a = best;
  }
  out.push_back(size - 1);
  return out;
}

std::vector<std::size_t> m4(std::span<const std::int64_t> times, std::span<const double> values,
                            std::int64_t from, std::int64_t to, std::size_t n) {
  std::vector<std::size_t> out;
  if (n == 0 || to <= from) return out;
  const auto begin =
      static_cast<std::size_t>(std::lower_bound(times.begin(), times.end(), from) - times.begin());
  const double width = static_cast<double>(distance(from, to)) / static_cast<double>(n);
  std::size_t i = begin;
  while (i < times.size() && times[i] < to) {
    const auto column =
        std::min(n - 1, static_cast<std::size_t>(static_cast<double>(distance(from, times[i])) / width));
    std::size_t first = i;
    std::size_t last = i;
    std::size_t lo = i;
    std::size_t hi = i;
    std::size_t k = i + 1;
    for (; k < times.size() && times[k] < to &&
           std::min(n - 1, static_cast<std::size_t>(static_cast<double>(distance(from, times[k])) / width)) ==
               column;
         ++k) {
      last = k;
      if (values[k] < values[lo]) lo = k;
      if (values[k] > values[hi]) hi = k;
    }
    std::size_t picks[4] = {first, lo, hi, last};
    std::sort(std::begin(picks), std::end(picks));
    for (const auto p : picks)
      if (out.empty() || out.back() != p) out.push_back(p);
    i = k;
  }
  return out;
}

}  // namespace keel::tsdb
