#pragma once
/// @file keel/redis/connection.hpp
/// @brief One blocking connection to Redis: a command or a pipeline at a time, with deadlines.
#include <keel/core/result.hpp>
#include <keel/redis/error.hpp>
#include <keel/redis/options.hpp>
#include <keel/redis/resp.hpp>

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace keel::redis {

/// One connection to Redis, for scripts, tools and admin work. Not thread-safe; for many
/// threads or many requests in flight use `client`.
class connection {
 public:
  /// Connects (and AUTHs). @returns errc::unavailable, timeout or server_error (AUTH refused).
  [[nodiscard]] static result<connection> connect(const options& options);
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  ~connection();

  /// Sends one command and reads its reply. A Redis error reply is a value (`is_error()`).
  /// @returns errc::invalid_argument (no arguments), timeout, connection_lost, protocol_error.
  [[nodiscard]] result<resp_value> command(std::span<const std::string_view> args);
  [[nodiscard]] result<resp_value> command(std::initializer_list<std::string_view> args) {
    return command(std::span<const std::string_view>(args.begin(), args.size()));
  }
  /// Writes `encoded` (`count` commands built with append_command) at once and reads `count`
  /// replies: one round trip for all of them.
  [[nodiscard]] result<std::vector<resp_value>> pipeline(std::string_view encoded, std::size_t count);
  /// False after a timeout, a malformed reply or a broken connection: do not reuse it.
  [[nodiscard]] bool healthy() const noexcept;

 private:
  struct impl;
  explicit connection(std::unique_ptr<impl> i) noexcept;
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::redis
