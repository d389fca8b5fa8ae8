#pragma once
/// @file keel/ratelimit/redis_asio.hpp
/// @brief redis_backend decisions with any Asio completion token: `use_future`, `deferred`,
/// `use_awaitable` (coroutines) or a plain callback. Kept apart from redis.hpp so that code
/// which only needs the blocking or callback API does not compile Asio's headers.
#include <keel/ratelimit/redis.hpp>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>

#include <memory>
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
  return boost::asio::async_initiate<CompletionToken, void(error_code)>(
      [](auto handler, redis_backend* backend, std::span<const keyed_limit> what, std::uint64_t units,
         std::span<decision> into) {
        using handler_type = decltype(handler);
        // Asio handlers are move-only and the backend takes a std::function: hold it here. The
        // work guard keeps the handler's execution context from running out of work meanwhile.
        struct pending {
          handler_type handler;
          boost::asio::executor_work_guard<boost::asio::associated_executor_t<handler_type>> work;
        };
        auto work = boost::asio::make_work_guard(boost::asio::get_associated_executor(handler));
        auto state = std::make_shared<pending>(pending{std::move(handler), std::move(work)});
        backend->async_decide(what, units, into, [state](error_code ec) {
          auto executor = state->work.get_executor();
          boost::asio::dispatch(executor, [state, ec]() mutable {
            auto h = std::move(state->handler);
            state->work.reset();
            std::move(h)(ec);
          });
        });
      },
      token, &store, limits, cost, out);
}

}  // namespace keel::ratelimit
