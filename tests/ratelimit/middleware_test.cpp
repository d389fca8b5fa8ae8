// The middleware on a real keel::net server over loopback HTTP.
#include <keel/net.hpp>
#include <keel/ratelimit.hpp>

#include <doctest/doctest.h>

#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <support/result.hpp>
#include <sys/socket.h>
#include <unistd.h>

namespace rl = keel::ratelimit;
using namespace std::chrono_literals;

namespace {

struct reply {
  int status = 0;
  std::string head;
  std::string body;
  [[nodiscard]] std::string header(std::string_view name) const {
    const auto at = head.find("\r\n" + std::string(name) + ": ");
    if (at == std::string::npos) return {};
    const auto start = at + 4 + name.size();
    return head.substr(start, head.find("\r\n", start) - start);
  }
};

reply get(std::uint16_t port, const std::string& path, const std::string& extra_headers = "") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string req =
      "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra_headers + "\r\n";
  REQUIRE(::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size()));
  std::string all;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) all.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  reply r;
  const auto split = all.find("\r\n\r\n");
  r.head = all.substr(0, split);
  r.body = split == std::string::npos ? "" : all.substr(split + 4);
  r.status = std::stoi(all.substr(9, 3));
  return r;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("middleware: 429 with RateLimit-Policy, RateLimit and Retry-After; soft limits carry headers") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    keel::net::server server({.port = 0, .threads = 2});
    rl::limiter limiter(store, {.metrics = &server.metrics(), .clock = &clock});
    rl::policy_set set;
    set.policies.push_back(
        {.name = "demo",
         .key_by = {rl::attribute::ip},
         .routes = {"/limited"},
         .limits = {{.algorithm = rl::algorithm::sliding_window, .count = 4, .period = 10s},
                    {.algorithm = rl::algorithm::gcra, .count = 100, .period = 1h, .burst = 50}},
         .warn_at = 0.5});
    set.deny = {"api_key=stolen"};
    REQUIRE(limiter.set_policies(set));
    server.use(rl::middleware(limiter, {.headers = rl::header_mode::when_limited}));
    server.get("/limited", [](const keel::net::request& req) {
      return keel::net::text_response(std::string(req.attribute("ratelimit.warning").value_or("fine")));
    });
    server.get("/free", [](const keel::net::request&) { return keel::net::text_response("free"); });
    REQUIRE(server.start());

    auto first = get(server.port(), "/limited");
    CHECK(first.status == 200);
    CHECK(first.body == "fine");
    CHECK(first.header("RateLimit").empty());  // when_limited: a plain request carries none
    auto second = get(server.port(), "/limited");
    CHECK(second.body == "demo");  // 2 of 4 used: soft limit crossed, still allowed
    CHECK(second.header("RateLimit-Policy") == R"("demo";q=4;w=10, "demo/1";q=50;w=1800)");
    CHECK(second.header("RateLimit").find(R"("demo";r=2;t=)") == 0);
    get(server.port(), "/limited");
    get(server.port(), "/limited");
    const auto denied = get(server.port(), "/limited");
    CHECK(denied.status == 429);
    // The manual clock's monotonic time starts 1 s into a 10 s window; the next window still
    // carries the 4 requests weighted by its unspent part, so the 5th fits 2.5 s into it:
    // 9 s + 2.5 s = 11.5 s, rounded up.
    CHECK(denied.header("Retry-After") == "12");
    CHECK(denied.header("RateLimit").find(R"("demo";r=0;t=)") == 0);
    CHECK(denied.body.find(R"(rate limit \"demo\" exceeded)") != std::string::npos);
    CHECK(get(server.port(), "/free").status == 200);
    CHECK(get(server.port(), "/free", "X-API-Key: stolen\r\n").status == 403);
    clock.advance(20s);
    CHECK(get(server.port(), "/limited").status == 200);

    const auto metrics = get(server.port(), "/metrics").body;
    CHECK(metrics.find(R"(ratelimit_decisions_total{policy="demo",outcome="denied"} 1)") !=
          std::string::npos);
    CHECK(metrics.find(R"(ratelimit_decisions_total{policy="demo",outcome="warned"} 3)") !=
          std::string::npos);
    server.stop();
    server.wait();
  }

  TEST_CASE("middleware: keys from X-API-Key and a trusted X-Forwarded-For; cost per request") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    keel::net::server server({.port = 0, .threads = 2});
    rl::limiter limiter(store, {.clock = &clock});
    rl::policy_set set;
    set.policies.push_back({.name = "per-key",
                            .key_by = {rl::attribute::api_key},
                            .limits = {{.algorithm = rl::algorithm::gcra, .count = 4, .period = 1h}}});
    set.policies.push_back({.name = "per-client",
                            .key_by = {rl::attribute::ip},
                            .limits = {{.algorithm = rl::algorithm::sliding_log, .count = 3, .period = 1h}}});
    REQUIRE(limiter.set_policies(set));
    server.use(rl::middleware(limiter, {.cost = [](const keel::net::request& req) -> std::uint64_t {
                                          return req.path == "/expensive" ? 2 : 1;
                                        },
                                        .trust_forwarded_for = true}));
    server.get("/cheap", [](const keel::net::request&) { return keel::net::text_response("ok"); });
    server.get("/expensive", [](const keel::net::request&) { return keel::net::text_response("ok"); });
    REQUIRE(server.start());

    // Two clients behind one proxy are told apart by X-Forwarded-For.
    for (int i = 0; i < 3; ++i)
      CHECK(get(server.port(), "/cheap", "X-Forwarded-For: 10.0.0.1, 10.9.9.9\r\n").status == 200);
    CHECK(get(server.port(), "/cheap", "X-Forwarded-For: 10.0.0.1\r\n").status == 429);
    CHECK(get(server.port(), "/cheap", "X-Forwarded-For: 10.0.0.2\r\n").status == 200);
    // The API key's quota of 4 is spent by two requests of cost 2, from different clients.
    const auto first = get(server.port(), "/expensive", "X-API-Key: k1\r\nX-Forwarded-For: 10.0.1.1\r\n");
    CHECK(first.status == 200);
    CHECK(first.header("RateLimit").find(R"("per-key";r=2;)") == 0);
    CHECK(get(server.port(), "/expensive", "X-API-Key: k1\r\nX-Forwarded-For: 10.0.1.2\r\n").status == 200);
    const auto denied = get(server.port(), "/cheap", "X-API-Key: k1\r\nX-Forwarded-For: 10.0.1.3\r\n");
    CHECK(denied.status == 429);
    CHECK(denied.body.find(R"(\"per-key\")") != std::string::npos);
    server.stop();
    server.wait();
  }
}
