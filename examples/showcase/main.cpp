// The keel showcase: what the library offers, shown working. `./keel demo` runs it.
#include <keel/core.hpp>

#include <chrono>
#include <cstdio>
#include <string_view>

namespace {

struct component {
  std::string_view name;
  std::string_view what;
  std::string_view status;
};

constexpr component components[] = {
    {"core", "errors, bytes, hashing, signatures, varints, bit streams, clocks, logging", "ready"},
    {"pg", "libpq done right: pool, transactions, COPY, LISTEN/NOTIFY, migrations", "planned"},
    {"net", "HTTP + WebSocket server, router, JSON, Prometheus /metrics", "planned"},
    {"ledger", "double-entry ledger with Merkle proofs", "planned"},
    {"events", "event sourcing on Postgres", "planned"},
    {"tsdb", "Gorilla-compressed time series in Postgres", "planned"},
    {"ratelimit", "sliding-window rate limiting: in-process, Redis, Postgres", "planned"},
    {"jobs", "Postgres job queue with a web dashboard", "planned"},
    {"crdt", "CRDTs and a WebSocket sync server", "planned"},
    {"crypto", "envelope encryption and a secrets store", "planned"},
    {"dsl", "a query language compiled to parameterized SQL", "planned"},
};

void show_core() {
  std::printf("\nkeel::core at work\n");
  const auto message = keel::as_bytes("keel: backend primitives you can trust");
  const auto digest = keel::sha256(message);
  std::printf("  sha256        %s\n", keel::to_hex(digest).c_str());
  std::printf("  xxh3_64       %016llx\n", static_cast<unsigned long long>(keel::xxh3_64(message)));
  std::printf("  base64url     %s\n", keel::to_base64url(digest).c_str());

  const auto key = keel::ed25519_private_key::generate();
  const auto signature = key.sign(digest);
  std::printf("  ed25519       signature verifies: %s; after tampering: %s\n",
              key.public_key().verify(digest, signature) ? "yes" : "no",
              key.public_key().verify(keel::as_bytes("tampered"), signature) ? "yes" : "no");

  const auto bad = keel::from_hex("not hex!");
  std::printf("  bad input     from_hex(\"not hex!\") -> %s\n", bad.error().message().c_str());

  keel::bit_writer writer;
  for (const std::uint64_t delta : {0U, 1U, 0U, 0U, 3U, 0U}) writer.write(delta, delta == 0 ? 1 : 4);
  std::printf("  bit_writer    6 deltas in %zu bits\n", writer.bit_count());

  keel::manual_clock clock;
  clock.advance(std::chrono::minutes(5));
  std::printf("  manual_clock  advanced 5 min for tests without sleeping\n");
}

}  // namespace

int main() {
  std::printf("keel %.*s — embeddable C++20 backend primitives\n\n", static_cast<int>(keel::version.size()),
              keel::version.data());
  std::printf("  %-10s %-8s %s\n", "component", "status", "what it is");
  for (const auto& c : components) {
    std::printf("  %-10.*s %-8.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                static_cast<int>(c.status.size()), c.status.data(), static_cast<int>(c.what.size()),
                c.what.data());
  }
  show_core();
  std::printf("\nNext: the showcase becomes a server (keel::pg + keel::net). See README.md and docs/.\n");
  return 0;
}
