#pragma once
/// @file keel/net/websocket.hpp
/// @brief WebSocket connections with a bounded write queue, rooms and keep-alive pings.
#include <keel/net/http.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace keel::net {

namespace detail {
class websocket_session;
}

/// WebSocket close codes keel uses (RFC 6455 section 7.4.1).
enum class close_code : std::uint16_t {
  normal = 1000,
  going_away = 1001,  ///< the server is shutting down
  protocol_error = 1002,
  policy_violation = 1008,  ///< the peer did not read fast enough (write queue full)
  too_big = 1009,           ///< a message exceeded websocket_options::max_message_bytes
  internal_error = 1011,
};

/// Limits of every WebSocket connection of a server.
struct websocket_options {
  /// Messages waiting to be written to one peer. Past this the peer is too slow: it is closed
  /// with 1008 (policy violation) instead of letting memory grow.
  std::size_t max_queued_messages = 1024;
  /// Bytes waiting to be written to one peer; same policy.
  std::size_t max_queued_bytes = std::size_t{4} * 1024 * 1024;
  /// Largest incoming message; a larger one closes the connection with 1009.
  std::size_t max_message_bytes = std::size_t{1024} * 1024;
  /// A connection silent for this long is closed; after half of it the server sends a ping, and
  /// any pong or message resets the clock. Peers that answer pings stay connected.
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);
  /// Time for the opening and closing handshakes, including a close for a slow consumer.
  std::chrono::milliseconds handshake_timeout = std::chrono::seconds(5);
};

/// A handle to one WebSocket connection; cheap to copy, safe to use from any thread, and
/// harmless after the connection closed (send returns false).
class websocket_connection {
 public:
  explicit websocket_connection(std::shared_ptr<detail::websocket_session> session) noexcept;

  /// Queues a text message. @returns false when the connection is closed or closing, or when
  /// the queue was full — in which case the connection is being closed with 1008.
  [[nodiscard]] bool send(std::string message) const;
  /// Queues a binary message; as send().
  [[nodiscard]] bool send_binary(std::string message) const;
  /// Starts the closing handshake with `code` and `reason`.
  void close(close_code code = close_code::normal, std::string_view reason = {}) const;
  /// Adds the connection to `room` (see server::broadcast). It leaves every room when it closes.
  void join(std::string_view room) const;
  /// Removes the connection from `room`.
  void leave(std::string_view room) const;
  /// The upgrade request, with its path parameters and middleware attributes.
  [[nodiscard]] const request& upgrade_request() const noexcept;
  /// A number unique among the server's connections.
  [[nodiscard]] std::uint64_t id() const noexcept;
  /// Messages queued and not yet written.
  [[nodiscard]] std::size_t queued_messages() const noexcept;

 private:
  std::shared_ptr<detail::websocket_session> session_;
};

/// Why a connection closed.
struct close_reason {
  std::uint16_t code = 0;  ///< the close code, or 1006 when the connection dropped without one
  std::string reason{};
};

/// Callbacks of a WebSocket route; any may be empty. They run on the server's threads, one at a
/// time per connection, in order; keep them short (send() only queues).
struct websocket_handler {
  std::function<void(const websocket_connection&)> on_open{};
  std::function<void(const websocket_connection&, std::string_view message, bool binary)> on_message{};
  std::function<void(const websocket_connection&, const close_reason&)> on_close{};
};

}  // namespace keel::net
