#pragma once
/// @file keel/redis/detail/completion.hpp
/// @brief Bridges a callback-taking start function to any Asio completion token.
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>

#include <functional>
#include <memory>
#include <utility>

namespace keel::redis::detail {

/// Initiates an operation with signature `void(Args...)`: `start(std::function<void(Args...)>)`
/// begins it, and the callback it is given may run on any thread (the client's I/O thread).
/// The token's handler then runs on its associated executor (a plain lambda has the system
/// executor: it runs on the client's I/O thread), never inside the initiating call.
template <class... Args, class CompletionToken, class Start>
auto async_via_callback(CompletionToken&& token, Start&& start) {
  return boost::asio::async_initiate<CompletionToken, void(Args...)>(
      [](auto handler, auto begin) {
        using handler_type = decltype(handler);
        // Asio handlers are move-only and the start function takes a std::function: hold it
        // here. The work guard keeps the handler's execution context from running out of work.
        struct pending {
          handler_type handler;
          boost::asio::executor_work_guard<boost::asio::associated_executor_t<handler_type>> work;
        };
        auto work = boost::asio::make_work_guard(boost::asio::get_associated_executor(handler));
        auto state = std::make_shared<pending>(pending{std::move(handler), std::move(work)});
        begin(std::function<void(Args...)>([state](Args... args) {
          // The work is released here, after dispatch has returned, never by the handler: the
          // posting thread is still inside the context's scheduler (it signals the waiting
          // thread after unlocking), and a context out of work lets its run() return and the
          // owner destroy it under that thread.
          auto held = std::move(state->work);
          boost::asio::dispatch(held.get_executor(), [state, ... args = std::move(args)]() mutable {
            // Moved out, so the handler is destroyed here, on its executor, once it has run —
            // not later wherever the last reference to `state` drops (the I/O thread).
            auto taken = std::move(state->handler);
            std::move(taken)(std::move(args)...);
          });
          held.reset();
        }));
      },
      token, std::forward<Start>(start));
}

}  // namespace keel::redis::detail
