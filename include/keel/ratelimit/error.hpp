#pragma once
/// @file keel/ratelimit/error.hpp
/// @brief `keel::ratelimit::errc` and its category "keel.ratelimit".
#include <keel/core/error.hpp>

namespace keel::ratelimit {

/// Errors of keel::ratelimit. A denied request is not an error: it is `decision::allowed == false`.
enum class errc {
  invalid_limit = 1,    ///< a limit with a zero count/period, a too fine rate or a burst where none applies
  cost_exceeds_burst,   ///< a request costs more than the limit could ever allow at once
  invalid_policy,       ///< a policy file or policy that does not make sense (the message names the field)
  too_many_limits,      ///< more limits for one request than a backend call takes
  backend_unavailable,  ///< the store (Redis, Postgres) cannot be reached right now
  protocol_error,       ///< the store answered something that is not valid RESP / not what the script returns
  server_error,         ///< the store answered with an error reply
  timeout,              ///< the store did not answer in time
};

/// The category of `errc` (name "keel.ratelimit").
[[nodiscard]] const error_category& ratelimit_category() noexcept;

[[nodiscard]] inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), ratelimit_category()};
}

}  // namespace keel::ratelimit

template <>
struct boost::system::is_error_code_enum<keel::ratelimit::errc> : std::true_type {};
