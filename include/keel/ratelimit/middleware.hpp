#pragma once
/// @file keel/ratelimit/middleware.hpp
/// @brief A keel::net middleware: 429 with RateLimit-Policy, RateLimit and Retry-After headers
/// (draft-ietf-httpapi-ratelimit-headers), 403 for the deny list.
#include <keel/net/http.hpp>
#include <keel/net/router.hpp>
#include <keel/ratelimit/limiter.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace keel::ratelimit {

/// When the RateLimit headers are sent.
enum class header_mode : std::uint8_t {
  always,        ///< on every response a policy applied to
  when_limited,  ///< only on 429s and soft-limited (warned) responses
  never,
};

/// Options of the middleware.
struct middleware_options {
  /// Where the user, API key and tenant come from. By default: request attributes "user" and
  /// "tenant" (set by an auth middleware that runs first), the "X-API-Key" header, and the
  /// peer address (or the first X-Forwarded-For entry when `trust_forwarded_for`).
  std::function<request_attributes(const net::request&)> attributes{};
  /// The cost of a request; 1 by default.
  std::function<std::uint64_t(const net::request&)> cost{};
  header_mode headers = header_mode::always;
  /// Take the client address from X-Forwarded-For: only behind a proxy that sets it.
  bool trust_forwarded_for = false;
};

/// The middleware: asks `l` (which must outlive the server) about every request. A denied one
/// is answered 429 with Retry-After (whole seconds, at least 1) and a JSON error naming the
/// policy; a refused one 403. A warned one goes through with request attribute
/// "ratelimit.warning" set to the policy name, so handlers can see it too.
[[nodiscard]] net::middleware middleware(limiter& l, middleware_options options = {});

/// `"api";q=10;w=1, "api/1";q=1000;w=3600`: each enforced limit in the verdict (a policy with
/// several limits names them policy/index after the first).
[[nodiscard]] std::string ratelimit_policy_header(const verdict& v);
/// `"api";r=0;t=30`: remaining units and whole seconds until the quota is full again.
[[nodiscard]] std::string ratelimit_header(const verdict& v);

}  // namespace keel::ratelimit
