#pragma once
// A minimal HTTP client for tests of keel's routes over real loopback HTTP (Beast): one request
// per connection, each operation bounded by a deadline so a broken server fails the test
// instead of hanging it.
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::test {

struct http_reply {
  unsigned status = 0;
  std::string body;
  [[nodiscard]] boost::json::object json() const { return boost::json::parse(body).as_object(); }
  /// The "detail" of a JSON error body, or "".
  [[nodiscard]] std::string detail() const {
    auto o = json();
    return o.contains("detail") ? std::string(o.at("detail").as_string()) : std::string();
  }
};

// `method` by name, so that methods Beast does not name (Vault's LIST) can be sent too.
inline http_reply http_request(std::uint16_t port, std::string_view method, const std::string& target,
                               const std::string& body = {},
                               const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  using namespace std::chrono_literals;
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::error_code ec;
  auto run = [&] {
    ioc.restart();
    ioc.run();
  };
  stream.expires_after(10s);
  stream.async_connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                       [&](beast::error_code e) { ec = e; });
  run();
  REQUIRE_MESSAGE(!ec, ec.message());
  http::request<http::string_body> req;
  req.version(11);
  req.target(target);
  req.method_string(method);
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  for (const auto& [name, value] : headers) req.set(name, value);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  http::async_write(stream, req, [&](beast::error_code e, std::size_t) { ec = e; });
  run();
  REQUIRE_MESSAGE(!ec, ec.message());
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::async_read(stream, buffer, res, [&](beast::error_code e, std::size_t) { ec = e; });
  run();
  REQUIRE_MESSAGE(!ec, ec.message());
  return {res.result_int(), res.body()};
}

inline http_reply http_send(std::uint16_t port, boost::beast::http::verb verb, const std::string& target,
                            const std::string& body = {},
                            const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return http_request(port, boost::beast::http::to_string(verb), target, body, headers);
}

inline http_reply http_get(std::uint16_t port, const std::string& target) {
  return http_send(port, boost::beast::http::verb::get, target);
}

}  // namespace keel::test
