#pragma once
/// @file keel/ratelimit/algorithms.hpp
/// @brief The four algorithms as pure functions over a small state and a `now` in nanoseconds.
///
/// Each algorithm has `peek` (what would happen if `cost` were spent now; it never changes what
/// a later call would decide) and `commit` (spend it). A backend peeks every limit of a request,
/// then commits all of them only if all allowed: a denied request consumes nothing. `check` is
/// peek + commit for the single-limit case. Times are nanoseconds on any one clock (the
/// in-process backend uses `keel::clock::monotonic()`). Threads reading the clock race, so a
/// state may be handed a time earlier than one it has already seen: it then decides as at the
/// latest time it knows of (GCRA and the token bucket by construction; the sliding window at
/// the start of its current window, the log at its newest entry) and never forgets a count.
#include <keel/core/result.hpp>
#include <keel/ratelimit/error.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string_view>

namespace keel::ratelimit {

/// How a limit counts.
enum class algorithm : std::uint8_t {
  sliding_log,     ///< exact: remembers every allowed request within the period (memory ~ count)
  sliding_window,  ///< approximate: two counters, previous window weighted by its overlap (Cloudflare)
  gcra,            ///< generic cell rate algorithm: one timestamp, smooth rate with a burst (redis-cell)
  token_bucket,    ///< a bucket of `burst` tokens refilled at count/period; decides exactly as gcra
};

/// "sliding_log", "sliding_window", "gcra", "token_bucket".
[[nodiscard]] std::string_view to_string(algorithm a) noexcept;

/// The number a shared store's server-side code (the Redis script, the Postgres function) knows
/// each algorithm by: 0 sliding_log, 1 sliding_window, 2 gcra, 3 token_bucket. Stored state and
/// deployed scripts depend on it, so it never changes for an existing algorithm.
[[nodiscard]] constexpr std::int64_t storage_code(algorithm a) noexcept {
  switch (a) {
    case algorithm::sliding_log:
      return 0;
    case algorithm::sliding_window:
      return 1;
    case algorithm::gcra:
      return 2;
    case algorithm::token_bucket:
      return 3;
  }
  return 2;
}
/// The algorithm named `name` (as to_string spells it), or nullopt.
[[nodiscard]] std::optional<algorithm> parse_algorithm(std::string_view name) noexcept;

/// A limit: `count` units per `period`.
struct limit {
  ratelimit::algorithm algorithm = algorithm::gcra;
  std::uint64_t count = 100;
  std::chrono::nanoseconds period = std::chrono::seconds(1);
  /// gcra / token_bucket: units that may be spent at once; 0 means `count`.
  std::uint64_t burst = 0;
  /// After a denial, deny the key outright for this long (nginx/rate-limiter-flexible "block").
  std::chrono::nanoseconds block{0};

  /// What may be spent at once: `burst` for gcra/token_bucket when set, `count` otherwise.
  [[nodiscard]] std::uint64_t capacity() const noexcept { return burst != 0 ? burst : count; }
  /// gcra / token_bucket: the time one unit takes to come back, period / count (whole ns).
  [[nodiscard]] std::int64_t emission_interval_ns() const noexcept {
    return period.count() / static_cast<std::int64_t>(count);
  }
  friend bool operator==(const limit&, const limit&) = default;
};

/// @returns errc::invalid_limit when `l` cannot work: zero count or period, period/count under
/// 1 ns, a burst on a window algorithm, a sliding log over 1,000,000 units, or numbers so large
/// the arithmetic could overflow (count × period beyond ~292 years of nanoseconds).
[[nodiscard]] result<void> validate(const limit& l) noexcept;

/// What a request was told.
struct decision {
  bool allowed = true;
  /// The quota: `limit::capacity()`.
  std::uint64_t limit = 0;
  /// Units still available after this request (0 when denied or exhausted).
  std::uint64_t remaining = 0;
  /// Time until the quota is whole again if nothing more is spent.
  std::chrono::nanoseconds reset{0};
  /// When denied: the time after which the same request would be allowed; zero when allowed.
  std::chrono::nanoseconds retry_after{0};
};

/// GCRA: the theoretical arrival time of the next request.
struct gcra_state {
  std::int64_t tat = 0;
};
/// Token bucket: credit in nanoseconds (one unit = emission interval) at `last`.
struct token_bucket_state {
  std::int64_t credit = 0;  ///< may go negative after a penalty
  std::int64_t last = 0;
  bool fresh = true;  ///< a bucket never used is full
};
/// Sliding window counter: the current fixed window's index and the counts of it and the one before.
struct sliding_window_state {
  std::int64_t window = 0;
  std::uint64_t previous = 0;
  std::uint64_t current = 0;
};
/// Sliding log: every allowed request still inside the period, oldest first.
struct sliding_log_state {
  struct entry {
    std::int64_t at;
    std::uint64_t cost;
  };
  std::deque<entry> entries;
  std::uint64_t used = 0;  ///< sum of entries' costs
};

// peek: the decision for spending `cost` at `now` (cost <= capacity, checked by the caller).
// commit: spend it. idle: the state is indistinguishable from a fresh one at `now` (evictable).
// adjust: penalty (points > 0, spends units as if requests came) or reward (points < 0, gives
// units back, never beyond a fresh state).
[[nodiscard]] decision peek(const limit& l, const gcra_state& s, std::int64_t now,
                            std::uint64_t cost) noexcept;  // = peek(gcra_params(l), …)
void commit(const limit& l, gcra_state& s, std::int64_t now, std::uint64_t cost) noexcept;
[[nodiscard]] bool idle(const limit& l, const gcra_state& s, std::int64_t now) noexcept;
void adjust(const limit& l, gcra_state& s, std::int64_t now, std::int64_t points) noexcept;

[[nodiscard]] decision peek(const limit& l, const token_bucket_state& s, std::int64_t now,
                            std::uint64_t cost) noexcept;
void commit(const limit& l, token_bucket_state& s, std::int64_t now, std::uint64_t cost) noexcept;
[[nodiscard]] bool idle(const limit& l, const token_bucket_state& s, std::int64_t now) noexcept;
void adjust(const limit& l, token_bucket_state& s, std::int64_t now, std::int64_t points) noexcept;

[[nodiscard]] decision peek(const limit& l, const sliding_window_state& s, std::int64_t now,
                            std::uint64_t cost) noexcept;
void commit(const limit& l, sliding_window_state& s, std::int64_t now, std::uint64_t cost) noexcept;
[[nodiscard]] bool idle(const limit& l, const sliding_window_state& s, std::int64_t now) noexcept;
void adjust(const limit& l, sliding_window_state& s, std::int64_t now, std::int64_t points) noexcept;

/// Also drops entries that left the period (unobservable: a later peek would ignore them too).
[[nodiscard]] decision peek(const limit& l, sliding_log_state& s, std::int64_t now,
                            std::uint64_t cost) noexcept;
void commit(const limit& l, sliding_log_state& s, std::int64_t now, std::uint64_t cost);
[[nodiscard]] bool idle(const limit& l, const sliding_log_state& s, std::int64_t now) noexcept;
void adjust(const limit& l, sliding_log_state& s, std::int64_t now, std::int64_t points);

namespace detail {
/// Whole units of `interval` in `credit_ns` (none for no credit).
[[nodiscard]] inline std::uint64_t whole_units(std::int64_t credit_ns, std::int64_t interval) noexcept {
  return credit_ns <= 0 ? 0 : static_cast<std::uint64_t>(credit_ns / interval);
}
[[nodiscard]] inline std::chrono::nanoseconds non_negative_ns(std::int64_t v) noexcept {
  return std::chrono::nanoseconds(v < 0 ? 0 : v);
}
}  // namespace detail

/// GCRA's constants of one limit, computed once for many decisions (each costs a division).
struct gcra_params {
  std::int64_t interval = 0;   ///< emission interval: ns per unit
  std::int64_t tolerance = 0;  ///< interval × capacity
  std::uint64_t capacity = 0;

  gcra_params() = default;
  explicit gcra_params(const limit& l) noexcept
      : interval(l.emission_interval_ns()),
        tolerance(interval * static_cast<std::int64_t>(l.capacity())),
        capacity(l.capacity()) {}
};

/// GCRA's peek and spend on precomputed constants, writing `d` field by field: inline, for a
/// backend's hot path (a decision built aside and then copied costs a store-forwarding stall).
inline void peek_into(const gcra_params& p, const gcra_state& s, std::int64_t now, std::uint64_t cost,
                      decision& d) noexcept {
  using detail::non_negative_ns;
  const auto units = [&](std::int64_t credit_ns) noexcept {
    return detail::whole_units(credit_ns, p.interval);
  };
  const std::int64_t base = s.tat > now ? s.tat : now;
  const std::int64_t new_tat = base + p.interval * static_cast<std::int64_t>(cost);
  const std::int64_t allow_at = new_tat - p.tolerance;
  d.limit = p.capacity;
  if (now < allow_at) {
    d.allowed = false;
    d.retry_after = non_negative_ns(allow_at - now);
    d.remaining = units(now + p.tolerance - base);
    d.reset = non_negative_ns(base - now);
  } else {
    d.allowed = true;
    d.retry_after = std::chrono::nanoseconds(0);
    d.remaining = units(now + p.tolerance - new_tat);
    d.reset = non_negative_ns(new_tat - now);
  }
}

/// peek_into, then commit when allowed (cost <= capacity, checked by the caller), in one pass.
inline void spend_into(const gcra_params& p, gcra_state& s, std::int64_t now, std::uint64_t cost,
                       decision& d) noexcept {
  peek_into(p, s, now, cost, d);
  // What commit() would write, without dividing for the interval again: reset is exactly
  // new_tat − now when allowed.
  if (d.allowed) s.tat = now + d.reset.count();
}

/// peek, then commit when allowed (cost <= capacity, checked by the caller).
[[nodiscard]] inline decision spend(const limit& l, gcra_state& s, std::int64_t now,
                                    std::uint64_t cost) noexcept {
  decision d;
  spend_into(gcra_params(l), s, now, cost, d);
  return d;
}
template <class State>
[[nodiscard]] decision spend(const limit& l, State& s, std::int64_t now, std::uint64_t cost) {
  const decision d = peek(l, s, now, cost);
  if (d.allowed) commit(l, s, now, cost);
  return d;
}

/// peek, then commit when allowed. A cost of 0 only asks (remaining, reset) and spends nothing.
/// @returns errc::cost_exceeds_burst when `cost` could never be allowed (it is larger than
/// `l.capacity()`).
template <class State>
[[nodiscard]] result<decision> check(const limit& l, State& s, std::int64_t now, std::uint64_t cost = 1) {
  if (cost > l.capacity()) return errc::cost_exceeds_burst;
  return spend(l, s, now, cost);
}

}  // namespace keel::ratelimit
