#pragma once
/// @file keel/redis/client.hpp
/// @brief A thread-safe Redis client: a pool of pipelined connections driven by one I/O
/// thread of its own. Blocking calls and callbacks here; any Asio completion token in
/// keel/redis/async.hpp. No Asio header is included here.
#include <keel/core/result.hpp>
#include <keel/redis/error.hpp>
#include <keel/redis/options.hpp>
#include <keel/redis/resp.hpp>
#include <keel/redis/script.hpp>

#include <cstddef>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::redis {

/// Requests run on `max_connections` connections, used in turn and opened on first use; each
/// carries many requests at once: what callers submit while a write is in flight goes out in
/// the next write, and replies are matched to requests in order (Redis answers in order).
///
/// Failures. Any failure of a connection (refused, reset, malformed reply, a request past its
/// deadline) fails every request on it, and the connection is replaced on next use; every
/// request completes, none hangs. When an established connection is lost (a killed client,
/// an idle timeout, a proxy restart), requests not yet written to it go out on another one.
/// A request whose write had begun is **never sent again**: Redis may have run it and only the
/// reply been lost (an INCR, a rate-limit decision would count twice). It fails with
/// errc::connection_lost and the caller decides.
///
/// Not for SUBSCRIBE/PSUBSCRIBE (use `subscriber`), nor for commands that change the
/// connection's state (SELECT, CLIENT REPLY, MULTI across several submissions): requests from
/// all callers share the connections.
class client {
 public:
  /// `void(error_code, replies)`: `replies` holds one value per command when the error is
  /// empty (Redis error replies are values), nothing otherwise.
  using reply_handler = std::function<void(error_code, std::vector<resp_value>)>;

  explicit client(options options = {});
  /// Stops the I/O thread; handlers of requests still in flight are not called.
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Sends `encoded` (`replies` commands, built with append_command or script::append_call) as
  /// one unit on one connection, without blocking. `done` runs on the client's I/O thread,
  /// never inside this call, and must not block. Errors: errc::unavailable, connection_lost,
  /// timeout (no complete answer within `command_timeout`, plus `connect_timeout` when the
  /// connection was still opening), protocol_error, server_error (AUTH refused).
  void submit(std::string encoded, std::size_t replies, reply_handler done);
  /// submit() for `replies` EVALSHA calls of `s` (script::append_call): those answered
  /// NOSCRIPT (they did not run) are sent again after a SCRIPT LOAD, so `done` sees the
  /// script's replies. `s` must stay valid until `done` has run.
  void submit_script(const script& s, std::string encoded, std::size_t replies, reply_handler done);
  /// Runs `fn` on the client's I/O thread (to complete a request refused before submitting).
  void post(std::function<void()> fn);

  /// Blocking: one command and its reply.
  [[nodiscard]] result<resp_value> command(std::span<const std::string_view> args);
  [[nodiscard]] result<resp_value> command(std::initializer_list<std::string_view> args) {
    return command(std::span<const std::string_view>(args.begin(), args.size()));
  }
  /// Blocking: `count` encoded commands in one round trip, their replies in order.
  [[nodiscard]] result<std::vector<resp_value>> pipeline(std::string encoded, std::size_t count);

  /// The options this client was made with.
  [[nodiscard]] const options& settings() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::redis
