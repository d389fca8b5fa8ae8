// docs/ratelimit.md quotes this file; tests/cmake checks they agree.
#include <keel/net.hpp>
#include <keel/ratelimit_http.hpp>

#include <cstdio>
#include <string>

int main() {
  keel::net::server server({.port = 8080, .handle_signals = true});
  keel::ratelimit::memory_backend store;  // or redis_backend / postgres_backend: same interface
  keel::ratelimit::limiter limiter(store, {.metrics = &server.metrics()});

  // Per client address: 10 requests/s with bursts of 20, and 1000 per hour; warn at 80 %.
  std::string problem;  // a bad policy names its field: policies[0].limits[1].period: ...
  auto policies = keel::ratelimit::parse_policies(R"({"policies": [{
      "name": "api", "key": ["ip"], "routes": ["/api/*"], "warn_at": 0.8,
      "limits": [{"algorithm": "gcra", "limit": 10, "period": "1s", "burst": 20},
                 {"algorithm": "sliding_window", "limit": 1000, "period": "1h"}]}]})",
                                                  &problem);
  if (!policies || !limiter.set_policies(*policies)) return std::fprintf(stderr, "%s\n", problem.c_str()), 1;

  server.use(keel::ratelimit::middleware(limiter));  // 429 with RateLimit-Policy, RateLimit, Retry-After
  server.get("/api/hello", [](const keel::net::request&) { return keel::net::text_response("hello\n"); });
  if (auto ran = server.run(); !ran) return std::fprintf(stderr, "%s\n", ran.error().message().c_str()), 1;
  return 0;
}
