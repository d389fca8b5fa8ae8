// The algorithms against exact references under a manual clock, with seeded random traffic.
#include <keel/ratelimit/algorithms.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>

#include <support/random.hpp>
#include <support/result.hpp>

namespace rl = keel::ratelimit;
using namespace std::chrono_literals;

namespace {

struct arrival {
  std::int64_t at;
  std::uint64_t cost;
  bool allowed;
};

// Random traffic: bursts and gaps around the limit's rate, costs 1..max_cost.
std::vector<std::pair<std::int64_t, std::uint64_t>> traffic(const rl::limit& l, std::size_t n,
                                                            std::uint64_t max_cost) {
  std::vector<std::pair<std::int64_t, std::uint64_t>> out;
  std::int64_t t = 1'000'000'000'000;
  const std::int64_t mean_gap = l.period.count() / static_cast<std::int64_t>(l.count);
  for (std::size_t i = 0; i < n; ++i) {
    const int shape = keel::test::uniform(0, 9);
    if (shape < 6) {
      t += keel::test::uniform<std::int64_t>(0, mean_gap);  // faster than the rate: denials happen
    } else if (shape < 9) {
      t += keel::test::uniform<std::int64_t>(0, 3 * mean_gap);
    } else {
      t += keel::test::uniform<std::int64_t>(0, 2 * l.period.count());  // a pause
    }
    out.emplace_back(t, keel::test::uniform<std::uint64_t>(1, max_cost));
  }
  return out;
}

rl::limit random_limit(rl::algorithm a) {
  rl::limit l;
  l.algorithm = a;
  l.count = keel::test::uniform<std::uint64_t>(1, 50);
  l.period = std::chrono::nanoseconds(keel::test::uniform<std::int64_t>(1, 5'000) * 1'000'000);
  if ((a == rl::algorithm::gcra || a == rl::algorithm::token_bucket) && keel::test::uniform(0, 1) == 1) {
    l.burst = keel::test::uniform<std::uint64_t>(1, 80);
  }
  return l;
}

// On a denial, retry_after is exact: one nanosecond earlier is still denied, at it is allowed.
template <class State>
void check_retry_after(const rl::limit& l, const State& s, std::int64_t now, std::uint64_t cost,
                       const rl::decision& d) {
  if (d.allowed) return;
  REQUIRE(d.retry_after.count() > 0);
  State later = s;
  CHECK(rl::peek(l, later, now + d.retry_after.count(), cost).allowed);
  State before = s;
  CHECK_FALSE(rl::peek(l, before, now + d.retry_after.count() - 1, cost).allowed);
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("a limit is validated before use") {
    CHECK(rl::validate(rl::limit{}));
    CHECK_FALSE(rl::validate(rl::limit{.count = 0}));
    CHECK_FALSE(rl::validate(rl::limit{.period = 0s}));
    CHECK_FALSE(rl::validate(rl::limit{.count = 2'000'000'000, .period = 1s}));  // under 1 ns per unit
    CHECK_FALSE(rl::validate(rl::limit{.algorithm = rl::algorithm::sliding_window, .burst = 5}));
    CHECK_FALSE(
        rl::validate(rl::limit{.algorithm = rl::algorithm::sliding_log, .count = 2'000'000, .period = 1h}));
    CHECK(rl::validate(rl::limit{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1s, .burst = 100}));
    CHECK(rl::parse_algorithm("token_bucket") == rl::algorithm::token_bucket);
    CHECK_FALSE(rl::parse_algorithm("leaky"));
  }

  TEST_CASE("a cost larger than the burst is an error, not a denial") {
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1s, .burst = 5};
    rl::gcra_state s;
    const auto d = rl::check(l, s, 0, 6);
    REQUIRE_FALSE(d);
    CHECK(d.error() == rl::errc::cost_exceeds_burst);
    CHECK(d.error().message().find("burst") != std::string::npos);
    CHECK(rl::check(l, s, 0, 5));
  }

  TEST_CASE("gcra: 10 per second with a burst of 3") {
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1s, .burst = 3};
    rl::gcra_state s;
    const std::int64_t t0 = 5'000'000'000;
    for (std::uint64_t i = 0; i < 3; ++i) {
      const auto d = rl::check(l, s, t0, 1).value();
      CHECK(d.allowed);
      CHECK(d.remaining == 2 - i);
      CHECK(d.limit == 3);
    }
    const auto denied = rl::check(l, s, t0, 1).value();
    CHECK_FALSE(denied.allowed);
    CHECK(denied.retry_after == 100ms);  // one emission interval
    CHECK(denied.reset == 300ms);
    CHECK(rl::check(l, s, t0 + 100'000'000, 1).value().allowed);
  }

  TEST_CASE("gcra and token_bucket decide identically (property)") {
    for (int round = 0; round < 200; ++round) {
      rl::limit g = random_limit(rl::algorithm::gcra);
      rl::limit t = g;
      t.algorithm = rl::algorithm::token_bucket;
      rl::gcra_state gs;
      rl::token_bucket_state ts;
      for (const auto& [at, cost] : traffic(g, 300, std::min<std::uint64_t>(g.capacity(), 4))) {
        const auto a = rl::check(g, gs, at, cost).value();
        const auto b = rl::check(t, ts, at, cost).value();
        REQUIRE(a.allowed == b.allowed);
        CHECK(a.remaining == b.remaining);
        CHECK(a.reset == b.reset);
        CHECK(a.retry_after == b.retry_after);
      }
    }
  }

  TEST_CASE("gcra conforms: any interval allows at most burst + interval/T units (property)") {
    for (int round = 0; round < 100; ++round) {
      const rl::limit l = random_limit(rl::algorithm::gcra);
      const std::int64_t interval = l.emission_interval_ns();
      rl::gcra_state s;
      std::vector<arrival> log;
      for (const auto& [at, cost] : traffic(l, 400, std::min<std::uint64_t>(l.capacity(), 3))) {
        const auto d = rl::check(l, s, at, cost).value();
        check_retry_after(l, s, at, cost, d);
        log.push_back({at, cost, d.allowed});
      }
      for (std::size_t i = 0; i < log.size(); ++i) {
        if (!log[i].allowed) continue;
        std::uint64_t sum = 0;
        for (std::size_t j = i; j < log.size(); ++j) {
          if (!log[j].allowed) continue;
          sum += log[j].cost;
          const auto bound = l.capacity() + static_cast<std::uint64_t>((log[j].at - log[i].at) / interval);
          REQUIRE(sum <= bound);
        }
      }
    }
  }

  TEST_CASE("token_bucket: retry_after is exact (property)") {
    for (int round = 0; round < 100; ++round) {
      const rl::limit l = random_limit(rl::algorithm::token_bucket);
      rl::token_bucket_state s;
      for (const auto& [at, cost] : traffic(l, 300, std::min<std::uint64_t>(l.capacity(), 3))) {
        const auto d = rl::check(l, s, at, cost).value();
        check_retry_after(l, s, at, cost, d);
      }
    }
  }

  TEST_CASE("sliding_log matches an exact reference (property)") {
    for (int round = 0; round < 150; ++round) {
      const rl::limit l = random_limit(rl::algorithm::sliding_log);
      rl::sliding_log_state s;
      std::vector<arrival> reference;
      for (const auto& [at, cost] : traffic(l, 300, std::min<std::uint64_t>(l.count, 4))) {
        std::uint64_t in_window = 0;
        for (const auto& r : reference) {
          if (r.allowed && r.at + l.period.count() > at) in_window += r.cost;
        }
        const bool expect = in_window + cost <= l.count;
        rl::sliding_log_state copy = s;
        const auto d = rl::check(l, s, at, cost).value();
        REQUIRE(d.allowed == expect);
        CHECK(d.remaining == (expect ? l.count - in_window - cost : l.count - std::min(in_window, l.count)));
        check_retry_after(l, copy, at, cost, d);
        reference.push_back({at, cost, d.allowed});
      }
    }
  }

  TEST_CASE("sliding_window stays within its documented error bound (property)") {
    // Allowed at t means previous*(P-e)/P + current + cost <= count. The exact count in the
    // sliding period (t-P, t] then stays <= count + previous*e/P (< 2*count), and a denial
    // happens only when exact + cost > count - previous*(P-e)/P.
    for (int round = 0; round < 150; ++round) {
      const rl::limit l = random_limit(rl::algorithm::sliding_window);
      const std::int64_t period = l.period.count();
      rl::sliding_window_state s;
      std::vector<arrival> history;
      for (const auto& [at, cost] : traffic(l, 300, std::min<std::uint64_t>(l.count, 3))) {
        const std::int64_t window = at / period;
        const std::int64_t elapsed = at - window * period;
        std::uint64_t previous = 0;
        std::uint64_t current = 0;
        std::uint64_t exact = 0;
        for (const auto& h : history) {
          if (!h.allowed) continue;
          if (h.at / period == window - 1) previous += h.cost;
          if (h.at / period == window) current += h.cost;
          if (h.at > at - period) exact += h.cost;
        }
        rl::sliding_window_state copy = s;
        const auto d = rl::check(l, s, at, cost).value();
        __extension__ using i128 = __int128;
        if (d.allowed) {
          REQUIRE(current + cost <= l.count);  // the fixed window itself never exceeds the count
          REQUIRE((static_cast<i128>(exact + cost) - static_cast<i128>(l.count)) * period <=
                  static_cast<i128>(previous) * elapsed);
          REQUIRE(exact + cost < 2 * l.count + 1);
        } else {
          const i128 lhs = (static_cast<i128>(exact + cost) - static_cast<i128>(l.count)) * period;
          REQUIRE(lhs > -static_cast<i128>(previous) * (period - elapsed));
        }
        check_retry_after(l, copy, at, cost, d);
        history.push_back({at, cost, d.allowed});
      }
    }
  }

  TEST_CASE("sliding_window under steady random traffic allows about what the exact log allows") {
    const rl::limit window{.algorithm = rl::algorithm::sliding_window, .count = 100, .period = 1s};
    rl::limit log_limit = window;
    log_limit.algorithm = rl::algorithm::sliding_log;
    rl::sliding_window_state ws;
    rl::sliding_log_state ls;
    std::uint64_t by_window = 0;
    std::uint64_t by_log = 0;
    std::int64_t t = 0;
    for (int i = 0; i < 200'000; ++i) {  // 200 periods at ~1.5x the rate, exponential gaps
      const double u =
          std::max(1e-12, static_cast<double>(keel::test::uniform<std::uint64_t>(1, 1'000'000)) / 1e6);
      t += static_cast<std::int64_t>(-std::log(u) * 1e9 / 150.0);
      by_window += rl::check(window, ws, t, 1).value().allowed ? 1U : 0U;
      by_log += rl::check(log_limit, ls, t, 1).value().allowed ? 1U : 0U;
    }
    const double error =
        std::abs(static_cast<double>(by_window) - static_cast<double>(by_log)) / static_cast<double>(by_log);
    MESSAGE("sliding_window allowed " << by_window << ", sliding_log " << by_log << " (error " << error * 100
                                      << "%)");
    CHECK(error < 0.05);
  }

  TEST_CASE("penalties spend and rewards give back") {
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1s};
    rl::gcra_state s;
    rl::adjust(l, s, 0, 10);
    CHECK_FALSE(rl::peek(l, s, 0, 1).allowed);
    rl::adjust(l, s, 0, -3);
    CHECK(rl::peek(l, s, 0, 1).remaining == 2);
    for (const auto a : {rl::algorithm::sliding_log, rl::algorithm::sliding_window}) {
      const rl::limit w{.algorithm = a, .count = 5, .period = 1s};
      rl::sliding_log_state ls;
      rl::sliding_window_state ws;
      if (a == rl::algorithm::sliding_log) {
        rl::adjust(w, ls, 0, 5);
        CHECK_FALSE(rl::peek(w, ls, 0, 1).allowed);
        rl::adjust(w, ls, 0, -2);
        CHECK(rl::peek(w, ls, 0, 1).remaining == 1);
      } else {
        rl::adjust(w, ws, 0, 5);
        CHECK_FALSE(rl::peek(w, ws, 0, 1).allowed);
        rl::adjust(w, ws, 0, -2);
        CHECK(rl::peek(w, ws, 0, 1).remaining == 1);
      }
    }
  }

  TEST_CASE("idle states are recognised, so they can be evicted") {
    const rl::limit l{.algorithm = rl::algorithm::sliding_window, .count = 5, .period = 1s};
    rl::sliding_window_state s;
    REQUIRE(rl::check(l, s, 100, 1).value().allowed);
    CHECK_FALSE(rl::idle(l, s, 1'500'000'000));
    CHECK(rl::idle(l, s, 2'000'000'000));
    const rl::limit g{.algorithm = rl::algorithm::gcra, .count = 5, .period = 1s};
    rl::gcra_state gs;
    const auto d = rl::check(g, gs, 0, 1).value();
    CHECK_FALSE(rl::idle(g, gs, d.reset.count() - 1));
    CHECK(rl::idle(g, gs, d.reset.count()));
  }
}

// The shared stores' server-side code knows algorithms by these numbers; state written by one
// version must mean the same to the next.
static_assert(keel::ratelimit::storage_code(keel::ratelimit::algorithm::sliding_log) == 0);
static_assert(keel::ratelimit::storage_code(keel::ratelimit::algorithm::sliding_window) == 1);
static_assert(keel::ratelimit::storage_code(keel::ratelimit::algorithm::gcra) == 2);
static_assert(keel::ratelimit::storage_code(keel::ratelimit::algorithm::token_bucket) == 3);
