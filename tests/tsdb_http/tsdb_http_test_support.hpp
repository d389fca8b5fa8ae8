#pragma once
// What the tsdb_http tests share: keel::tsdb_http mounted on a fresh schema holding a week of
// demo temperatures (10080 points at 60 s), and one HTTP request over a raw loopback socket.
#include <keel/net.hpp>
#include <keel/pg/connection.hpp>
#include <keel/tsdb.hpp>
#include <keel/tsdb_http.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <support/pg.hpp>
#include <support/result.hpp>
#include <sys/socket.h>
#include <unistd.h>

namespace keel::test {

inline constexpr std::int64_t demo_start = 1'700'006'400'000;  // 2023-11-15 00:00 UTC
inline constexpr std::int64_t demo_points = 7 * 24 * 60;       // a week at 60 s

struct http_reply {
  int status = 0;
  std::string body;
};

/// One request over a fresh loopback connection, read until the server closes it.
inline http_reply http_request(std::uint16_t port, const std::string& method, const std::string& target,
                               const std::string& body = {},
                               const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  timeval patience{.tv_sec = 20, .tv_usec = 0};  // a server that never answers fails the test
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience) == 0);
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& [name, value] : headers) request += name + ": " + value + "\r\n";
  if (!body.empty())
    request += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  request += "\r\n" + body;
  REQUIRE(::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size()));
  std::string raw;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;)
    raw.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  http_reply reply;
  REQUIRE(raw.size() > 12);
  reply.status = std::stoi(raw.substr(9, 3));
  const auto end_of_head = raw.find("\r\n\r\n");
  if (end_of_head != std::string::npos) reply.body = raw.substr(end_of_head + 4);
  return reply;
}

inline http_reply http_get(std::uint16_t port, const std::string& target) {
  return http_request(port, "GET", target);
}

/// A decimal-looking demo temperature: a daily cycle, weather drift and sensor noise, one decimal.
inline std::int64_t seed_demo(tsdb::store& store) {
  const auto id = store.series("demo_temperature", {{"site", "test"}, {"unit", "celsius"}});
  REQUIRE(id);
  std::vector<std::int64_t> times;
  std::vector<double> values;
  std::uint64_t state = 0x9E3779B97F4A7C15ULL;
  double drift = 0;
  for (std::int64_t i = 0; i < demo_points; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const double noise = static_cast<double>(state >> 40) / static_cast<double>(1ULL << 24) - 0.5;
    drift = 0.999 * drift + 0.05 * noise;
    const double day = std::sin(2 * 3.141592653589793 * static_cast<double>(i % 1440) / 1440.0);
    times.push_back(demo_start + i * 60'000);
    values.push_back(std::round((12.0 + 6.0 * day + 20 * drift + 0.4 * noise) * 10) / 10);
  }
  REQUIRE(store.buffer(*id, times, values));
  REQUIRE(store.flush());
  return *id;
}

/// The routes on a fresh schema seeded with the demo series (the default series), on a free
/// loopback port.
struct mounted_tsdb {
  scratch_schema schema;
  tsdb::store store = [this] {
    auto c = schema.connect();
    REQUIRE(tsdb::migrate(c));
    return tsdb::store::open(schema.conninfo).value();
  }();
  std::int64_t demo_series = seed_demo(store);
  net::server server{{.address = "127.0.0.1", .port = 0}};

  explicit mounted_tsdb(tsdb_http::options opts = {}) {
    if (!opts.default_series) opts.default_series = demo_series;
    tsdb_http::mount(server, store, std::move(opts));
    REQUIRE(server.start());
  }
  ~mounted_tsdb() { server.stop(); }
  mounted_tsdb(const mounted_tsdb&) = delete;
  mounted_tsdb& operator=(const mounted_tsdb&) = delete;

  [[nodiscard]] std::uint16_t port() const { return server.port(); }
};

}  // namespace keel::test
