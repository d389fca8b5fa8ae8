#pragma once
/// @file keel/net/error.hpp
/// @brief `keel::net::errc`: what keel::net reports, with messages that say what to do.
#include <keel/core/error.hpp>

namespace keel::net {

/// Errors of keel::net. Several also name the HTTP answer the server gives for them; their
/// messages become the `detail` of that answer's JSON body.
enum class errc {
  invalid_address = 1,          ///< server_options::address is not an IP address
  already_started,              ///< server::start() called twice
  malformed_request,            ///< 400: the request line or headers do not parse
  invalid_json,                 ///< 400: the body is not JSON
  invalid_path,                 ///< 400: the path is not absolute or escapes with '..'
  header_too_large,             ///< 431
  body_too_large,               ///< 413
  not_found,                    ///< 404
  method_not_allowed,           ///< 405
  too_many_connections,         ///< 503 to a connection over server_options::max_connections
  upgrade_required,             ///< 426: a plain request to a WebSocket route
  shutting_down,                ///< 503 from /readyz while the server stops
  handler_failed,               ///< 500: a handler threw
  bad_transfer_encoding,        ///< 400: Transfer-Encoding whose final coding is not chunked, or with
                                ///< Content-Length
  unsupported_transfer_coding,  ///< 501: a transfer coding other than chunked (gzip, deflate, ...)
  bad_host,                     ///< 400: an HTTP/1.1 request without exactly one Host header
  too_many_client_connections,  ///< 429 to a connection over server_options::max_connections_per_client
};

/// The category of `keel::net::errc` (name "keel.net").
[[nodiscard]] const error_category& net_category() noexcept;

}  // namespace keel::net

KEEL_ERROR_ENUM(keel::net, net_category);
