#pragma once
/// @file keel/ratelimit_redis/redis_asio.hpp
/// @brief redis_backend decisions with any Asio completion token: `use_future`, `deferred`,
/// `use_awaitable` (coroutines) or a plain callback. Kept apart from redis.hpp so that code
/// which only needs the blocking or callback API does not compile Asio's headers.
/// Not included by <keel/ratelimit_redis.hpp> for the same reason: include it where you use it.
#include <keel/ratelimit_redis/redis.hpp>
#include <keel/redis/detail/completion.hpp>

#include <functional>
#include <span>
#include <utility>

namespace keel::ratelimit {

/// Decides `cost` against every limit in `limits` on `store` without blocking, like
/// redis_backend::decide (atomic over all limits, pipelined with every other caller's requests
/// on the backend's connections). Completion signature: `void(keel::error_code)`; `out` holds
/// one decision per limit when the error is empty. Errors: errc::too_many_limits,
/// cost_exceeds_burst, backend_unavailable (refused, reset, Redis killed), timeout (no answer
/// within `command_timeout`), protocol_error, server_error — every request completes, none
/// hangs. The handler runs on its associated executor (a coroutine's for `use_awaitable`),
/// never inside this call; a handler without one (a plain lambda) runs on the backend's I/O
/// thread and must not block. `limits` (with their keys) and `out` must stay valid until
/// completion. There is no per-operation cancellation: `command_timeout` bounds the wait.
template <class CompletionToken>
auto async_decide(redis_backend& store, std::span<const keyed_limit> limits, std::uint64_t cost,
                  std::span<decision> out, CompletionToken&& token) {
  return keel::redis::detail::async_via_callback<error_code>(
      std::forward<CompletionToken>(token),
      [&store, limits, cost, out](std::function<void(error_code)> done) {
        store.async_decide(limits, cost, out, std::move(done));
      });
}

}  // namespace keel::ratelimit
