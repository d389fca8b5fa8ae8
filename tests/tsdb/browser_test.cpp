// The showcase's keel::tsdb page in a real headless Chromium: the SVG plot is drawn, raw and
// LTTB-downsampled, with the asked-for number of points and no page errors.
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <support/browser.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>
#include <sys/socket.h>
#include <unistd.h>

namespace {

struct http_reply {
  int status = 0;
  std::string body;
};

/// One GET over a fresh loopback connection, read until the server closes it.
http_reply http_get(std::uint16_t port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  timeval patience{.tv_sec = 20, .tv_usec = 0};  // a server that never answers fails the test
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience) == 0);
  const std::string request = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  REQUIRE(::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size()));
  std::string raw;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;)
    raw.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  http_reply reply;
  REQUIRE(raw.size() > 12);
  reply.status = std::stoi(raw.substr(9, 3));
  const auto body = raw.find("\r\n\r\n");
  if (body != std::string::npos) reply.body = raw.substr(body + 4);
  return reply;
}

}  // namespace

// HTTP only, no browser: the routes' answers to hostile parameters.
TEST_SUITE("pg") {
  TEST_CASE("tsdb query route: extreme ranges are answered exactly or refused with 400, never a crash") {
    keel::test::scratch_schema schema;
    keel::pg::pool pool({.conninfo = schema.conninfo, .max_size = 2});
    keel::net::server server({.address = "127.0.0.1", .port = 0});
    showcase::context ctx{.server = server, .pool = pool, .conninfo = schema.conninfo, .endpoints = {}};
    REQUIRE(showcase::mount_tsdb(ctx));
    REQUIRE(server.start());

    const auto crashed = http_get(server.port(),
                                  "/api/tsdb/query?series=1&from=-9000000000000000000&to=9000000000000000000"
                                  "&step=1000000000000000000");
    REQUIRE(crashed.status == 200);
    const auto buckets = boost::json::parse(crashed.body).at("buckets").as_array();
    REQUIRE(buckets.size() == 18);
    std::int64_t demo_points = 0;
    for (const auto& b : buckets) demo_points += b.at("count").to_number<std::int64_t>();
    CHECK(demo_points == 10080);
    for (const char* absurd :
         {"from=-9223372036854775808&to=9223372036854775807&step=1",
          "from=-9223372036854775808&to=0&step=1000000000000000000", "from=0&to=0&step=1",
          "from=10&to=0&step=1", "from=0&to=10&step=0", "from=0&to=10&step=-3"}) {
      CAPTURE(absurd);
      const auto refused = http_get(server.port(), std::string("/api/tsdb/query?series=1&") + absurd);
      CHECK(refused.status == 400);
      CHECK(refused.body.find("bucket") != std::string::npos);
    }
    // Still serving, and the demo series is whole.
    const auto day = http_get(server.port(),
                              "/api/tsdb/query?series=1&from=1700006400000&to=1700611200000&step=604800000");
    REQUIRE(day.status == 200);
    std::int64_t week = 0;
    const auto week_buckets = boost::json::parse(day.body);
    for (const auto& b : week_buckets.at("buckets").as_array())
      week += b.at("count").to_number<std::int64_t>();
    CHECK(week == 10080);
    server.stop();
  }
}

TEST_SUITE("browser") {
  TEST_CASE("the tsdb page plots the demo series raw and LTTB-downsampled") {
    keel::test::scratch_schema schema;
    keel::pg::pool pool({.conninfo = schema.conninfo, .max_size = 2});
    keel::net::server server({.address = "127.0.0.1", .port = 0});
    showcase::context ctx{.server = server, .pool = pool, .conninfo = schema.conninfo, .endpoints = {}};
    REQUIRE(showcase::mount_tsdb(ctx));
    REQUIRE(server.start());
    const std::string base = "http://127.0.0.1:" + std::to_string(server.port());

    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "could not start chromium");
    for (const int points : {250, 40}) {
      CAPTURE(points);
      REQUIRE_MESSAGE(browser->navigate(base + "/tsdb?points=" + std::to_string(points)),
                      browser->last_error());
      REQUIRE_MESSAGE(browser->wait_for("document.getElementById('plot').dataset.ready === 'true'"),
                      browser->last_error());
      CHECK(browser->evaluate("document.getElementById('raw').points.numberOfItems").value() == 10080);
      CHECK(browser->evaluate("document.getElementById('lttb').points.numberOfItems").value() == points);
      CHECK(browser->evaluate("Number(document.getElementById('lttb-count').textContent)").value() == points);
      // Drawn, not just present: the line spans the plot's width and has height.
      CHECK(browser->evaluate("document.getElementById('lttb').getBBox().width > 850").value() == true);
      CHECK(browser->evaluate("document.getElementById('raw').getBBox().height > 100").value() == true);
      CHECK(browser->evaluate("getComputedStyle(document.getElementById('lttb')).stroke").value() ==
            "rgb(21, 101, 192)");
    }
    CHECK(browser->console_errors().empty());
    server.stop();
  }
}
