#pragma once
/// @file keel/redis/error.hpp
/// @brief `keel::redis::errc` and its category "keel.redis".
#include <keel/core/error.hpp>

namespace keel::redis {

/// What went wrong talking to Redis. A Redis error reply to a command (`-ERR ...`) is not an
/// error of the call: it is a value (`resp_value::is_error()`), as the command's answer.
enum class errc {
  unavailable = 1,   ///< Redis cannot be reached (refused, unresolvable, or down before anything was sent)
  connection_lost,   ///< the connection closed after the request was written: Redis may have run it
  protocol_error,    ///< the server sent something that is not valid RESP2, or not the reply expected
  server_error,      ///< Redis refused a command keel sends for you (AUTH, SCRIPT LOAD, SUBSCRIBE)
  timeout,           ///< no (complete) answer within the connect or command timeout
  invalid_argument,  ///< a call without the arguments it needs (an empty command, no channels)
  closed,            ///< the subscriber was closed (or lost its connection) and takes no more calls
};

/// The category of keel::redis::errc ("keel.redis").
[[nodiscard]] const error_category& redis_category() noexcept;

}  // namespace keel::redis

KEEL_ERROR_ENUM(keel::redis, redis_category);
