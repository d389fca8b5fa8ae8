// The in-process backend when an allocation fails mid-decision: the error reaches the caller and
// no key, shard or table stays locked. Allocations are made to fail by replacing the global
// operator new for this test binary; it only fails while armed, in the thread that armed it.
#include <keel/ratelimit.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <thread>

namespace {

// Allocations this thread may still make before one fails; negative: none fails.
thread_local long allocations_before_failure = -1;

class failing_allocations {
 public:
  explicit failing_allocations(long succeed_first) { allocations_before_failure = succeed_first; }
  failing_allocations(const failing_allocations&) = delete;
  failing_allocations& operator=(const failing_allocations&) = delete;
  ~failing_allocations() { allocations_before_failure = -1; }
};

}  // namespace

namespace {
void fail_when_armed() {
  if (allocations_before_failure == 0) {
    allocations_before_failure = -1;
    throw std::bad_alloc();
  }
  if (allocations_before_failure > 0) --allocations_before_failure;
}
}  // namespace

void* operator new(std::size_t size) {
  fail_when_armed();
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t alignment) {
  fail_when_armed();
  const auto align = static_cast<std::size_t>(alignment);
  if (void* p = std::aligned_alloc(align, (size + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

namespace rl = keel::ratelimit;
using namespace std::chrono_literals;

namespace {

// Decides on `limits` from another thread and says whether it finished in time: a key, shard
// or table left locked makes it spin for good (the process is then ended, as the store can no
// longer be destroyed).
bool decides_promptly(rl::memory_backend& store, std::span<const rl::keyed_limit> limits) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread([&store, limits, done] {
    rl::decision out[rl::max_limits_per_decision];
    (void)store.decide(limits, 1, {out, limits.size()});
    *done = true;
  }).detach();
  for (int waited = 0; waited < 500 && !*done; ++waited) std::this_thread::sleep_for(10ms);
  return *done;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("memory backend: an allocation failing mid-decision is an error and leaves nothing locked") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock, .shards = 2, .max_keys = 64});
    const rl::limit log{.algorithm = rl::algorithm::sliding_log, .count = 1000, .period = 1h};
    const rl::limit rate{.algorithm = rl::algorithm::gcra, .count = 1000, .period = 1h};
    int failures = 0;
    // New keys with heap-allocated parts (a long key, a sliding log), two limits at once, in
    // a table small enough that inserting grows it and evicts: fail the 1st, 2nd, … allocation.
    for (long nth = 0; nth < 40; ++nth) {
      const std::string long_key = "a-key-too-long-to-be-stored-inline-" + std::to_string(nth);
      const std::string short_key = "k" + std::to_string(nth);
      const rl::keyed_limit both[] = {{long_key, &log}, {short_key, &rate}};
      rl::decision out[2];
      bool threw = false;
      {
        const failing_allocations failing(nth % 4);
        try {
          (void)store.decide(both, 1, out);
        } catch (const std::bad_alloc&) {
          threw = true;
        }
      }
      failures += threw ? 1 : 0;
      CAPTURE(nth);
      if (!decides_promptly(store, both)) {
        FAIL_CHECK("a decision after the failed allocation did not finish: something stayed locked");
        std::abort();
      }
      // A batch of single requests over the same keys goes through too.
      const rl::keyed_limit one[] = {{long_key, &log}};
      const rl::batch_request batch[] = {{one, 1, {out, 1}}, {one, 1, {out + 1, 1}}};
      REQUIRE(store.decide_batch(batch));
    }
    CHECK(failures > 0);
    CHECK(store.stats().keys <= 64);
  }

  TEST_CASE(
      "memory backend: a key whose algorithm changes keeps its old state when the new one cannot be made") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    const rl::limit rate{.algorithm = rl::algorithm::gcra, .count = 10, .period = 1h};
    const rl::limit log{.algorithm = rl::algorithm::sliding_log, .count = 10, .period = 1h};
    const rl::keyed_limit as_rate{"k", &rate};
    const rl::keyed_limit as_log{"k", &log};
    rl::decision d;
    for (int i = 0; i < 3; ++i) REQUIRE(store.decide({&as_rate, 1}, 1, {&d, 1}));
    {
      const failing_allocations failing(0);
      CHECK_THROWS_AS((void)store.decide({&as_log, 1}, 1, {&d, 1}), std::bad_alloc);
    }
    REQUIRE(store.decide({&as_rate, 1}, 0, {&d, 1}));  // still its GCRA state: 3 spent
    CHECK(d.remaining == 7);
    REQUIRE(store.decide({&as_log, 1}, 1, {&d, 1}));  // now the change goes through
    CHECK(d.remaining == 9);
  }

  TEST_CASE("memory backend: a multi-limit decision that cannot commit all its limits commits none") {
    keel::manual_clock clock;
    rl::memory_backend store({.clock = &clock});
    const rl::limit log{.algorithm = rl::algorithm::sliding_log, .count = 1000, .period = 1h};
    const rl::keyed_limit a{"a", &log};
    const rl::keyed_limit b{"b", &log};
    rl::decision d[2];
    // A deque stores 32 of the log's entries per block: "b" fills its block at the next entry
    // (which allocates one), "a" does not.
    for (int i = 0; i < 30; ++i) REQUIRE(store.decide({&a, 1}, 1, {d, 1}));
    for (int i = 0; i < 31; ++i) REQUIRE(store.decide({&b, 1}, 1, {d, 1}));
    const rl::keyed_limit both[] = {a, b};
    {
      const failing_allocations failing(0);
      CHECK_THROWS_AS((void)store.decide(both, 1, d), std::bad_alloc);
    }
    REQUIRE(store.decide({&a, 1}, 0, {d, 1}));
    CHECK(d[0].remaining == 970);  // "a"'s entry was taken back
    REQUIRE(store.decide({&b, 1}, 0, {d, 1}));
    CHECK(d[0].remaining == 969);
    REQUIRE(store.decide(both, 1, d));
    CHECK(d[0].remaining == 969);
    CHECK(d[1].remaining == 968);
  }
}
