#pragma once
/// @file keel/net/trust.hpp
/// @brief Where a request comes from, for the default authorization of keel's own pages and
/// APIs (keel::jobs_http, keel::tsdb_http): loopback peers, DNS rebinding, cross-site requests
/// and bearer tokens, decided in one place.
#include <keel/net/http.hpp>

#include <string_view>

namespace keel::net {

/// True for 127.0.0.0/8 and ::1, also when an IPv4 peer arrives on an IPv6 socket (::ffff:127.x).
[[nodiscard]] bool is_loopback_address(std::string_view address) noexcept;

/// True when a Host header value names loopback: localhost, 127.x or [::1], with or without a
/// port. A page served under another name that resolves to 127.0.0.1 (DNS rebinding) is
/// same-origin with itself, so a loopback peer alone is not enough.
[[nodiscard]] bool host_names_loopback(std::string_view host) noexcept;

/// True when the request has no Origin or its Origin is the request's own Host (http or
/// https). A page of another site must not act with the rights of the browser's address.
[[nodiscard]] bool same_origin_or_none(const request& req) noexcept;

/// True when `Authorization: Bearer <token>` carries `token` (compared in time that depends only
/// on the token's length). Always false for an empty `token`.
[[nodiscard]] bool bearer_token_matches(const request& req, std::string_view token) noexcept;

/// The rule keel's pages use for actions by default: the request is same-origin (or has no
/// Origin), and either carries the bearer `token` or comes from a loopback peer that addressed
/// loopback by name.
[[nodiscard]] bool local_or_token(const request& req, std::string_view token) noexcept;

}  // namespace keel::net
