#pragma once
/// @file keel/net/http.hpp
/// @brief keel's own light HTTP types: `request`, `response`, `headers`, `method`, `status`.
///
/// They carry no Beast or Asio types, so code that only adds routes compiles fast.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::net {

/// An HTTP request method. `other` is any method keel does not name; no route matches it.
// `delete` is a keyword, hence `delete_`.
// NOLINTNEXTLINE(readability-identifier-naming)
enum class method : std::uint8_t { get, head, post, put, delete_, patch, options, other };

/// The method's name as it appears on the request line ("GET", "DELETE", ...).
[[nodiscard]] std::string_view to_string(method m) noexcept;

/// An HTTP status code. Any code in 100..599 may be used through `static_cast<status>(n)`.
enum class status : std::uint16_t {
  switching_protocols = 101,
  ok = 200,
  created = 201,
  accepted = 202,
  no_content = 204,
  moved_permanently = 301,
  found = 302,
  see_other = 303,
  not_modified = 304,
  temporary_redirect = 307,
  permanent_redirect = 308,
  bad_request = 400,
  unauthorized = 401,
  forbidden = 403,
  not_found = 404,
  method_not_allowed = 405,
  request_timeout = 408,
  conflict = 409,
  gone = 410,
  payload_too_large = 413,
  unsupported_media_type = 415,
  unprocessable_entity = 422,
  upgrade_required = 426,
  too_many_requests = 429,
  request_header_fields_too_large = 431,
  internal_server_error = 500,
  not_implemented = 501,
  service_unavailable = 503,
};

/// The numeric value of `s`.
[[nodiscard]] constexpr unsigned to_int(status s) noexcept {
  return static_cast<unsigned>(s);
}

/// Header fields in arrival order. Names compare case-insensitively; a name may repeat.
class headers {
 public:
  using field = std::pair<std::string, std::string>;

  /// The first value of `name`, or nullopt when absent.
  [[nodiscard]] std::optional<std::string_view> get(std::string_view name) const noexcept;
  /// True when `name` is present.
  [[nodiscard]] bool contains(std::string_view name) const noexcept { return get(name).has_value(); }
  /// Replaces every value of `name` with `value`.
  void set(std::string_view name, std::string_view value);
  /// Adds a field, keeping existing ones (for Set-Cookie and the like).
  void add(std::string_view name, std::string_view value);
  /// Removes every value of `name`.
  void erase(std::string_view name) noexcept;

  [[nodiscard]] auto begin() const noexcept { return fields_.begin(); }
  [[nodiscard]] auto end() const noexcept { return fields_.end(); }
  [[nodiscard]] std::size_t size() const noexcept { return fields_.size(); }
  [[nodiscard]] bool empty() const noexcept { return fields_.empty(); }

 private:
  std::vector<field> fields_;
};

/// A parsed request as a handler sees it.
struct request {
  net::method method = method::get;
  std::string target{};  ///< as sent: "/jobs/7?verbose=1"
  std::string path{};    ///< percent-decoded path: "/jobs/7"
  std::string route{};   ///< the matched route pattern ("/jobs/{id}"); empty when none matched
  std::vector<std::pair<std::string, std::string>> query{};        ///< decoded, in order
  std::vector<std::pair<std::string, std::string>> path_params{};  ///< decoded, by pattern name
  net::headers headers{};
  std::string body{};
  std::string remote_address{};  ///< the peer's IP address
  /// Values middleware hands to handlers (e.g. the authenticated user). keel sets one: for
  /// method::other, "keel.method" holds the method as sent (e.g. "LIST"), for middleware to serve.
  std::map<std::string, std::string, std::less<>> attributes{};

  /// The first query parameter `name`, or nullopt.
  [[nodiscard]] std::optional<std::string_view> query_param(std::string_view name) const noexcept;
  /// The path parameter `name` of the matched route, or nullopt.
  [[nodiscard]] std::optional<std::string_view> path_param(std::string_view name) const noexcept;
  /// The attribute `name` set by a middleware, or nullopt.
  [[nodiscard]] std::optional<std::string_view> attribute(std::string_view name) const noexcept;
};

/// What a handler answers. The server adds Content-Length, Date-free framing and keep-alive.
struct response {
  net::status status = status::ok;
  net::headers headers{};
  std::string body{};
};

/// A response with `body` and a Content-Type (plain UTF-8 text by default).
[[nodiscard]] response text_response(std::string body, status s = status::ok,
                                     std::string_view content_type = "text/plain; charset=utf-8");

/// `text` safe inside HTML text and double-quoted attributes: < > & " ' as entities.
[[nodiscard]] std::string escape_html(std::string_view text);

/// Percent-decodes `in` ('+' stays '+'; use `decode_query_component` for query strings).
/// @returns nullopt when a '%' is not followed by two hex digits.
[[nodiscard]] std::optional<std::string> percent_decode(std::string_view in);

}  // namespace keel::net
