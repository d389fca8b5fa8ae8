#pragma once
/// @file keel/net/json.hpp
/// @brief JSON request and response helpers on Boost.JSON.
#include <keel/core/result.hpp>
#include <keel/net/http.hpp>

#include <boost/json/value.hpp>

#include <functional>
#include <string_view>

namespace keel::net {

/// A response whose body is `body` serialized, with Content-Type application/json.
[[nodiscard]] response json_response(const boost::json::value& body, status s = status::ok);

/// The error answer every keel endpoint gives: `{"error":"<error>","detail":"<detail>"}`.
[[nodiscard]] response error_response(status s, std::string_view error, std::string_view detail = {});

/// An error answer for `ec`: `error` is the status's reason phrase, `detail` the code's message.
[[nodiscard]] response error_response(status s, const error_code& ec);

/// The request body parsed as JSON.
/// @returns the value, or errc::invalid_json (the message says where parsing stopped).
[[nodiscard]] result<boost::json::value> parse_json(const request& req);

/// A handler that receives the parsed JSON body.
using json_handler_fn = std::function<response(const request&, const boost::json::value&)>;

/// Wraps `fn` so that a malformed body is answered with 400 and a JSON error before `fn` runs.
[[nodiscard]] std::function<response(const request&)> json_handler(json_handler_fn fn);

}  // namespace keel::net
