#pragma once
// Checks every shared store (Redis, Postgres) must pass the same way.
#include <keel/ratelimit.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include <support/result.hpp>

namespace keel::test {

/// Sends 15 requests against a limit of 10 per hour under `a`: exactly 10 are allowed, each
/// with the right remaining count, and the last denial has a bounded retry-after; returns it.
inline ratelimit::decision check_exact_limit(ratelimit::backend& store, ratelimit::algorithm a) {
  using namespace std::chrono_literals;
  const ratelimit::limit l{.algorithm = a, .count = 10, .period = 1h};
  const std::string key = "alg:" + std::string(ratelimit::to_string(a));
  const ratelimit::keyed_limit k{key, &l};
  ratelimit::decision d;
  int allowed = 0;
  for (int i = 0; i < 15; ++i) {
    REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
    if (d.allowed) {
      ++allowed;
      CHECK(d.remaining == static_cast<std::uint64_t>(10 - allowed));
    }
  }
  CHECK(allowed == 10);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after > 0s);
  // A sliding window may have to wait into the next window, while this one still weighs.
  CHECK(d.retry_after <= (a == ratelimit::algorithm::sliding_window ? 2h : 1h));
  return d;
}

}  // namespace keel::test
