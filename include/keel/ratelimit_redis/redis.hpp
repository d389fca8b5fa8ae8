#pragma once
/// @file keel/ratelimit_redis/redis.hpp
/// @brief The Redis backend (keel::ratelimit_redis): every decision is one atomic Lua script
/// (EVALSHA, loaded again after a Redis restart), sent over keel::redis's pipelined, pooled
/// client. No Asio header is included here.
#include <keel/core/result.hpp>
#include <keel/ratelimit/backend.hpp>
#include <keel/redis/options.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::ratelimit {

/// Where Redis is and how long to wait for it (keel::redis's options: host, port, password,
/// max_connections, connect_timeout, command_timeout).
using redis_options = keel::redis::options;

/// Limit state in Redis, shared by every process that uses the same Redis and keys. Requests
/// run on `max_connections` connections driven by one I/O thread of the backend's own; each
/// connection carries many requests at once (pipelined, answered in order). Time is
/// Redis's own clock (TIME inside the script), so hosts with skewed clocks agree. Keys expire
/// by themselves once their state is idle. All keys of one decision must live on one Redis
/// (no Redis Cluster slot routing).
class redis_backend final : public backend {
 public:
  explicit redis_backend(redis_options options = {});
  ~redis_backend() override;
  redis_backend(const redis_backend&) = delete;
  redis_backend& operator=(const redis_backend&) = delete;

  [[nodiscard]] result<void> decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                    std::span<decision> out) override;
  /// Several independent decisions (each atomic on its own) in one round trip on one connection.
  [[nodiscard]] result<void> decide_batch(std::span<const batch_request> batch);
  /// decide() without blocking: `done(error)` runs on the backend's I/O thread once `out` is
  /// filled (or with the error). `limits` (with their keys) and `out` must stay valid until then.
  /// Requests from all callers share the connections and are pipelined: what arrives while a
  /// write is in flight goes out in the next one.
  void async_decide(std::span<const keyed_limit> limits, std::uint64_t cost, std::span<decision> out,
                    std::function<void(error_code)> done);
  [[nodiscard]] result<void> adjust(const keyed_limit& limit, std::int64_t points) override;
  [[nodiscard]] std::string_view name() const noexcept override { return "redis"; }

  /// The Lua script every decision runs (for `redis-benchmark`-style comparisons and review).
  [[nodiscard]] static std::string_view decide_script() noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::ratelimit
