#pragma once
/// @file keel/redis/async.hpp
/// @brief client requests with any Asio completion token: `use_future`, `deferred`,
/// `use_awaitable` (coroutines) or a plain callback. Kept apart from client.hpp so that code
/// which only needs the blocking or callback API does not compile Asio's headers.
/// Not included by <keel/redis.hpp> for the same reason: include it where you use it.
#include <keel/redis/client.hpp>
#include <keel/redis/detail/completion.hpp>

#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::redis {

/// Sends one command on `c` without blocking. Completion signature:
/// `void(keel::error_code, keel::redis::resp_value)`; errors as for client::submit, plus
/// errc::invalid_argument for an empty command. The arguments are encoded before this returns
/// (they need not outlive it). The handler runs on its associated executor (a coroutine's for
/// `use_awaitable`), never inside this call. There is no per-operation cancellation:
/// `command_timeout` bounds the wait.
template <class CompletionToken>
auto async_command(client& c, std::span<const std::string_view> args, CompletionToken&& token) {
  std::string encoded;
  if (!args.empty()) append_command(encoded, args);
  return detail::async_via_callback<error_code, resp_value>(
      std::forward<CompletionToken>(token),
      [&c, encoded = std::move(encoded)](std::function<void(error_code, resp_value)> done) mutable {
        if (encoded.empty()) return c.post([done = std::move(done)] { done(errc::invalid_argument, {}); });
        c.submit(std::move(encoded), 1, [done = std::move(done)](error_code ec, std::vector<resp_value> r) {
          done(ec, ec ? resp_value{} : std::move(r.front()));
        });
      });
}

/// Sends `count` encoded commands as one pipeline. Completion signature:
/// `void(keel::error_code, std::vector<keel::redis::resp_value>)`, the replies in order.
template <class CompletionToken>
auto async_pipeline(client& c, std::string encoded, std::size_t count, CompletionToken&& token) {
  return detail::async_via_callback<error_code, std::vector<resp_value>>(
      std::forward<CompletionToken>(token),
      [&c, encoded = std::move(encoded),
       count](std::function<void(error_code, std::vector<resp_value>)> done) mutable {
        c.submit(std::move(encoded), count, std::move(done));
      });
}

}  // namespace keel::redis
