#include <keel/core/assert.hpp>
#include <keel/ratelimit/algorithms.hpp>

#include <algorithm>
#include <array>
#include <limits>

namespace keel::ratelimit {
namespace {

// Products of a count and a period in nanoseconds reach 2^80 and beyond; the sliding window
// compares them exactly in 128 bits rather than rounding through floating point.
__extension__ using u128 = unsigned __int128;

constexpr std::uint64_t max_log_units = 1'000'000;
// Keeps every count × period and tat + cost × interval far from int64 overflow.
constexpr std::int64_t max_span_ns = std::numeric_limits<std::int64_t>::max() / 4;

std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

using detail::non_negative_ns;
using detail::whole_units;

}  // namespace

std::string_view to_string(algorithm a) noexcept {
  switch (a) {
    case algorithm::sliding_log:
      return "sliding_log";
    case algorithm::sliding_window:
      return "sliding_window";
    case algorithm::gcra:
      return "gcra";
    case algorithm::token_bucket:
      return "token_bucket";
  }
  return "unknown";
}

std::optional<algorithm> parse_algorithm(std::string_view name) noexcept {
  for (const auto a :
       {algorithm::sliding_log, algorithm::sliding_window, algorithm::gcra, algorithm::token_bucket}) {
    if (to_string(a) == name) return a;
  }
  return std::nullopt;
}

result<void> validate(const limit& l) noexcept {
  if (l.count == 0 || l.period.count() <= 0 || l.period.count() > max_span_ns) return errc::invalid_limit;
  if (l.count > static_cast<std::uint64_t>(l.period.count()))
    return errc::invalid_limit;  // under 1 ns per unit
  if (l.block.count() < 0 || l.block.count() > max_span_ns) return errc::invalid_limit;
  switch (l.algorithm) {
    case algorithm::sliding_log:
      if (l.burst != 0 || l.count > max_log_units) return errc::invalid_limit;
      break;
    case algorithm::sliding_window:
      if (l.burst != 0) return errc::invalid_limit;
      break;
    case algorithm::gcra:
    case algorithm::token_bucket: {
      const auto interval = static_cast<u128>(l.emission_interval_ns());
      if (interval * l.capacity() > static_cast<u128>(max_span_ns)) return errc::invalid_limit;
      break;
    }
  }
  return {};
}

// ---- GCRA ------------------------------------------------------------------------------------

decision peek(const limit& l, const gcra_state& s, std::int64_t now, std::uint64_t cost) noexcept {
  decision d;
  peek_into(gcra_params(l), s, now, cost, d);
  return d;
}

void commit(const limit& l, gcra_state& s, std::int64_t now, std::uint64_t cost) noexcept {
  s.tat = std::max(s.tat, now) + l.emission_interval_ns() * static_cast<std::int64_t>(cost);
}

bool idle(const limit&, const gcra_state& s, std::int64_t now) noexcept {
  return s.tat <= now;
}

void adjust(const limit& l, gcra_state& s, std::int64_t now, std::int64_t points) noexcept {
  const std::int64_t delta = l.emission_interval_ns() * points;
  s.tat = points >= 0 ? std::max(s.tat, now) + delta : std::max(now, s.tat + delta);
}

// ---- token bucket ------------------------------------------------------------------------------
// Credit is kept in nanoseconds of refill (one unit = one emission interval), so refilling is an
// integer addition and decisions match GCRA's exactly.

namespace {
std::int64_t current_credit(const limit& l, const token_bucket_state& s, std::int64_t now) noexcept {
  const std::int64_t full = l.emission_interval_ns() * static_cast<std::int64_t>(l.capacity());
  if (s.fresh) return full;
  if (now <= s.last) return s.credit;
  const std::int64_t elapsed = now - s.last;
  return elapsed >= full - s.credit ? full : s.credit + elapsed;
}
}  // namespace

decision peek(const limit& l, const token_bucket_state& s, std::int64_t now, std::uint64_t cost) noexcept {
  const std::int64_t interval = l.emission_interval_ns();
  const std::int64_t full = interval * static_cast<std::int64_t>(l.capacity());
  const std::int64_t credit = current_credit(l, s, now);
  const std::int64_t need = interval * static_cast<std::int64_t>(cost);
  decision d{.limit = l.capacity()};
  if (credit < need) {
    d.allowed = false;
    d.retry_after = non_negative_ns(need - credit);
    d.remaining = whole_units(credit, interval);
    d.reset = non_negative_ns(full - credit);
  } else {
    d.remaining = whole_units(credit - need, interval);
    d.reset = non_negative_ns(full - (credit - need));
  }
  return d;
}

void commit(const limit& l, token_bucket_state& s, std::int64_t now, std::uint64_t cost) noexcept {
  s.credit = current_credit(l, s, now) - l.emission_interval_ns() * static_cast<std::int64_t>(cost);
  s.last = std::max(now, s.fresh ? now : s.last);
  s.fresh = false;
}

bool idle(const limit& l, const token_bucket_state& s, std::int64_t now) noexcept {
  return s.fresh ||
         current_credit(l, s, now) >= l.emission_interval_ns() * static_cast<std::int64_t>(l.capacity());
}

void adjust(const limit& l, token_bucket_state& s, std::int64_t now, std::int64_t points) noexcept {
  const std::int64_t full = l.emission_interval_ns() * static_cast<std::int64_t>(l.capacity());
  const std::int64_t credit = current_credit(l, s, now) - l.emission_interval_ns() * points;
  s.credit = std::min(credit, full);
  s.last = std::max(now, s.fresh ? now : s.last);
  s.fresh = false;
}

// ---- sliding window counter --------------------------------------------------------------------
// estimate = previous × (period − elapsed) / period + current, compared multiplied by period.

namespace {
struct rolled {
  std::int64_t window;
  std::uint64_t previous;
  std::uint64_t current;
  std::int64_t elapsed;  // since the current window began
};

rolled roll(const limit& l, const sliding_window_state& s, std::int64_t now) noexcept {
  const std::int64_t period = l.period.count();
  std::int64_t w = floor_div(now, period);
  if (w < s.window && (s.window != 0 || s.current != 0 || s.previous != 0)) {
    // A time before the window the state counts in (a thread's slightly stale timestamp) is
    // taken as that window's start: counts are never forgotten by time going backwards.
    w = s.window;
    now = w * period;
  }
  rolled r{w, 0, 0, now - w * period};
  if (s.window == w) {
    r.previous = s.previous;
    r.current = s.current;
  } else if (s.window + 1 == w) {
    r.previous = s.current;
  }
  return r;
}

// Smallest e in [0, period] with weight × (period − e) <= budget × period (weight > 0).
std::int64_t earliest_elapsed(std::uint64_t weight, std::uint64_t budget, std::int64_t period) noexcept {
  KEEL_ASSERT(weight > 0, "only a window holding requests has an earliest time");
  const u128 allowed_tail = static_cast<u128>(budget) * static_cast<u128>(period) / weight;
  if (allowed_tail >= static_cast<u128>(period)) return 0;
  return period - static_cast<std::int64_t>(allowed_tail);
}
}  // namespace

decision peek(const limit& l, const sliding_window_state& s, std::int64_t now, std::uint64_t cost) noexcept {
  const std::int64_t period = l.period.count();
  const rolled r = roll(l, s, now);
  const auto p = static_cast<u128>(period);
  const u128 carried = static_cast<u128>(r.previous) * static_cast<u128>(period - r.elapsed);
  const u128 quota = static_cast<u128>(l.count) * p;
  // Whole units the window still has before this request: floor((quota − carried) / period) − current.
  const u128 free_scaled = quota > carried ? (quota - carried) / p : 0;
  const std::uint64_t available =
      free_scaled > r.current ? static_cast<std::uint64_t>(free_scaled - r.current) : 0;
  decision d{.limit = l.count};
  const bool allowed = carried + static_cast<u128>(r.current + cost) * p <= quota;
  const std::uint64_t counted = allowed ? r.current + cost : r.current;
  const std::int64_t to_window_end = period - r.elapsed;
  if (counted > 0) {
    d.reset = non_negative_ns(to_window_end + period);
  } else if (r.previous > 0) {
    d.reset = non_negative_ns(to_window_end);
  }
  if (allowed) {
    d.remaining = available - cost;
    return d;
  }
  d.allowed = false;
  d.remaining = available;
  if (r.current + cost <= l.count) {
    // Only the previous window's weight is in the way; it shrinks as this window ages.
    d.retry_after =
        non_negative_ns(earliest_elapsed(r.previous, l.count - r.current - cost, period) - r.elapsed);
  } else {
    // This window is spent; in the next one it becomes the weighted previous window.
    d.retry_after = non_negative_ns(to_window_end + earliest_elapsed(r.current, l.count - cost, period));
  }
  return d;
}

void commit(const limit& l, sliding_window_state& s, std::int64_t now, std::uint64_t cost) noexcept {
  const rolled r = roll(l, s, now);
  s = {r.window, r.previous, r.current + cost};
}

bool idle(const limit& l, const sliding_window_state& s, std::int64_t now) noexcept {
  const rolled r = roll(l, s, now);
  return r.previous == 0 && r.current == 0;
}

void adjust(const limit& l, sliding_window_state& s, std::int64_t now, std::int64_t points) noexcept {
  const rolled r = roll(l, s, now);
  s = {r.window, r.previous, r.current};
  if (points >= 0) {
    s.current += static_cast<std::uint64_t>(points);
    return;
  }
  auto give_back = static_cast<std::uint64_t>(-points);
  const std::uint64_t from_current = std::min(give_back, s.current);
  s.current -= from_current;
  give_back -= from_current;
  s.previous -= std::min(give_back, s.previous);
}

// ---- sliding log -------------------------------------------------------------------------------
// An entry made at t counts during [t, t + period).

namespace {
// A time before the newest entry (a thread's slightly stale timestamp) is taken as that
// entry's: the log stays in time order and nothing counted is forgotten.
std::int64_t not_before_newest(const sliding_log_state& s, std::int64_t now) noexcept {
  return s.entries.empty() ? now : std::max(now, s.entries.back().at);
}

void prune(const limit& l, sliding_log_state& s, std::int64_t now) noexcept {
  const std::int64_t period = l.period.count();
  while (!s.entries.empty() && s.entries.front().at + period <= now) {
    s.used -= s.entries.front().cost;
    s.entries.pop_front();
  }
}
}  // namespace

decision peek(const limit& l, sliding_log_state& s, std::int64_t now, std::uint64_t cost) noexcept {
  now = not_before_newest(s, now);
  prune(l, s, now);
  const std::int64_t period = l.period.count();
  decision d{.limit = l.count};
  if (s.used + cost <= l.count) {
    d.remaining = l.count - s.used - cost;
    if (cost > 0) {
      d.reset = non_negative_ns(period);
    } else if (!s.entries.empty()) {
      d.reset = non_negative_ns(s.entries.back().at + period - now);
    }
    return d;
  }
  d.allowed = false;
  d.remaining = s.used < l.count ? l.count - s.used : 0;
  d.reset = non_negative_ns(s.entries.back().at + period - now);
  const std::uint64_t must_free = s.used + cost - l.count;
  std::uint64_t freed = 0;
  for (const auto& e : s.entries) {
    freed += e.cost;
    if (freed >= must_free) {
      d.retry_after = non_negative_ns(e.at + period - now);
      break;
    }
  }
  return d;
}

void commit(const limit& l, sliding_log_state& s, std::int64_t now, std::uint64_t cost) {
  now = not_before_newest(s, now);
  prune(l, s, now);
  if (cost == 0) return;
  s.entries.push_back({now, cost});
  s.used += cost;
}

bool idle(const limit& l, const sliding_log_state& s, std::int64_t now) noexcept {
  return s.entries.empty() || s.entries.back().at + l.period.count() <= now;
}

void adjust(const limit& l, sliding_log_state& s, std::int64_t now, std::int64_t points) {
  now = not_before_newest(s, now);
  prune(l, s, now);
  if (points >= 0) {
    commit(l, s, now, static_cast<std::uint64_t>(points));
    return;
  }
  auto give_back = static_cast<std::uint64_t>(-points);
  while (give_back > 0 && !s.entries.empty()) {
    auto& newest = s.entries.back();
    const std::uint64_t taken = std::min(give_back, newest.cost);
    newest.cost -= taken;
    s.used -= taken;
    give_back -= taken;
    if (newest.cost == 0) s.entries.pop_back();
  }
}

}  // namespace keel::ratelimit
