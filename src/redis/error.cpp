#include <keel/redis/error.hpp>

namespace keel::redis {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::unavailable:
      return "Redis cannot be reached; check that it runs and that host and port are right";
    case errc::connection_lost:
      return "the connection to Redis closed after the request was sent, so Redis may have run it; check "
             "before running it again (keel never resends a written request)";
    case errc::protocol_error:
      return "Redis sent a malformed or unexpected reply (the connection was closed); check that the address "
             "points to a Redis server and not to a proxy or another service";
    case errc::server_error:
      return "Redis refused a command keel sent for you (AUTH, SCRIPT LOAD, SUBSCRIBE); see the log for its "
             "reply";
    case errc::timeout:
      return "Redis did not answer in time (the connection was closed); check its load and the network, or "
             "raise command_timeout";
    case errc::invalid_argument:
      return "the call is missing what it needs (an empty command, no channel or pattern); pass at least one";
    case errc::closed:
      return "the subscriber is closed (or lost its connection); create a new one and subscribe again";
  }
  return "unknown keel.redis error";
}

constexpr enum_error_category<errc> category{"keel.redis", &describe};

}  // namespace

const error_category& redis_category() noexcept {
  return category;
}

}  // namespace keel::redis
