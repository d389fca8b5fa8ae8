#include <keel/ratelimit/error.hpp>

namespace keel::ratelimit {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_limit:
      return "invalid rate limit: count and period must be positive, period/count at least 1 ns, and burst "
             "only applies to gcra and token_bucket";
    case errc::cost_exceeds_burst:
      return "the request's cost is larger than the limit's burst (or count), so it could never be allowed; "
             "raise the burst or lower the cost";
    case errc::invalid_policy:
      return "invalid rate-limit policy; the message of the parser names the field to fix";
    case errc::too_many_limits:
      return "too many limits for one request (at most 16); merge policies";
    case errc::backend_unavailable:
      return "the rate-limit store cannot be reached; check that it runs and the address is right (decisions "
             "fall back to each policy's on_failure mode meanwhile)";
    case errc::protocol_error:
      return "the rate-limit store sent a malformed or unexpected reply; check that the address points to a "
             "Redis server";
    case errc::server_error:
      return "the rate-limit store answered with an error; see the log for its message";
    case errc::timeout:
      return "the rate-limit store did not answer in time; check its load and the network";
  }
  return "unknown keel.ratelimit error";
}

constexpr enum_error_category<errc> category{0x6b65656c2e726c6dULL, "keel.ratelimit", &describe};

}  // namespace

const error_category& ratelimit_category() noexcept {
  return category;
}

}  // namespace keel::ratelimit
