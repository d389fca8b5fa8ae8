// Query operators against naive references computed here, on random data, windows and gaps.
#include <keel/tsdb/query.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <support/random.hpp>

// The reference arithmetic below is exact in 128 bits, whatever the int64 inputs.
__extension__ using wide = __int128;

namespace tsdb = keel::tsdb;
using keel::test::uniform;

namespace {

struct points {
  std::vector<std::int64_t> times;
  std::vector<double> values;
};

/// Random points with irregular spacing and occasional long gaps; small integers so sums are exact.
points random_points(std::size_t n) {
  points p;
  std::int64_t t = uniform<std::int64_t>(-5000, 5000);
  for (std::size_t i = 0; i < n; ++i) {
    t += uniform(0, 10) == 0 ? uniform<std::int64_t>(50, 400) : uniform<std::int64_t>(1, 20);
    p.times.push_back(t);
    p.values.push_back(static_cast<double>(uniform(-1000, 1000)));
  }
  return p;
}

constexpr std::int64_t int64_min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();

/// floor(t / width) * width, exactly.
wide floor_to(wide t, wide width) {
  wide q = t / width;
  if (t % width < 0) --q;
  return q * width;
}

/// A time from anywhere in int64, often near its ends or zero, where arithmetic overflows.
std::int64_t extreme_time() {
  switch (uniform(0, 3)) {
    case 0:
      return int64_min + uniform<std::int64_t>(0, 1'000'000);
    case 1:
      return int64_max - uniform<std::int64_t>(0, 1'000'000);
    case 2:
      return uniform<std::int64_t>(-1'000'000, 1'000'000);
    default:
      return uniform(int64_min, int64_max);
  }
}

/// A width from 1 to int64's largest, mostly huge.
std::int64_t extreme_width() {
  switch (uniform(0, 2)) {
    case 0:
      return uniform<std::int64_t>(1, 1'000);
    case 1:
      return int64_max - uniform<std::int64_t>(0, 1'000);
    default:
      return std::int64_t{1} << uniform(40, 62);
  }
}

bool same(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || std::fabs(a - b) <= 1e-9 * std::max(1.0, std::fabs(b));
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("time_bucket aggregates match a naive reference") {
    for (int round = 0; round < 200; ++round) {
      const auto p = random_points(static_cast<std::size_t>(uniform(0, 600)));
      const std::int64_t from = uniform<std::int64_t>(-6000, 6000);
      const std::int64_t to = from + uniform<std::int64_t>(1, 8000);
      const std::int64_t width = uniform<std::int64_t>(1, 700);
      const auto buckets = tsdb::aggregate(p.times, p.values, from, to, width, true);
      const std::int64_t first = tsdb::bucket_start(from, width);
      REQUIRE(first <= from);
      REQUIRE(first > from - width);
      REQUIRE(buckets.size() == static_cast<std::size_t>((to - first + width - 1) / width));
      for (const auto& b : buckets) {
        std::vector<double> in;
        std::vector<std::int64_t> at;
        for (std::size_t i = 0; i < p.times.size(); ++i) {
          if (p.times[i] >= std::max(from, b.start) && p.times[i] < std::min(to, b.start + width)) {
            in.push_back(p.values[i]);
            at.push_back(p.times[i]);
          }
        }
        REQUIRE(b.count == in.size());
        if (in.empty()) {
          CHECK(std::isnan(b.avg()));
          continue;
        }
        double sum = 0;
        for (const double v : in) sum += v;
        const double mean = sum / static_cast<double>(in.size());
        double var = 0;
        for (const double v : in) var += (v - mean) * (v - mean);
        CHECK(b.sum == sum);
        CHECK(same(b.avg(), mean));
        CHECK(same(b.stddev(), std::sqrt(var / static_cast<double>(in.size()))));
        CHECK(b.min == *std::min_element(in.begin(), in.end()));
        CHECK(b.max == *std::max_element(in.begin(), in.end()));
        CHECK(b.first == in.front());
        CHECK(b.last == in.back());
        auto sorted = in;
        std::sort(sorted.begin(), sorted.end());
        for (const double q : {0.0, 0.5, 0.9, 0.99, 1.0}) {
          const auto rank = std::max<std::size_t>(
              1, static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size()))));
          const double exact = sorted[rank - 1];
          CHECK(std::fabs(b.percentile(q) - exact) <= 0.0101 * std::fabs(exact) + 1e-12);
        }
      }
    }
  }

  TEST_CASE("merged buckets equal buckets over the union") {
    for (int round = 0; round < 100; ++round) {
      const auto p = random_points(300);
      const auto split = static_cast<std::size_t>(uniform(0, 300));
      tsdb::bucket whole;
      tsdb::bucket left;
      tsdb::bucket right;
      for (std::size_t i = 0; i < p.times.size(); ++i) {
        whole.add(p.times[i], p.values[i]);
        (i < split ? left : right).add(p.times[i], p.values[i]);
      }
      left.merge(right);
      CHECK(left.count == whole.count);
      CHECK(left.sum == whole.sum);
      CHECK(left.min == whole.min);
      CHECK(left.max == whole.max);
      CHECK(left.first == whole.first);
      CHECK(left.last == whole.last);
      CHECK(same(left.stddev(), whole.stddev()));
    }
  }

  TEST_CASE("moving sum and average match a naive window") {
    for (int round = 0; round < 100; ++round) {
      const auto p = random_points(static_cast<std::size_t>(uniform(0, 400)));
      const std::int64_t window = uniform<std::int64_t>(1, 300);
      const auto sums = tsdb::moving_sum(p.times, p.values, window);
      const auto avgs = tsdb::moving_average(p.times, p.values, window);
      for (std::size_t i = 0; i < p.times.size(); ++i) {
        double sum = 0;
        std::size_t count = 0;
        for (std::size_t k = 0; k <= i; ++k) {
          if (p.times[k] > p.times[i] - window) {
            sum += p.values[k];
            ++count;
          }
        }
        CHECK(sums[i] == sum);
        CHECK(same(avgs[i], sum / static_cast<double>(count)));
      }
    }
  }

  TEST_CASE("increase and rate handle counter resets") {
    for (int round = 0; round < 100; ++round) {
      points p;
      double counter = 0;
      std::int64_t t = 0;
      for (int i = 0; i < 500; ++i) {
        t += uniform<std::int64_t>(1, 30);
        if (uniform(0, 50) == 0) {
          counter = static_cast<double>(uniform(0, 5));  // restart: counts from (about) zero again
        } else {
          const double step = static_cast<double>(uniform(0, 9));
          counter += step;
        }
        p.times.push_back(t);
        p.values.push_back(counter);
      }
      const std::int64_t width = uniform<std::int64_t>(10, 500);
      const auto inc = tsdb::increase(p.times, p.values, 0, t + 1, width);
      const auto per_second = tsdb::rate(p.times, p.values, 0, t + 1, width, 1000.0);
      double total = 0;
      for (std::size_t b = 0; b < inc.size(); ++b) {
        double expected = 0;
        bool any = false;
        for (std::size_t i = 1; i < p.times.size(); ++i) {
          if (p.times[i] / width != static_cast<std::int64_t>(b)) continue;
          any = true;
          const double d = p.values[i] - p.values[i - 1];
          expected += d >= 0 ? d : p.values[i];
        }
        if (!any) {
          CHECK(std::isnan(inc[b]));
          continue;
        }
        CHECK(inc[b] == expected);
        CHECK(same(per_second[b], expected / (static_cast<double>(width) / 1000.0)));
        CHECK(inc[b] >= 0);
        total += inc[b];
      }
      // Every sample after the first lies in [0, t + 1), so the buckets add up to the whole increase.
      double true_total = 0;
      for (std::size_t i = 1; i < p.values.size(); ++i) {
        const double d = p.values[i] - p.values[i - 1];
        true_total += d >= 0 ? d : p.values[i];
      }
      CHECK(total == true_total);
    }
  }

  TEST_CASE("gapfill: LOCF and linear respect the maximum gap") {
    const double n = std::numeric_limits<double>::quiet_NaN();
    const std::vector<double> in{n, 1, n, n, 4, n, n, n, n, 9, n};
    const auto locf = tsdb::gapfill(in, tsdb::fill::locf, 3);
    const std::vector<double> want_locf{n, 1, 1, 1, 4, n, n, n, n, 9, 9};
    const auto linear = tsdb::gapfill(in, tsdb::fill::linear, 0);
    const std::vector<double> want_linear{n, 1, 2, 3, 4, 5, 6, 7, 8, 9, n};
    for (std::size_t i = 0; i < in.size(); ++i) {
      CAPTURE(i);
      CHECK(same(locf[i], want_locf[i]));
      CHECK(same(linear[i], want_linear[i]));
    }
    for (int round = 0; round < 200; ++round) {
      std::vector<double> values(static_cast<std::size_t>(uniform(0, 60)));
      for (auto& v : values) v = uniform(0, 2) == 0 ? n : static_cast<double>(uniform(-50, 50));
      const auto max_gap = static_cast<std::size_t>(uniform(0, 5));
      const auto filled = tsdb::gapfill(values, tsdb::fill::locf, max_gap);
      for (std::size_t i = 0; i < values.size(); ++i) {
        if (!std::isnan(values[i])) {
          CHECK(filled[i] == values[i]);
          continue;
        }
        // Naive: find the gap around i and the last value before it.
        std::size_t start = i;
        while (start > 0 && std::isnan(values[start - 1])) --start;
        std::size_t end = i;
        while (end < values.size() && std::isnan(values[end])) ++end;
        const bool fillable = start > 0 && (max_gap == 0 || end - start <= max_gap);
        CHECK(same(filled[i], fillable ? values[start - 1] : n));
      }
    }
  }

  TEST_CASE("LTTB keeps the ends, picks one point per bucket and finds the spike") {
    for (int round = 0; round < 50; ++round) {
      const auto p = random_points(static_cast<std::size_t>(uniform(10, 3000)));
      const auto n = static_cast<std::size_t>(uniform(3, 200));
      const auto picked = tsdb::lttb(p.times, p.values, n);
      REQUIRE(picked.size() == std::min(n, p.times.size()));
      CHECK(picked.front() == 0);
      CHECK(picked.back() == p.times.size() - 1);
      CHECK(std::is_sorted(picked.begin(), picked.end()));
      CHECK(std::adjacent_find(picked.begin(), picked.end()) == picked.end());
    }
    points flat;
    for (int i = 0; i < 1000; ++i) {
      flat.times.push_back(i);
      flat.values.push_back(i == 637 ? 100.0 : 0.0);
    }
    const auto picked = tsdb::lttb(flat.times, flat.values, 20);
    CHECK(std::find(picked.begin(), picked.end(), 637) != picked.end());
  }

  TEST_CASE("M4 keeps first, last, min and max of every pixel column") {
    for (int round = 0; round < 100; ++round) {
      const auto p = random_points(static_cast<std::size_t>(uniform(0, 2000)));
      if (p.times.empty()) continue;
      const std::int64_t from = p.times.front();
      const std::int64_t to = p.times.back() + 1;
      const auto n = static_cast<std::size_t>(uniform(1, 100));
      const auto picked = tsdb::m4(p.times, p.values, from, to, n);
      CHECK(std::is_sorted(picked.begin(), picked.end()));
      const double width = static_cast<double>(to - from) / static_cast<double>(n);
      for (std::size_t c = 0; c < n; ++c) {
        std::vector<std::size_t> members;
        for (std::size_t i = 0; i < p.times.size(); ++i)
          if (std::min(n - 1, static_cast<std::size_t>(static_cast<double>(p.times[i] - from) / width)) == c)
            members.push_back(i);
        if (members.empty()) continue;
        double lo = std::numeric_limits<double>::infinity();
        double hi = -lo;
        double got_lo = lo;
        double got_hi = hi;
        for (const auto i : members) {
          lo = std::min(lo, p.values[i]);
          hi = std::max(hi, p.values[i]);
        }
        bool has_first = false;
        bool has_last = false;
        for (const auto i : picked) {
          if (std::find(members.begin(), members.end(), i) == members.end()) continue;
          has_first |= i == members.front();
          has_last |= i == members.back();
          got_lo = std::min(got_lo, p.values[i]);
          got_hi = std::max(got_hi, p.values[i]);
        }
        CHECK(has_first);
        CHECK(has_last);
        CHECK(got_lo == lo);
        CHECK(got_hi == hi);
      }
    }
  }

  TEST_CASE("bucket starts are exact at the ends of int64") {
    CHECK(tsdb::bucket_start(int64_min, 1) == int64_min);
    CHECK(tsdb::bucket_start(int64_max, 1) == int64_max);
    CHECK(tsdb::bucket_start(int64_min + 5, 2) == int64_min + 4);
    CHECK(tsdb::bucket_start(int64_max, 1'000'000'000'000'000'000) == 9'000'000'000'000'000'000);
    CHECK(tsdb::bucket_start(-9'000'000'000'000'000'000, 1'000'000'000'000'000'000) ==
          -9'000'000'000'000'000'000);
    CHECK(tsdb::bucket_start(int64_max, int64_max) == int64_max);
    CHECK(tsdb::bucket_start(-1, int64_max) == -int64_max);
    // t - origin overflows here; the bucket is still the one holding t.
    CHECK(tsdb::bucket_start(int64_max, 10, int64_min) == int64_max - 5);
    CHECK(tsdb::bucket_start(int64_min + 20, 10, int64_max) == int64_min + 15);
  }

  TEST_CASE("extreme ranges: time_bucket and increase give exact buckets or none, never overflow") {
    // The showcase request that crashed: 18 buckets of 10^18 over [-9e18, 9e18).
    const std::vector<std::int64_t> times{int64_min, -9'000'000'000'000'000'000, -1,
                                          0,         8'999'999'999'999'999'999,  int64_max};
    const std::vector<double> values{1, 2, 3, 4, 5, 6};
    const auto buckets = tsdb::aggregate(times, values, -9'000'000'000'000'000'000, 9'000'000'000'000'000'000,
                                         1'000'000'000'000'000'000);
    REQUIRE(buckets.size() == 18);
    for (std::size_t i = 0; i < buckets.size(); ++i)
      CHECK(wide{buckets[i].start} ==
            wide{-9'000'000'000'000'000'000} + static_cast<wide>(i) * 1'000'000'000'000'000'000);
    CHECK(buckets[0].count == 1);
    CHECK(buckets[8].count == 1);
    CHECK(buckets[9].count == 1);
    CHECK(buckets[17].count == 1);
    // Too many buckets, a start before INT64_MIN, no width, no range: no buckets.
    CHECK(tsdb::aggregate(times, values, int64_min, int64_max, 1).empty());
    CHECK(tsdb::aggregate(times, values, int64_min, 0, 1'000'000'000'000'000'000).empty());
    CHECK(tsdb::aggregate(times, values, 0, 10, 0).empty());
    CHECK(tsdb::aggregate(times, values, 10, 0, 1).empty());
    // The whole of int64 in two buckets of the widest width that starts inside it.
    const auto whole = tsdb::aggregate(times, values, int64_min + 1, int64_max, int64_max);
    REQUIRE(whole.size() == 2);
    CHECK(whole[0].start == -int64_max);
    CHECK(whole[0].count == 2);
    CHECK(whole[1].start == 0);
    CHECK(whole[1].count == 2);
    const auto inc = tsdb::increase(times, values, int64_min + 1, int64_max, int64_max);
    REQUIRE(inc.size() == 2);
    CHECK(inc[0] == 2);
    CHECK(inc[1] == 2);
    CHECK(tsdb::increase(times, values, int64_min, int64_max, 1).empty());
    // Moving windows and downsampling over points spread across all of int64.
    CHECK(tsdb::moving_sum(times, values, int64_max) == std::vector<double>{1, 3, 5, 9, 12, 11});
    CHECK(tsdb::moving_sum(times, values, 0) == std::vector<double>{0, 0, 0, 0, 0, 0});
    const std::vector<double> spike{0, 0, 0, 100, 0, 0};
    const auto picked = tsdb::lttb(times, spike, 3);
    CHECK(picked == std::vector<std::size_t>{0, 3, 5});
    const auto columns = tsdb::m4(times, values, int64_min, int64_max, 2);
    // Column 0 holds INT64_MIN and -9e18, column 1 -1, 0 and 9e18 - 1 (first and min, last and max).
    CHECK(columns == std::vector<std::size_t>{0, 1, 2, 4});
  }

  TEST_CASE("random extreme ranges: buckets match 128-bit arithmetic") {
    for (int round = 0; round < 5'000; ++round) {
      std::int64_t from = extreme_time();
      std::int64_t to = extreme_time();
      if (uniform(0, 3) != 0 && from > to) std::swap(from, to);
      const std::int64_t width = uniform(0, 50) == 0 ? -uniform<std::int64_t>(0, 5) : extreme_width();
      CAPTURE(from);
      CAPTURE(to);
      CAPTURE(width);
      std::vector<std::int64_t> times;
      for (int i = 0; i < 4; ++i) times.push_back(extreme_time());
      std::sort(times.begin(), times.end());
      const std::vector<double> values(times.size(), 1.0);
      // Allowed but large counts would only make the test slow: checked where they are refused.
      if (width > 0 && to > from) {
        const wide count = (wide{to} - floor_to(from, width) + width - 1) / width;
        if (count > 100'000 && count <= wide{10'000'000}) continue;
      }
      const auto got = tsdb::aggregate(times, values, from, to, width);
      const auto increases = tsdb::increase(times, values, from, to, width);
      if (width <= 0 || to <= from) {
        CHECK(got.empty());
        CHECK(increases.empty());
        continue;
      }
      const wide first = floor_to(from, width);
      const wide count = (wide{to} - first + width - 1) / width;
      if (first < int64_min || count > wide{10'000'000}) {
        CHECK(got.empty());
        CHECK(increases.empty());
        continue;
      }
      REQUIRE(got.size() == static_cast<std::size_t>(count));
      CHECK(increases.size() == got.size());
      std::vector<std::uint64_t> want(got.size());
      for (const auto t : times)
        if (t >= from && t < to) ++want[static_cast<std::size_t>((wide{t} - first) / width)];
      for (std::size_t i = 0; i < got.size(); ++i) {
        CHECK(wide{got[i].start} == first + static_cast<wide>(i) * width);
        CHECK(got[i].count == want[i]);
        CHECK(tsdb::bucket_start(got[i].start, width) == got[i].start);
      }
      for (const auto t : times)
        CHECK(wide{tsdb::bucket_start(t, width)} == std::max(floor_to(t, width), wide{int64_min}));
    }
  }
}
