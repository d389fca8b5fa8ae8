#pragma once
// Checks every shared store (Redis, Postgres) must pass the same way.
#include <keel/ratelimit.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

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

/// Two limits decided together (5 a minute, 100 an hour) over 8 requests: exactly 5 pass both,
/// and the 3 denied spend nothing on the hourly limit.
inline void check_all_or_nothing(ratelimit::backend& store) {
  using namespace std::chrono_literals;
  const ratelimit::limit per_minute{
      .algorithm = ratelimit::algorithm::sliding_window, .count = 5, .period = 1min};
  const ratelimit::limit per_hour{.algorithm = ratelimit::algorithm::sliding_log, .count = 100, .period = 1h};
  const ratelimit::keyed_limit both[] = {{"m", &per_minute}, {"h", &per_hour}};
  ratelimit::decision out[2];
  int allowed = 0;
  for (int i = 0; i < 8; ++i) {
    REQUIRE(store.decide(both, 1, out));
    allowed += out[0].allowed && out[1].allowed ? 1 : 0;
  }
  CHECK(allowed == 5);
  CHECK(out[1].remaining == 95);
}

/// A limit of 10 an hour under `a` with 10 of penalty spent is denied; a reward of 2 lets the
/// next request through.
inline void check_penalty_and_reward(ratelimit::backend& store, ratelimit::algorithm a) {
  using namespace std::chrono_literals;
  const ratelimit::limit l{.algorithm = a, .count = 10, .period = 1h};
  const ratelimit::keyed_limit k{"penalized", &l};
  ratelimit::decision d;
  REQUIRE(store.adjust(k, 10));
  REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
  CHECK_FALSE(d.allowed);
  REQUIRE(store.adjust(k, -2));
  REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
  CHECK(d.allowed);
}

/// What threads asking for one key got: how many were allowed, how many calls failed.
struct thread_outcome {
  int allowed = 0;
  int failed = 0;
};

/// `threads` threads each asking `each` times for one key under `l`.
inline thread_outcome decide_from_threads(ratelimit::backend& store, const ratelimit::limit& l, int threads,
                                          int each) {
  const ratelimit::keyed_limit k{"shared", &l};
  std::atomic<int> allowed{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t) {
    running.emplace_back([&] {
      ratelimit::decision d;
      for (int i = 0; i < each; ++i) {
        if (!store.decide({&k, 1}, 1, {&d, 1})) {
          ++failed;
        } else if (d.allowed) {
          ++allowed;
        }
      }
    });
  }
  for (auto& t : running) t.join();
  return {.allowed = allowed.load(), .failed = failed.load()};
}

}  // namespace keel::test
