// The Postgres backend on the real cluster: each algorithm, atomicity, threads, block,
// penalties, eviction, and what the limiter does when the database is unreachable.
#include <keel/pg/pool.hpp>
#include <keel/ratelimit.hpp>
#include <keel/ratelimit_pg/postgres.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <ratelimit/store_checks.hpp>
#include <support/pg.hpp>
#include <support/redis.hpp>
#include <support/result.hpp>

namespace rl = keel::ratelimit;
using namespace std::chrono_literals;

TEST_SUITE("pg") {
  TEST_CASE("postgres backend: each algorithm allows exactly its limit; several limits are all or nothing") {
    keel::test::scratch_schema schema;
    keel::pg::pool pool({.conninfo = schema.conninfo, .max_size = 4});
    {
      auto c = pool.acquire();
      REQUIRE(c);
      REQUIRE(rl::postgres_backend::migrate(**c));
      REQUIRE(rl::postgres_backend::migrate(**c));  // idempotent
    }
    rl::postgres_backend store(pool);
    for (const auto a : {rl::algorithm::gcra, rl::algorithm::token_bucket, rl::algorithm::sliding_window,
                         rl::algorithm::sliding_log}) {
      keel::test::check_exact_limit(store, a);
    }
    keel::test::check_all_or_nothing(store);

    const rl::limit blocking{.algorithm = rl::algorithm::gcra, .count = 1, .period = 1s, .block = 1h};
    const rl::keyed_limit b{"blocked", &blocking};
    rl::decision d;
    REQUIRE(store.decide({&b, 1}, 1, {&d, 1}));
    REQUIRE(store.decide({&b, 1}, 1, {&d, 1}));
    CHECK_FALSE(d.allowed);
    CHECK(d.retry_after >= 59min);

    keel::test::check_penalty_and_reward(store, rl::algorithm::sliding_log);

    const rl::limit brief{.algorithm = rl::algorithm::gcra, .count = 1000, .period = 1ms};
    const rl::keyed_limit e{"brief", &brief};
    REQUIRE(store.decide({&e, 1}, 1, {&d, 1}));
    // Its row is expired within a millisecond of the database's clock; until then nothing is.
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    std::uint64_t evicted = 0;
    while (evicted == 0 && std::chrono::steady_clock::now() < give_up) {
      const auto now_evicted = store.evict_expired();
      REQUIRE(now_evicted);
      evicted = *now_evicted;
    }
    CHECK(evicted >= 1);
  }

  TEST_CASE("postgres backend: N threads on one key allow exactly the limit") {
    keel::test::scratch_schema schema;
    keel::pg::pool pool({.conninfo = schema.conninfo, .max_size = 4});
    REQUIRE(rl::postgres_backend::migrate(**pool.acquire()));
    rl::postgres_backend store(pool);
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 100, .period = 1h};
    const auto outcome = keel::test::decide_from_threads(store, l, 4, 40);
    CHECK(outcome.failed == 0);
    CHECK(outcome.allowed == 100);
  }

  TEST_CASE("postgres backend unreachable: the insurance limiter decides") {
    keel::pg::pool pool({.conninfo = "postgresql://nobody@127.0.0.1:" +
                                     std::to_string(keel::test::free_port()) + "/none?connect_timeout=1",
                         .max_size = 1,
                         .acquire_timeout = 200ms});
    rl::postgres_backend store(pool);
    rl::limiter limiter(store);
    rl::policy_set set;
    set.policies.push_back({.name = "db",
                            .limits = {{.algorithm = rl::algorithm::gcra, .count = 3, .period = 1h}},
                            .on_failure = rl::failure_mode::insurance});
    REQUIRE(limiter.set_policies(set));
    int allowed = 0;
    for (int i = 0; i < 5; ++i) {
      const auto v = limiter.check({.path = "/", .ip = "10.0.0.1"});
      CHECK(v.source == rl::source::insurance);
      allowed += v.allowed() ? 1 : 0;
    }
    CHECK(allowed == 3);
    CHECK(limiter.store_down());
  }
}
