#pragma once
/// @file keel/redis/options.hpp
/// @brief Where Redis is and how long to wait for it.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace keel::redis {

/// Where Redis is and how long to wait for it. Used by connection, client and subscriber.
struct options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  /// Sent with AUTH after connecting when not empty.
  std::string password{};
  /// client only: connections, used in turn; each carries any number of requests in flight.
  std::size_t max_connections = 4;
  std::chrono::milliseconds connect_timeout = std::chrono::milliseconds(500);
  /// For one command or one pipeline, from the first byte sent to the last byte read.
  std::chrono::milliseconds command_timeout = std::chrono::milliseconds(500);
};

}  // namespace keel::redis
