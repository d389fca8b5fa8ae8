// The middleware on a real keel::net server over loopback HTTP.
#include <keel/net.hpp>
#include <keel/ratelimit_http.hpp>

#include <doctest/doctest.h>

#include <bitset>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <support/random.hpp>
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
                                        .trusted_proxies = {"127.0.0.0/8"}}));
    server.get("/cheap", [](const keel::net::request&) { return keel::net::text_response("ok"); });
    server.get("/expensive", [](const keel::net::request&) { return keel::net::text_response("ok"); });
    REQUIRE(server.start());

    // Two clients behind one proxy (the test, on loopback) are told apart by X-Forwarded-For; the
    // nearest untrusted entry is the client, whatever it claims further left.
    for (int i = 0; i < 3; ++i)
      CHECK(get(server.port(), "/cheap", "X-Forwarded-For: 10.9.9.9, 10.0.0.1\r\n").status == 200);
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

TEST_SUITE("unit") {
  TEST_CASE("middleware: X-Forwarded-For is read from the right; the client's own claim is not believed") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    keel::net::server server({.port = 0, .threads = 2});
    rl::limiter limiter(store, {.clock = &clock});
    rl::policy_set set;
    set.policies.push_back({.name = "per-client",
                            .key_by = {rl::attribute::ip},
                            .limits = {{.algorithm = rl::algorithm::sliding_log, .count = 2, .period = 1h}}});
    REQUIRE(limiter.set_policies(set));
    server.use(rl::middleware(limiter, {.trusted_proxies = {"127.0.0.1"}}));
    server.get("/", [](const keel::net::request&) { return keel::net::text_response("ok"); });
    REQUIRE(server.start());
    // One client (203.0.113.7, as the proxy saw it) claiming a new address each time.
    int allowed = 0;
    for (int i = 0; i < 5; ++i) {
      const auto forged = "X-Forwarded-For: 198.51.100." + std::to_string(i) + ", 203.0.113.7\r\n";
      allowed += get(server.port(), "/", forged).status == 200 ? 1 : 0;
    }
    CHECK(allowed == 2);

    // A second X-Forwarded-For line (a proxy that adds its own) is read after the first.
    CHECK(
        get(server.port(), "/", "X-Forwarded-For: 203.0.113.8\r\nX-Forwarded-For: 203.0.113.9\r\n").status ==
        200);
    CHECK(
        get(server.port(), "/", "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 203.0.113.9\r\n").status ==
        200);
    CHECK(get(server.port(), "/", "X-Forwarded-For: 203.0.113.9\r\n").status == 429);
    // Forwarded is not the header this proxy writes: a client's own is ignored.
    CHECK(get(server.port(), "/", "Forwarded: for=192.0.2.1\r\nX-Forwarded-For: 203.0.113.9\r\n").status ==
          429);
    server.stop();
    server.wait();
  }

  TEST_CASE("middleware: RFC 7239 Forwarded from a trusted proxy; a bad trusted_proxies entry is refused") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    keel::net::server server({.port = 0, .threads = 2});
    rl::limiter limiter(store, {.clock = &clock});
    rl::policy_set set;
    set.policies.push_back({.name = "per-client",
                            .key_by = {rl::attribute::ip},
                            .limits = {{.algorithm = rl::algorithm::sliding_log, .count = 1, .period = 1h}}});
    REQUIRE(limiter.set_policies(set));
    server.use(rl::middleware(limiter, {.trusted_proxies = {"127.0.0.1/32"},
                                        .forwarded_header = rl::forwarding_header::forwarded}));
    server.get("/", [](const keel::net::request&) { return keel::net::text_response("ok"); });
    REQUIRE(server.start());
    const auto status = [&](const std::string& header) {
      return get(server.port(), "/", header + "\r\n").status;
    };
    CHECK(status(R"(Forwarded: for="[2001:db8:cafe::17]:4711";proto=https)") == 200);
    CHECK(status(R"(Forwarded: for=192.0.2.1, For="[2001:DB8:CAFE::17]";by=_proxy)") == 429);  // same client
    CHECK(status("Forwarded: for=192.0.2.43") == 200);
    CHECK(status("X-Forwarded-For: 192.0.2.99\r\nForwarded: for=192.0.2.43") == 429);  // XFF ignored
    server.stop();
    server.wait();

    CHECK_THROWS_WITH_AS(static_cast<void>(rl::middleware(limiter, {.trusted_proxies = {"10.0.0.0/33"}})),
                         doctest::Contains("\"10.0.0.0/33\" is neither an address nor a CIDR"),
                         boost::system::system_error);
  }

  TEST_CASE("client_address: walked from the right past trusted hops, by address and by count") {
    auto range = [](std::string_view text) { return rl::address_range::parse(text).value(); };
    const rl::proxy_trust cidrs{.proxies = {range("10.0.0.0/8"), range("2001:db8::/32")}};
    // The peer itself must be trusted for the header to count.
    CHECK(rl::client_address(cidrs, "192.0.2.1", "198.51.100.7") == "192.0.2.1");
    CHECK(rl::client_address({}, "10.0.0.1", "198.51.100.7") == "10.0.0.1");
    CHECK(rl::client_address(cidrs, "10.0.0.1", "") == "10.0.0.1");
    CHECK(rl::client_address(cidrs, "10.0.0.1", "198.51.100.7") == "198.51.100.7");
    CHECK(rl::client_address(cidrs, "10.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.1.1, 2001:db8::5") ==
          "198.51.100.7");
    CHECK(rl::client_address(cidrs, "::ffff:10.0.0.1", " 198.51.100.7:5123 ,10.2.2.2") == "198.51.100.7");
    CHECK(rl::client_address(cidrs, "10.0.0.1", "[2001:DB9::1]:80") == "2001:db9::1");
    CHECK(rl::client_address(cidrs, "10.0.0.1", "10.3.3.3, 10.4.4.4") ==
          "10.3.3.3");  // all trusted: leftmost
    CHECK(rl::client_address(cidrs, "10.0.0.1", "198.51.100.7, garbage, 10.4.4.4") == "garbage");
    CHECK(rl::client_address(cidrs, "10.0.0.1", "198.51.100.7,, 10.4.4.4") == "198.51.100.7");

    const rl::proxy_trust two_hops{.hops = 2};
    CHECK(rl::client_address(two_hops, "192.0.2.1", "6.6.6.6, 198.51.100.7, 192.0.2.2") == "198.51.100.7");
    CHECK(rl::client_address(two_hops, "192.0.2.1", "198.51.100.7") == "198.51.100.7");
    const rl::proxy_trust one_hop{.hops = 1};
    CHECK(rl::client_address(one_hop, "192.0.2.1", "6.6.6.6, 198.51.100.7") == "198.51.100.7");

    const rl::proxy_trust forwarded{.proxies = {range("10.0.0.0/8")},
                                    .header = rl::forwarding_header::forwarded};
    CHECK(rl::client_address(forwarded, "10.0.0.1", R"(for=6.6.6.6, for="[2001:db8::1]:443";proto=https)") ==
          "2001:db8::1");
    CHECK(rl::client_address(forwarded, "10.0.0.1", R"(for=198.51.100.7;by=10.0.0.9, FOR="10.0.0.9:80")") ==
          "198.51.100.7");
    // Unknown and obfuscated hops stop the walk; so does an element without for=.
    CHECK(rl::client_address(forwarded, "10.0.0.1", "for=198.51.100.7, for=unknown") == "unknown");
    CHECK(rl::client_address(forwarded, "10.0.0.1", "for=198.51.100.7, for=_hidden, for=10.1.1.1") ==
          "_hidden");
    CHECK(rl::client_address(forwarded, "10.0.0.1", "for=198.51.100.7, proto=http") == "unknown");
    CHECK(rl::client_address(forwarded, "10.0.0.1", R"(for="[2001:db8::1")") == "[2001:db8::1");
  }

  TEST_CASE("address_range: parsing, and membership against a bit-by-bit model (seeded)") {
    for (const std::string_view bad :
         {"", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/-1", "10.0.0.0/ 8", "fe80::1%eth0",
          "[::1]", "10.0.0.0/8/8", "example.com"}) {
      CHECK_MESSAGE(rl::address_range::parse(bad).error() == rl::errc::invalid_policy, bad);
    }
    const auto v4_range = rl::address_range::parse("10.1.2.3/8").value();  // host bits ignored
    CHECK(v4_range.contains(*rl::ip_address::parse("10.255.0.1")));
    CHECK(v4_range.contains(*rl::ip_address::parse("::ffff:10.0.0.1")));
    CHECK_FALSE(v4_range.contains(*rl::ip_address::parse("11.0.0.1")));
    CHECK_FALSE(v4_range.contains(*rl::ip_address::parse("a00::1")));  // 0a00:: is not 10/8 mapped
    CHECK(rl::address_range::parse("0.0.0.0/0")->contains(*rl::ip_address::parse("255.1.2.3")));
    CHECK_FALSE(rl::address_range::parse("0.0.0.0/0")->contains(*rl::ip_address::parse("2001:db8::1")));
    CHECK(rl::address_range::parse("::/0")->contains(*rl::ip_address::parse("2001:db8::1")));

    using bits = std::bitset<128>;
    const auto to_bits = [](const rl::ip_address& a) {
      bits b;
      for (std::size_t i = 0; i < 128; ++i) b[127 - i] = ((a.bytes[i / 8] >> (7 - i % 8)) & 1) != 0;
      return b;
    };
    const auto random_address = [](bool v4) {
      rl::ip_address a;
      for (auto& byte : a.bytes) byte = keel::test::uniform<std::uint8_t>(0, 255);
      if (v4) {
        std::fill(a.bytes.begin(), a.bytes.begin() + 10, std::uint8_t{0});
        a.bytes[10] = a.bytes[11] = 0xff;
      }
      return a;
    };
    int inside = 0;
    for (int round = 0; round < 20'000; ++round) {
      const bool v4 = keel::test::uniform(0, 1) == 0;
      const unsigned prefix = keel::test::uniform(0U, v4 ? 32U : 128U);
      const auto base = random_address(v4);
      // Round trip through text, as a user would write the range.
      const auto text = base.to_string() + "/" + std::to_string(prefix);
      REQUIRE(rl::ip_address::parse(base.to_string()) == base);
      const auto range = rl::address_range::parse(text);
      REQUIRE_MESSAGE(range, text);
      // A candidate sharing a random number of leading bits with the base (so that both sides of
      // the prefix are hit often), the rest random.
      const unsigned shared = keel::test::uniform(0U, 128U);
      auto candidate = random_address(v4 && keel::test::uniform(0, 3) != 0);
      const bits b = to_bits(base);
      bits c = to_bits(candidate);
      for (unsigned i = 0; i < shared; ++i) c[127 - i] = b[127 - i];
      for (std::size_t i = 0; i < 16; ++i) {
        candidate.bytes[i] = 0;
        for (std::size_t j = 0; j < 8; ++j)
          candidate.bytes[i] =
              static_cast<std::uint8_t>(candidate.bytes[i] | (c[127 - (8 * i + j)] << (7 - j)));
      }
      // The model: the first prefix bits of the 128-bit forms agree (an IPv4 prefix counts 96 more).
      const unsigned model_prefix = v4 ? prefix + 96 : prefix;
      bool expected = true;
      for (unsigned i = 0; i < model_prefix; ++i) expected = expected && b[127 - i] == c[127 - i];
      INFO(text << " vs " << candidate.to_string());
      CHECK(range->contains(candidate) == expected);
      inside += expected ? 1 : 0;
    }
    // Both answers were exercised plenty.
    CHECK(inside > 2'000);
    CHECK(inside < 18'000);
  }
}
