// The in-process backend, policies (code and JSON) and the limiter's behaviour around them.
#include <keel/core/metrics.hpp>
#include <keel/ratelimit.hpp>

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <support/random.hpp>
#include <support/result.hpp>
#include <unistd.h>

namespace rl = keel::ratelimit;
using namespace std::chrono_literals;

namespace {

// A store that can be switched off, to test what happens when the real one is unreachable.
class flaky_backend final : public rl::backend {
 public:
  explicit flaky_backend(const keel::clock& c) : inner_({.clock = &c}) {}
  std::atomic<bool> up{true};
  std::atomic<int> calls{0};

  keel::result<void> decide(std::span<const rl::keyed_limit> limits, std::uint64_t cost,
                            std::span<rl::decision> out) override {
    ++calls;
    if (!up) return rl::errc::backend_unavailable;
    return inner_.decide(limits, cost, out);
  }
  keel::result<void> adjust(const rl::keyed_limit& l, std::int64_t points) override {
    if (!up) return rl::errc::backend_unavailable;
    return inner_.adjust(l, points);
  }
  std::string_view name() const noexcept override { return "flaky"; }

 private:
  rl::memory_backend inner_;
};

std::uint64_t metric(rl::limiter& l, std::string_view policy, std::string_view outcome) {
  return l.metrics()
      .add_counter("ratelimit_decisions_total", "", {"policy", "outcome"})
      .labels({policy, outcome})
      .value();
}

std::filesystem::path write_file(const std::string& name, const std::string& text) {
  const auto path =
      std::filesystem::temp_directory_path() / ("keel_rl_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("memory backend: N threads on one key allow exactly the limit") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    for (const auto a : {rl::algorithm::gcra, rl::algorithm::token_bucket, rl::algorithm::sliding_window,
                         rl::algorithm::sliding_log}) {
      const rl::limit l{.algorithm = a, .count = 5000, .period = 1h};
      const std::string key = "one-key-" + std::string(rl::to_string(a));
      std::atomic<std::uint64_t> allowed{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
          const rl::keyed_limit k{key, &l};
          rl::decision d;
          for (int i = 0; i < 2000; ++i) {
            REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
            if (d.allowed) ++allowed;
          }
        });
      }
      for (auto& t : threads) t.join();
      CHECK(allowed == 5000);
    }
  }

  TEST_CASE("memory backend: several limits are all or nothing") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    const rl::limit per_second{.algorithm = rl::algorithm::sliding_window, .count = 10, .period = 1s};
    const rl::limit per_hour{.algorithm = rl::algorithm::sliding_log, .count = 15, .period = 1h};
    const rl::keyed_limit both[] = {{"k#s", &per_second}, {"k#h", &per_hour}};
    rl::decision out[2];
    int allowed = 0;
    for (int i = 0; i < 12; ++i) {
      REQUIRE(store.decide(both, 1, out));
      if (out[0].allowed && out[1].allowed) ++allowed;
    }
    CHECK(allowed == 10);
    CHECK(out[1].allowed);         // the hourly limit would have allowed...
    CHECK(out[1].remaining == 5);  // ...but nothing was spent on it by the denied requests
    clock.advance(2s);
    for (int i = 0; i < 8; ++i) {
      REQUIRE(store.decide(both, 1, out));
      if (out[0].allowed && out[1].allowed) ++allowed;
    }
    CHECK(allowed == 15);  // now the hourly one binds
    CHECK_FALSE(out[1].allowed);
    CHECK(out[1].retry_after > 3500s);
  }

  TEST_CASE("memory backend: block duration after a denial") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 2, .period = 1s, .block = 1min};
    const rl::keyed_limit k{"blocky", &l};
    rl::decision d;
    REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
    REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
    REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
    CHECK_FALSE(d.allowed);
    CHECK(d.retry_after == 1min);
    clock.advance(30s);
    REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
    CHECK_FALSE(d.allowed);
    CHECK(d.retry_after == 30s);
    clock.advance(30s);
    REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
    CHECK(d.allowed);
  }

  TEST_CASE("memory backend: memory stays bounded; expired keys go first") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock, .shards = 4, .max_keys = 1000});
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1s};
    rl::decision d;
    for (int i = 0; i < 5000; ++i) {
      const std::string key = "k" + std::to_string(i);
      const rl::keyed_limit k{key, &l};
      REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
      if (i % 100 == 0) clock.advance(1s);  // older keys expire
    }
    const auto s = store.stats();
    CHECK(s.keys <= 1000);
    CHECK(s.evicted_expired > 3000);
    CHECK(s.evicted_live == 0);
    clock.advance(10s);
    CHECK(store.evict_expired() == s.keys);
    CHECK(store.stats().keys == 0);
    // A flood of live keys: some are forgotten, memory still bounded.
    for (int i = 0; i < 3000; ++i) {
      const std::string key = "live" + std::to_string(i);
      const rl::keyed_limit k{key, &l};
      REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
    }
    CHECK(store.stats().keys <= 1000);
    CHECK(store.stats().evicted_live > 0);
  }

  TEST_CASE("memory backend: decide_batch decides exactly as decide, request by request (property)") {
    // Random traffic over a few keys (long keys too, so both key layouts are covered), all
    // algorithms, multi-limit requests, costs, blocks, and a table small enough to evict.
    // One store sees decide() per request, the other the same requests in random batches.
    const rl::limit limits[] = {
        {.algorithm = rl::algorithm::gcra, .count = 7, .period = 1s, .burst = 3},
        {.algorithm = rl::algorithm::token_bucket, .count = 5, .period = 2s},
        {.algorithm = rl::algorithm::sliding_window, .count = 9, .period = 3s, .block = 2s},
        {.algorithm = rl::algorithm::sliding_log, .count = 4, .period = 1s},
    };
    std::vector<std::string> keys;
    for (int k = 0; k < 40; ++k)
      keys.push_back((k % 3 == 0 ? "a-key-long-enough-to-live-outside-the-slot-" : "k") + std::to_string(k));
    for (int round = 0; round < 20; ++round) {
      keel::manual_clock one_clock;
      keel::manual_clock batch_clock;
      rl::memory_backend one({.clock = &one_clock, .shards = 4, .max_keys = 64});
      rl::memory_backend batched({.clock = &batch_clock, .shards = 4, .max_keys = 64});
      for (int step = 0; step < 30; ++step) {
        const std::size_t n = keel::test::uniform<std::size_t>(1, 40);
        std::vector<std::vector<rl::keyed_limit>> requests(n);
        std::vector<std::uint64_t> costs(n);
        for (std::size_t i = 0; i < n; ++i) {
          const std::size_t parts = keel::test::uniform<std::size_t>(1, 10) <= 8 ? 1 : 2;
          for (std::size_t p = 0; p < parts; ++p) {
            const std::size_t k = keel::test::uniform<std::size_t>(0, keys.size() - 1);
            // The same key always goes with the same algorithm, as the contract asks.
            requests[i].push_back({keys[k], &limits[k % 4]});
          }
          costs[i] = keel::test::uniform<std::uint64_t>(1, 3);
        }
        std::vector<std::vector<rl::decision>> expected(n), got(n);
        std::vector<rl::batch_request> batch;
        for (std::size_t i = 0; i < n; ++i) {
          expected[i].resize(requests[i].size());
          got[i].resize(requests[i].size());
          REQUIRE(one.decide(requests[i], costs[i], expected[i]));
          batch.push_back({requests[i], costs[i], got[i]});
        }
        REQUIRE(batched.decide_batch(batch));
        for (std::size_t i = 0; i < n; ++i) {
          for (std::size_t p = 0; p < requests[i].size(); ++p) {
            CAPTURE(requests[i][p].key);
            REQUIRE(got[i][p].allowed == expected[i][p].allowed);
            CHECK(got[i][p].remaining == expected[i][p].remaining);
            CHECK(got[i][p].reset == expected[i][p].reset);
            CHECK(got[i][p].retry_after == expected[i][p].retry_after);
          }
        }
        const auto step_time = std::chrono::milliseconds(keel::test::uniform(0, 700));
        one_clock.advance(step_time);
        batch_clock.advance(step_time);
      }
      CHECK(one.stats().keys == batched.stats().keys);
      CHECK(batched.stats().keys <= 64);
    }
  }

  TEST_CASE("memory backend: decide_batch from N threads on one key allows exactly the limit") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 5000, .period = 1h};
    std::atomic<std::uint64_t> allowed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        const rl::keyed_limit k{"hot", &l};
        std::array<rl::decision, 50> out{};
        std::array<rl::batch_request, 50> batch{};
        for (std::size_t j = 0; j < batch.size(); ++j) batch[j] = {{&k, 1}, 1, {&out[j], 1}};
        for (int i = 0; i < 40; ++i) {
          REQUIRE(store.decide_batch(batch));
          for (const auto& d : out) allowed += d.allowed ? 1 : 0;
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(allowed == 5000);
  }

  TEST_CASE("memory backend: batches from N threads while tables grow and evict stay exact and bounded") {
    // Batches look keys up ahead of time without the shard lock (to prefetch); this runs that
    // against other threads inserting, rehashing and evicting the same shards.
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock, .shards = 4, .max_keys = 2000});
    const rl::limit hot_limit{.algorithm = rl::algorithm::gcra, .count = 500, .period = 1h};
    const rl::limit churn{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1s};
    std::atomic<std::uint64_t> allowed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::vector<std::string> keys(32);
        std::array<rl::keyed_limit, 32> limits{};
        std::array<rl::decision, 32> out{};
        std::array<rl::batch_request, 32> batch{};
        for (int round = 0; round < 300; ++round) {
          for (std::size_t j = 0; j < 32; ++j) {
            keys[j] = j == 7
                          ? "hot"
                          : "t" + std::to_string(t) + "-" + std::to_string(round) + "-" + std::to_string(j);
            limits[j] = {keys[j], j == 7 ? &hot_limit : &churn};
            batch[j] = {{&limits[j], 1}, 1, {&out[j], 1}};
          }
          REQUIRE(store.decide_batch(batch));
          allowed += out[7].allowed ? 1 : 0;
          for (std::size_t j = 0; j < 32; ++j) REQUIRE((j == 7 || out[j].allowed));
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(allowed == 500);
    CHECK(store.stats().keys <= 2000);
    CHECK(store.stats().evicted_live > 0);
  }

  TEST_CASE("memory backend: per-key locks stay exact while other threads rebuild the tables") {
    // Decisions on keys already present take only their slot's lock; inserting, growing and
    // evicting take the shard's and freeze every slot. Here single decisions, batches and
    // two-key decisions on 64 hot keys race a thread that floods the same shards with keys
    // that expire at once (tables grow, rebuild, evict live keys) and calls evict_expired().
    // Every hot key must allow exactly its limit.
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock, .shards = 4, .max_keys = 400});
    // Enough units that the hot keys keep allowing for most of the run (a lost update only shows
    // while decisions spend), over a period the flood's clock steps never refill.
    constexpr std::uint64_t hot_count = 1200;
    const rl::limit hot_limit{.algorithm = rl::algorithm::gcra, .count = hot_count, .period = 1000h};
    const rl::limit churn{.algorithm = rl::algorithm::gcra, .count = 1'000'000, .period = 1s};
    constexpr std::size_t hot_keys = 64;
    std::vector<std::string> hot;
    for (std::size_t k = 0; k < hot_keys; ++k)
      hot.push_back(k % 4 == 0 ? "a-hot-key-too-long-to-be-stored-inline-" + std::to_string(k)
                               : "hot" + std::to_string(k));
    std::array<std::atomic<std::uint64_t>, hot_keys> allowed{};
    std::atomic<bool> deciding{true};
    std::thread flood([&] {
      // At least 50,000 keys, however the threads are scheduled.
      for (std::uint64_t i = 0; deciding || i < 50'000; ++i) {
        const std::string key = "churn" + std::to_string(i);
        const rl::keyed_limit k{key, &churn};
        rl::decision d;
        REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
        if (i % 5000 == 0) {
          clock.advance(1ms);  // the flood expires; the hot keys (one unit per 100 min) do not refill
          store.evict_expired();
        }
      }
    });
    // Each thread draws from its own generator, seeded from the printed test seed.
    const auto seed = keel::test::uniform<std::uint64_t>(0, std::numeric_limits<std::uint64_t>::max());
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 gen(seed + static_cast<std::uint64_t>(t));
        const auto pick = [&](std::size_t low, std::size_t high) {
          return std::uniform_int_distribution<std::size_t>(low, high)(gen);
        };
        for (int round = 0; round < 3000; ++round) {
          const auto a = pick(0, hot_keys - 1);
          const auto b = (a + pick(1, hot_keys - 1)) % hot_keys;
          if (t == 0) {  // one key per decide()
            const rl::keyed_limit k{hot[a], &hot_limit};
            rl::decision d;
            REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
            allowed[a] += d.allowed ? 1 : 0;
          } else if (t == 1) {  // two keys at once, all or nothing
            const rl::keyed_limit ks[] = {{hot[a], &hot_limit}, {hot[b], &hot_limit}};
            rl::decision d[2];
            REQUIRE(store.decide(ks, 1, d));
            // Allowed only if both allow (a limit that would have allowed reports so, unspent).
            const bool both = d[0].allowed && d[1].allowed;
            allowed[a] += both ? 1 : 0;
            allowed[b] += both ? 1 : 0;
          } else {  // batches with runs of one key and single requests mixed
            std::array<rl::keyed_limit, 24> ks{};
            std::array<rl::decision, 24> out{};
            std::array<rl::batch_request, 24> batch{};
            std::array<std::size_t, 24> which{};
            for (std::size_t j = 0; j < ks.size(); ++j) {
              which[j] = j < 8 ? a : pick(0, hot_keys - 1);
              ks[j] = {hot[which[j]], &hot_limit};
              batch[j] = {{&ks[j], 1}, 1, {&out[j], 1}};
            }
            REQUIRE(store.decide_batch(batch));
            for (std::size_t j = 0; j < ks.size(); ++j) allowed[which[j]] += out[j].allowed ? 1 : 0;
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    // Spend what is left, so that every key ends exactly at its limit.
    for (std::size_t k = 0; k < hot_keys; ++k) {
      const rl::keyed_limit key{hot[k], &hot_limit};
      rl::decision d;
      do {
        REQUIRE(store.decide({&key, 1}, 1, {&d, 1}));
        allowed[k] += d.allowed ? 1 : 0;
      } while (d.allowed);
    }
    deciding = false;
    flood.join();
    for (std::size_t k = 0; k < hot_keys; ++k) {
      CAPTURE(hot[k]);
      CHECK(allowed[k] == hot_count);
    }
    const auto stats = store.stats();
    CHECK(stats.keys <= 400);
    CHECK(stats.evicted_expired + stats.evicted_live > 1000);
  }

  TEST_CASE("memory backend: a bad request in a batch is an error and nothing is decided") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 2, .period = 1s};
    const rl::keyed_limit k{"k", &l};
    rl::decision out[2];
    const rl::batch_request batch[] = {{{&k, 1}, 1, {&out[0], 1}}, {{&k, 1}, 3, {&out[1], 1}}};
    const auto r = store.decide_batch(batch);
    REQUIRE_FALSE(r);
    CHECK(r.error() == rl::errc::cost_exceeds_burst);
    CHECK(store.stats().keys == 0);
    REQUIRE(store.decide({&k, 1}, 2, {&out[0], 1}));
    CHECK(out[0].allowed);  // the whole quota was still there
  }

  TEST_CASE("memory backend: a timestamp older than one already used does not turn time back") {
    // Threads passing their own slightly stale timestamps (or a coarse clock mixed with an
    // exact one) must not make a window algorithm forget what it counted.
    rl::memory_backend store;
    const rl::limit l{.algorithm = rl::algorithm::sliding_window, .count = 5, .period = 1s};
    const rl::keyed_limit k{"stale", &l};
    rl::decision d;
    const std::int64_t t = 1'000'000'000'000;  // a window boundary
    for (int i = 0; i < 5; ++i) {
      REQUIRE(store.decide_at(t + 500'000'000, {&k, 1}, 1, {&d, 1}));
      CHECK(d.allowed);
    }
    REQUIRE(store.decide_at(t - 800'000'000, {&k, 1}, 1, {&d, 1}));  // two windows "earlier"
    CHECK_FALSE(d.allowed);
    const rl::batch_request one{{&k, 1}, 1, {&d, 1}};
    REQUIRE(store.decide_batch_at(t - 800'000'000, {&one, 1}));
    CHECK_FALSE(d.allowed);
  }

  TEST_CASE("memory backend: the coarse clock keeps limits exact") {
    rl::memory_backend store({.coarse_clock = true});
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 3000, .period = 1h};
    std::atomic<std::uint64_t> allowed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        const rl::keyed_limit k{"coarse", &l};
        rl::decision d;
        for (int i = 0; i < 1500; ++i) {
          REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
          allowed += d.allowed ? 1 : 0;
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(allowed == 3000);
    // Its readings are on the exact clock's scale, less than a few ticks behind: one unit per
    // hour spent now comes back an hour after the exact clock's now, not 100 ms earlier.
    const rl::limit hourly{.algorithm = rl::algorithm::gcra, .count = 1, .period = 1h};
    const rl::keyed_limit k{"scale", &hourly};
    rl::decision d;
    const std::int64_t exact = std::chrono::steady_clock::now().time_since_epoch().count();
    REQUIRE(store.decide({&k, 1}, 1, {&d, 1}));
    CHECK(d.allowed);
    const std::int64_t hour = std::chrono::nanoseconds(1h).count();
    REQUIRE(store.decide_at(exact + hour - 100'000'000, {&k, 1}, 1, {&d, 1}));
    CHECK_FALSE(d.allowed);
    REQUIRE(store.decide_at(exact + hour, {&k, 1}, 1, {&d, 1}));
    CHECK(d.allowed);
  }

  TEST_CASE("policy files: each mistake is named by its field") {
    const std::pair<const char*, const char*> cases[] = {
        {R"({"policies": [{"name": "a", "limits": [{"limit": 1, "period": "1s"}]},
                          {"name": "b", "limits": [{"limit": 1, "period": "1s"}]},
                          {"name": "c", "limits": [{"limit": 5, "period": "soon"}]}]})",
         R"(policies[2].limits[0].period: expected a duration like "1s")"},
        {R"({"policies": [{"name": "a", "limits": [{"limit": -1, "period": "1s"}]}]})",
         "policies[0].limits[0].limit: expected a whole number"},
        {R"({"policies": [{"name": "a", "limits": [{"limit": 1, "period": "1s", "algorithm": "leaky"}]}]})",
         "policies[0].limits[0].algorithm: expected sliding_log"},
        {R"({"policies": [{"name": "a", "limits": [{"limit": 1, "period": "1s", "burst": 3,
                          "algorithm": "sliding_window"}]}]})",
         "policies[0].limits[0].burst: only gcra and token_bucket"},
        {R"({"policies": [{"name": "a", "limits": []}]})", "policies[0].limits: expected at least one limit"},
        {R"({"policies": [{"name": "a", "limts": []}]})", "policies[0].limts: unknown field"},
        {R"({"policies": [{"limits": [{"limit": 1, "period": "1s"}]}]})", "policies[0].name: missing"},
        {R"({"policies": [{"name": "a b", "limits": [{"limit": 1, "period": "1s"}]}]})",
         "policies[0].name: expected"},
        {R"({"policies": [{"name": "a", "limits": [{"limit": 1, "period": "1s"}]},
                          {"name": "a", "limits": [{"limit": 1, "period": "1s"}]}]})",
         "policies[1].name: \"a\" is used by an earlier policy"},
        {R"({"policies": [{"name": "a", "key": ["email"], "limits": [{"limit": 1, "period": "1s"}]}]})",
         "policies[0].key[0]: expected ip, user"},
        {R"({"policies": [{"name": "a", "warn_at": 1.5, "limits": [{"limit": 1, "period": "1s"}]}]})",
         "policies[0].warn_at: expected a fraction"},
        {R"({"policies": [{"name": "a", "on_failure": "maybe", "limits": [{"limit": 1, "period": "1s"}]}]})",
         "policies[0].on_failure: expected \"open\""},
        {R"({"policies": [{"name": "a", "limits": [{"limit": 1, "period": "1s"}]}], "allow": ["127.0.0.1"]})",
         "allow[0]: expected \"attribute=value\""},
        {R"({"policies": [], "extra": 1})", "extra: unknown field"},
        {R"({"policies": [ {"name": "a", )", "(document): not valid JSON"},
        {R"([1, 2])", "(document): expected an object"},
    };
    for (const auto& one_case : cases) {
      const std::string_view text = one_case.first;
      const std::string_view expected = one_case.second;
      std::string problem;
      const auto parsed = rl::parse_policies(text, &problem);
      REQUIRE_FALSE(parsed);
      CHECK(parsed.error() == rl::errc::invalid_policy);
      INFO(text);
      CHECK_MESSAGE(problem.find(expected) == 0, "got: " << problem);
    }
  }

  TEST_CASE("policy files: a good one round-trips every field") {
    std::string problem;
    const auto set = rl::parse_policies(R"({
      "policies": [{"name": "api", "key": ["tenant", "route"], "routes": ["/api/*"], "warn_at": 0.8,
                    "shadow": false, "on_failure": "closed", "insurance_divisor": 3,
                    "limits": [{"algorithm": "gcra", "limit": 10, "period": "1s", "burst": 20},
                               {"algorithm": "sliding_window", "limit": 1000, "period": "1h", "block": "5m"}]}],
      "allow": ["ip=127.0.0.1"], "deny": ["user=mallory"]})",
                                        &problem);
    REQUIRE_MESSAGE(set, problem);
    REQUIRE(set->policies.size() == 1);
    const auto& p = set->policies[0];
    CHECK(p.key_by == std::vector{rl::attribute::tenant, rl::attribute::route});
    CHECK(p.on_failure == rl::failure_mode::closed);
    CHECK(p.insurance_divisor == 3);
    CHECK(p.limits[0].burst == 20);
    CHECK(p.limits[1].period == 1h);
    CHECK(p.limits[1].block == 5min);
    CHECK(set->deny == std::vector<std::string>{"user=mallory"});
    CHECK(rl::parse_duration("250ms") == 250ms);
    CHECK_FALSE(rl::parse_duration("1.5s"));
    CHECK_FALSE(rl::parse_duration("s"));
  }

  TEST_CASE("limiter: a bad file is rejected and the old policies stay in force") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    rl::limiter limiter(store, {.clock = &clock});
    const auto good = write_file(
        "good.json", R"({"policies": [{"name": "api", "limits": [{"limit": 2, "period": "1m"}]}]})");
    REQUIRE(limiter.load_file(good));
    const auto bad = write_file(
        "bad.json", R"({"policies": [{"name": "api", "limits": [{"limit": 100, "period": "forever"}]}]})");
    std::string problem;
    const auto reloaded = limiter.load_file(bad, &problem);
    REQUIRE_FALSE(reloaded);
    CHECK(problem.find("policies[0].limits[0].period: expected a duration") != std::string::npos);
    CHECK(limiter.policies()->policies[0].limits[0].count == 2);
    const rl::request_attributes r{.path = "/x", .ip = "10.0.0.1"};
    CHECK(limiter.check(r).allowed());
    CHECK(limiter.check(r).allowed());
    CHECK_FALSE(limiter.check(r).allowed());
    std::filesystem::remove(good);
    std::filesystem::remove(bad);
  }

  TEST_CASE("limiter: keys, routes, soft limits, shadow mode, lists, penalties") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    rl::limiter limiter(store, {.clock = &clock, .cache_blocked_keys = false});
    rl::policy_set set;
    set.policies.push_back(
        {.name = "per-user",
         .key_by = {rl::attribute::user},
         .routes = {"/api/*"},
         .limits = {{.algorithm = rl::algorithm::sliding_log, .count = 10, .period = 1min}},
         .warn_at = 0.7});
    set.policies.push_back({.name = "shadow-ip",
                            .key_by = {rl::attribute::ip},
                            .limits = {{.algorithm = rl::algorithm::gcra, .count = 3, .period = 1min}},
                            .shadow = true});
    set.allow = {"user=ops"};
    set.deny = {"ip=6.6.6.6"};
    REQUIRE(limiter.set_policies(set));

    const rl::request_attributes alice{.path = "/api/items", .ip = "10.0.0.1", .user = "alice"};
    std::vector<rl::outcome> outcomes;
    for (int i = 0; i < 11; ++i) outcomes.push_back(limiter.check(alice).outcome);
    CHECK(outcomes[5] == rl::outcome::allowed);
    CHECK(outcomes[6] == rl::outcome::warned);  // 7 of 10 used
    CHECK(outcomes[9] == rl::outcome::warned);
    CHECK(outcomes[10] == rl::outcome::denied);
    const auto last = limiter.check(alice);
    CHECK(last.shadow_denied);  // shadow would have denied long ago, but never does
    REQUIRE(last.binding() != nullptr);
    CHECK(last.binding()->policy == "per-user");
    CHECK(last.retry_after() > 59s);
    CHECK(metric(limiter, "per-user", "warned") == 4);
    CHECK(metric(limiter, "per-user", "denied") == 2);
    CHECK(metric(limiter, "shadow-ip", "shadow_denied") >= 8);

    // Another user has their own key; a route outside /api only meets the shadow policy.
    CHECK(limiter.check({.path = "/api/items", .ip = "10.0.0.1", .user = "bob"}).outcome ==
          rl::outcome::allowed);
    CHECK(limiter.check({.path = "/static/x", .ip = "10.0.0.1", .user = "alice"}).allowed());
    // Anonymous requests skip a per-user policy.
    CHECK(limiter.check({.path = "/api/items", .ip = "10.0.0.2"}).allowed());
    // Lists.
    CHECK(limiter.check({.path = "/api/items", .ip = "6.6.6.6", .user = "carol"}).outcome ==
          rl::outcome::refused);
    for (int i = 0; i < 20; ++i)
      CHECK(limiter.check({.path = "/api/items", .ip = "1.1.1.1", .user = "ops"}).allowed());
    // A reward lets alice in again; a penalty shuts bob out.
    REQUIRE(limiter.adjust(alice, "per-user", -2));
    CHECK(limiter.check(alice).allowed());
    REQUIRE(limiter.adjust({.user = "bob"}, "per-user", 100));
    CHECK_FALSE(limiter.check({.path = "/api/items", .ip = "10.0.0.1", .user = "bob"}).allowed());
    CHECK(limiter.adjust(alice, "nonesuch", 1).error() == rl::errc::invalid_policy);
  }

  TEST_CASE("limiter: several policies are checked atomically") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    rl::limiter limiter(store, {.clock = &clock});
    rl::policy_set set;
    set.policies.push_back({.name = "burst",
                            .key_by = {rl::attribute::ip},
                            .limits = {{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1s}}});
    set.policies.push_back(
        {.name = "hourly",
         .key_by = {rl::attribute::ip},
         .limits = {{.algorithm = rl::algorithm::sliding_window, .count = 25, .period = 1h}}});
    REQUIRE(limiter.set_policies(set));
    const rl::request_attributes r{.path = "/", .ip = "10.1.1.1"};
    int allowed = 0;
    for (int second = 0; second < 5; ++second) {
      for (int i = 0; i < 20; ++i) allowed += limiter.check(r).allowed() ? 1 : 0;
      clock.advance(1s);
    }
    CHECK(allowed == 25);  // 10 + 10 + 5: denials by "burst" never spent "hourly"
  }

  TEST_CASE("limiter: when the store fails, fail open, fail closed or insurance, then recover") {
    keel::manual_clock clock;
    flaky_backend store(clock);
    rl::limiter limiter(store, {.clock = &clock, .retry_store_after = 1s});
    rl::policy_set set;
    for (const auto& [name, mode] :
         {std::pair{"open", rl::failure_mode::open}, std::pair{"closed", rl::failure_mode::closed},
          std::pair{"insured", rl::failure_mode::insurance}}) {
      set.policies.push_back({.name = name,
                              .key_by = {rl::attribute::tenant},
                              .routes = {std::string("/") + name},
                              .limits = {{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1min}},
                              .on_failure = mode,
                              .insurance_divisor = 2});
    }
    REQUIRE(limiter.set_policies(set));
    const rl::request_attributes open{.path = "/open", .tenant = "t"};
    const rl::request_attributes closed{.path = "/closed", .tenant = "t"};
    const rl::request_attributes insured{.path = "/insured", .tenant = "t"};
    CHECK(limiter.check(open).source == rl::source::store);

    store.up = false;
    const auto o = limiter.check(open);
    CHECK(o.allowed());
    CHECK(o.source == rl::source::failed_open);
    CHECK(limiter.store_down());
    const int calls = store.calls;
    const auto c = limiter.check(closed);
    CHECK_FALSE(c.allowed());
    CHECK(c.source == rl::source::failed_closed);
    CHECK(store.calls == calls);  // down: not retried before retry_store_after
    int allowed = 0;
    for (int i = 0; i < 20; ++i) {
      const auto v = limiter.check(insured);
      CHECK(v.source == rl::source::insurance);
      allowed += v.allowed() ? 1 : 0;
    }
    CHECK(allowed == 5);  // 10 / insurance_divisor 2
    CHECK(metric(limiter, "insured", "insurance") == 20);
    CHECK(metric(limiter, "closed", "failed_closed") == 1);
    CHECK(limiter.metrics().expose().find("ratelimit_store_up{backend=\"flaky\"} 0") != std::string::npos);

    store.up = true;
    clock.advance(1s);
    const auto back = limiter.check(insured);
    CHECK(back.source == rl::source::store);
    CHECK(back.allowed());
    CHECK_FALSE(limiter.store_down());
    CHECK(limiter.metrics().expose().find("ratelimit_store_up{backend=\"flaky\"} 1") != std::string::npos);
  }

  TEST_CASE("limiter: keys known to be over the limit are denied without asking the store") {
    keel::manual_clock clock;
    flaky_backend store(clock);
    rl::limiter limiter(store, {.clock = &clock});
    rl::policy_set set;
    set.policies.push_back(
        {.name = "tight", .limits = {{.algorithm = rl::algorithm::gcra, .count = 1, .period = 10s}}});
    REQUIRE(limiter.set_policies(set));
    const rl::request_attributes r{.path = "/", .ip = "10.9.9.9"};
    CHECK(limiter.check(r).allowed());
    CHECK_FALSE(limiter.check(r).allowed());
    const int calls = store.calls;
    const auto cached = limiter.check(r);
    CHECK_FALSE(cached.allowed());
    CHECK(cached.source == rl::source::blocked_cache);
    CHECK(cached.retry_after() == 10s);
    CHECK(store.calls == calls);
    clock.advance(10s);
    CHECK(limiter.check(r).allowed());
    CHECK(store.calls == calls + 1);
  }
}
