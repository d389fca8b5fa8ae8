#pragma once
/// @file keel/redis/subscriber.hpp
/// @brief Redis pub/sub: SUBSCRIBE, PSUBSCRIBE and their UNSUBSCRIBEs on a dedicated
/// connection, each message handed to a callback as it arrives. PUBLISH is an ordinary
/// command: send it with `client` or `connection`.
#include <keel/core/result.hpp>
#include <keel/redis/error.hpp>
#include <keel/redis/options.hpp>

#include <cstddef>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace keel::redis {

/// One published message.
struct message {
  std::string channel;
  std::string payload;
  /// The pattern it matched when it came by PSUBSCRIBE; empty for a SUBSCRIBE.
  std::string pattern{};
};

/// What a subscriber calls. Both run on the subscriber's own I/O thread, one at a time, in the
/// order Redis sent the messages; they must not block for long (the next message waits) and
/// must not call the subscriber's blocking methods (a contract violation: it would deadlock).
struct subscriber_handlers {
  std::function<void(const message&)> on_message;
  /// Called once when the connection is lost or sends garbage (errc::connection_lost,
  /// protocol_error); the subscriber is closed afterwards.
  std::function<void(error_code)> on_error{};
};

/// A connection in subscribed mode. Delivery is Redis's: at most once, to whoever is
/// subscribed when the message is published; nothing is kept for a subscriber that was down.
/// After a lost connection it does not reconnect by itself (messages published meanwhile are
/// gone, so the application has to catch up from its source of truth anyway): make a new one.
class subscriber {
 public:
  /// Connects (and AUTHs). @returns errc::unavailable, timeout, server_error.
  [[nodiscard]] static result<subscriber> connect(const options& options, subscriber_handlers handlers);
  subscriber(subscriber&&) noexcept;
  subscriber& operator=(subscriber&&) noexcept;
  /// Closes the connection; no handler runs after this returns.
  ~subscriber();

  /// Subscribes and returns once Redis has confirmed every channel: a message published after
  /// that reaches `on_message`. @returns errc::invalid_argument (no channels), timeout, closed.
  [[nodiscard]] result<void> subscribe(std::span<const std::string_view> channels);
  [[nodiscard]] result<void> subscribe(std::initializer_list<std::string_view> channels) {
    return subscribe(std::span<const std::string_view>(channels.begin(), channels.size()));
  }
  /// Glob-style patterns (`news.*`); messages carry the pattern they matched.
  [[nodiscard]] result<void> psubscribe(std::span<const std::string_view> patterns);
  [[nodiscard]] result<void> psubscribe(std::initializer_list<std::string_view> patterns) {
    return psubscribe(std::span<const std::string_view>(patterns.begin(), patterns.size()));
  }
  /// Returns once Redis has confirmed: nothing published on them afterwards is delivered.
  /// No channels: every channel.
  [[nodiscard]] result<void> unsubscribe(std::span<const std::string_view> channels = {});
  [[nodiscard]] result<void> unsubscribe(std::initializer_list<std::string_view> channels) {
    return unsubscribe(std::span<const std::string_view>(channels.begin(), channels.size()));
  }
  /// No patterns: every pattern.
  [[nodiscard]] result<void> punsubscribe(std::span<const std::string_view> patterns = {});
  [[nodiscard]] result<void> punsubscribe(std::initializer_list<std::string_view> patterns) {
    return punsubscribe(std::span<const std::string_view>(patterns.begin(), patterns.size()));
  }

  /// Channels plus patterns subscribed, as Redis last confirmed.
  [[nodiscard]] std::size_t subscriptions() const noexcept;
  /// False once the connection is lost or closed.
  [[nodiscard]] bool healthy() const noexcept;

 private:
  struct impl;
  explicit subscriber(std::unique_ptr<impl> i) noexcept;
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::redis
