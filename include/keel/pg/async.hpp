#pragma once
/// @file keel/pg/async.hpp
/// @brief Postgres on Asio: a statement that does not block its thread, and a LISTEN/NOTIFY
/// listener driven by the connection's socket (no polling thread) that reconnects by itself.
#include <keel/pg/connection.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace keel::pg {

namespace detail {
void start_async_query(const boost::asio::any_io_executor& executor, connection& c, std::string sql,
                       params values, boost::asio::any_completion_handler<void(error_code, rows)> handler);
}  // namespace detail

/// Runs `sql` with `values` on `c` without blocking: waits on the connection's socket with
/// `executor`. Handler signature: `void(keel::error_code, keel::pg::rows)`; it runs on
/// `executor`, never inside this call. Cancellation (any type) sends the server a cancel request; the
/// statement then completes with errc::query_canceled. `c` must stay alive and not be used by
/// anything else until the handler runs. The statement is not cached as prepared.
template <class CompletionToken>
auto async_query(boost::asio::any_io_executor executor, connection& c, std::string sql, params values,
                 CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(error_code, rows)>(
      // The initiation owns its arguments and moves them on; clang-tidy does not see the moves
      // through the generic lambda.
      // NOLINTNEXTLINE(performance-unnecessary-value-param)
      [](auto handler, boost::asio::any_io_executor ex, connection* conn, std::string text, params p) {
        detail::start_async_query(ex, *conn, std::move(text), std::move(p), std::move(handler));
      },
      token, std::move(executor), &c, std::move(sql), std::move(values));
}

/// A notification delivered by NOTIFY / pg_notify.
struct notification {
  std::string channel;
  std::string payload;
  int sender_pid = 0;
};

/// What a listener tells its handler.
struct listener_event {
  enum class kind {
    connected,     ///< listening on every channel for the first time
    notification,  ///< `message` holds a notification
    disconnected,  ///< the connection was lost (`error` says why); reconnecting
    reconnected,   ///< listening again: notifications sent while disconnected were missed,
                   ///< so catch up from the source of truth now
  };
  kind what;
  notification message;
  error_code error;
};

struct listener_options {
  /// Where to connect: a URL or key=value conninfo.
  std::string conninfo;
  /// Channels to LISTEN on.
  std::vector<std::string> channels;
  /// Reconnects wait min_reconnect_delay, doubling up to max_reconnect_delay, each ±20 % so
  /// that listeners cut off together spread out (keel::backoff).
  std::chrono::milliseconds min_reconnect_delay{50};
  std::chrono::milliseconds max_reconnect_delay{5000};
  /// How often an idle connection is checked with a round trip, to notice a server that
  /// vanished without closing the socket.
  std::chrono::milliseconds health_check_interval{5000};
  connect_options connect{.connect_timeout_seconds = 5, .application_name = "keel-listener"};
};

/// LISTENs on channels and calls `handler` for each event, on a strand of the executor.
/// After a connection loss it reconnects with backoff, LISTENs again and reports `reconnected`
/// so the caller can catch up on what it missed. Connecting happens on the executor and blocks
/// it for up to connect_timeout_seconds.
class listener {
 public:
  using handler_type = std::function<void(const listener_event&)>;

  listener(const boost::asio::any_io_executor& executor, listener_options options, handler_type handler);
  /// Stops; the handler is not called afterwards. Stopping posts to the strand; if that throws
  /// (allocation), the handler could run on freed state, so terminating is the safe outcome.
  ~listener();  // NOLINT(bugprone-exception-escape)
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;

  /// Connects and starts listening.
  void start();
  /// Stops listening and closes the connection. Thread-safe, idempotent; no handler calls after
  /// it returns if called on the executor's strand, otherwise at most one in flight.
  void stop();
  /// Reconnections so far.
  [[nodiscard]] std::uint64_t reconnects() const noexcept;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace keel::pg
