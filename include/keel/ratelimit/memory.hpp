#pragma once
/// @file keel/ratelimit/memory.hpp
/// @brief The in-process backend: sharded open-addressing tables, a lock per key, bounded
/// memory with expired keys evicted first.
#include <keel/core/clock.hpp>
#include <keel/ratelimit/backend.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace keel::ratelimit {

/// Options of memory_backend.
struct memory_options {
  /// Time source (monotonic readings are used); tests pass a manual_clock.
  const keel::clock* clock = &keel::system_clock::instance();
  /// Independent tables, each with its own lock for inserting keys and growing; rounded up to
  /// a power of two.
  std::size_t shards = 64;
  /// Keys kept at most (over all shards). When a shard is full, keys whose state has expired
  /// are dropped first; if none has, some live key is forgotten (which can only allow more).
  std::size_t max_keys = 1'000'000;
  /// decide() and decide_batch() read the system's coarse monotonic clock (CLOCK_MONOTONIC_COARSE:
  /// about 3 ns instead of about 28 ns on a VM) instead of the exact one. It advances once per
  /// scheduler tick (1-4 ms; see clock_getres) and lags real time by up to one tick, so over
  /// any real interval a limit may allow what it allows over that interval plus one tick, and
  /// reset / retry-after are up to a tick off. Fine for limits whose emission interval
  /// (period / count) is well above a tick; keep it off when exactness to the nanosecond
  /// matters. Only used with the system clock; decide_at() always takes the time it is given.
  bool coarse_clock = false;
};

/// Counters of a memory_backend.
struct memory_stats {
  std::size_t keys = 0;               ///< keys held now
  std::uint64_t evicted_expired = 0;  ///< keys dropped because their state had expired
  std::uint64_t evicted_live = 0;     ///< keys forgotten while still limited (max_keys too small)
};

/// Limit state in this process. No allocation on the decision path once a key exists (except
/// the sliding log, which keeps one entry per request), no global lock: a decision on a key
/// already present finds it without any lock and locks only that key's slot (a byte in the
/// slot's own cache line); inserting a key, growing or evicting locks the key's shard. A
/// multi-key decision locks its shards in address order, then its keys.
class memory_backend final : public backend {
 public:
  explicit memory_backend(memory_options options = {});
  ~memory_backend() override;
  memory_backend(const memory_backend&) = delete;
  memory_backend& operator=(const memory_backend&) = delete;

  [[nodiscard]] result<void> decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                    std::span<decision> out) override;
  /// As decide(), at an explicit time in nanoseconds of the clock's monotonic scale. A time
  /// earlier than one a key's state has already seen is taken as that one (see algorithms.hpp):
  /// threads passing slightly stale timestamps stay exact.
  [[nodiscard]] result<void> decide_at(std::int64_t now_ns, std::span<const keyed_limit> limits,
                                       std::uint64_t cost, std::span<decision> out);
  /// Many independent decisions (each atomic on its own, as decide() would be), faster than
  /// calling decide() in a loop: the keys are hashed and their slots found and prefetched a
  /// few requests ahead, so the cache misses of a large table overlap, and consecutive
  /// requests on one key lock it once. All requests are checked first; on an error nothing is
  /// decided.
  [[nodiscard]] result<void> decide_batch(std::span<const batch_request> batch);
  /// As decide_batch(), at an explicit time (see decide_at()).
  [[nodiscard]] result<void> decide_batch_at(std::int64_t now_ns, std::span<const batch_request> batch);
  [[nodiscard]] result<void> adjust(const keyed_limit& limit, std::int64_t points) override;
  [[nodiscard]] std::string_view name() const noexcept override { return "memory"; }
  /// The clock decisions are made with.
  [[nodiscard]] const keel::clock& clock() const noexcept;

  /// Drops every key whose state has expired; returns how many. Runs by itself when a shard is
  /// full, so calling it is optional (e.g. from a timer, to give memory back sooner).
  std::size_t evict_expired();
  [[nodiscard]] memory_stats stats() const;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::ratelimit
