#include <keel/net/error.hpp>
#include <keel/net/json.hpp>

#include <boost/beast/http/status.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace keel::net {

response json_response(const boost::json::value& body, status s) {
  response r{.status = s, .headers = {}, .body = boost::json::serialize(body)};
  r.headers.set("Content-Type", "application/json");
  return r;
}

response error_response(status s, std::string_view error, std::string_view detail) {
  boost::json::object body;
  body["error"] = error;
  body["detail"] = detail;
  return json_response(body, s);
}

response error_response(status s, const error_code& ec) {
  const auto reason = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(to_int(s)));
  std::string error(reason.data(), reason.size());
  for (auto& c : error) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return error_response(s, error, ec.message());
}

result<boost::json::value> parse_json(const request& req) {
  boost::system::error_code ec;
  auto value = boost::json::parse(req.body, ec);
  if (ec) return errc::invalid_json;
  return value;
}

std::function<response(const request&)> json_handler(json_handler_fn fn) {
  return [fn = std::move(fn)](const request& req) -> response {
    boost::system::error_code ec;
    const auto value = boost::json::parse(req.body, ec);
    if (ec) {
      // The parser's message says where it stopped, which helps the client fix the body.
      return error_response(
          status::bad_request, "invalid json",
          std::string(error_code(errc::invalid_json).message()) + " (" + ec.message() + ")");
    }
    return fn(req, value);
  };
}

}  // namespace keel::net
