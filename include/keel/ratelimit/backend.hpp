#pragma once
/// @file keel/ratelimit/backend.hpp
/// @brief Where limit state lives: the interface every store implements.
#include <keel/core/result.hpp>
#include <keel/ratelimit/algorithms.hpp>

#include <cstdint>
#include <span>
#include <string_view>

namespace keel::ratelimit {

/// One limit applied to one key ("api:ip=10.0.0.1#0").
struct keyed_limit {
  std::string_view key;
  const limit* rule = nullptr;
};

/// One decision of a batch (`memory_backend::decide_batch`, `redis_backend::decide_batch`):
/// each is atomic on its own, as one backend::decide call would be.
struct batch_request {
  std::span<const keyed_limit> limits;
  std::uint64_t cost = 1;
  std::span<decision> out;
};

/// The most limits one decision takes (several policies × several limits each).
inline constexpr std::size_t max_limits_per_decision = 16;

/// A store of limit state. Implementations are thread-safe.
class backend {
 public:
  virtual ~backend() = default;

  /// Decides `cost` against every limit at once, writing one decision per limit into `out`
  /// (same order). All or nothing: `cost` is spent on every limit only if every limit allows;
  /// a denied request spends nothing (a limit with `block` then blocks its key). Keys are
  /// opaque; the same key must always be used with the same algorithm.
  /// @returns errc::too_many_limits, errc::cost_exceeds_burst, or the store's failure
  /// (errc::backend_unavailable, timeout, protocol_error, server_error).
  [[nodiscard]] virtual result<void> decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                            std::span<decision> out) = 0;

  /// Penalty (points > 0: spends units as if requests came, possibly beyond the limit) or
  /// reward (points < 0: gives units back).
  [[nodiscard]] virtual result<void> adjust(const keyed_limit& limit, std::int64_t points) = 0;

  /// "memory", "redis", "postgres": used in metrics and logs.
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;

 protected:
  backend() = default;
  backend(const backend&) = default;
  backend& operator=(const backend&) = default;
};

/// Checks what every backend checks before touching its store.
[[nodiscard]] inline result<void> check_request(std::span<const keyed_limit> limits, std::uint64_t cost,
                                                std::span<decision> out) noexcept {
  if (limits.size() > max_limits_per_decision || out.size() < limits.size()) return errc::too_many_limits;
  for (const auto& l : limits) {
    if (cost > l.rule->capacity()) return errc::cost_exceeds_burst;
  }
  return {};
}

}  // namespace keel::ratelimit
