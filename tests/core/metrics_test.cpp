#include <keel/core/metrics.hpp>

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

TEST_SUITE("unit") {
  TEST_CASE("metrics expose in the Prometheus text format with escaped labels") {
    keel::metrics::registry r;
    auto& jobs = r.add_counter("jobs_done_total", "Jobs done.\nBy queue.", {"queue"});
    jobs.labels({"email"}).inc(3);
    jobs.labels({R"(we"ird\name)"
                 "\n"})
        .inc();
    r.add_gauge("queue_depth", "Jobs waiting.").get().set(2.5);
    auto& latency = r.add_histogram("job_seconds", "Job run time.", {}, {0.1, 1});
    latency.get().observe(0.05);
    latency.get().observe(0.1);
    latency.get().observe(0.5);
    latency.get().observe(7);

    CHECK(r.expose() ==
          "# HELP jobs_done_total Jobs done.\\nBy queue.\n"
          "# TYPE jobs_done_total counter\n"
          "jobs_done_total{queue=\"email\"} 3\n"
          "jobs_done_total{queue=\"we\\\"ird\\\\name\\n\"} 1\n"
          "# HELP queue_depth Jobs waiting.\n"
          "# TYPE queue_depth gauge\n"
          "queue_depth 2.5\n"
          "# HELP job_seconds Job run time.\n"
          "# TYPE job_seconds histogram\n"
          "job_seconds_bucket{le=\"0.1\"} 2\n"
          "job_seconds_bucket{le=\"1\"} 3\n"
          "job_seconds_bucket{le=\"+Inf\"} 4\n"
          "job_seconds_sum 7.65\n"
          "job_seconds_count 4\n");
  }

  TEST_CASE("registering a metric twice returns the same family; conflicts and bad names throw") {
    keel::metrics::registry r;
    auto& a = r.add_counter("a_total", "A.", {"x"});
    CHECK(&r.add_counter("a_total", "A.", {"x"}) == &a);
    CHECK(&a.labels({"1"}) == &a.labels({"1"}));
    CHECK_THROWS_AS((void)r.add_gauge("a_total", "A."), std::invalid_argument);
    CHECK_THROWS_AS((void)r.add_counter("a_total", "A.", {"y"}), std::invalid_argument);
    CHECK_THROWS_AS((void)r.add_counter("1abc", "bad"), std::invalid_argument);
    CHECK_THROWS_AS((void)r.add_counter("ok_total", "bad label", {"__reserved"}), std::invalid_argument);
    CHECK_THROWS_AS((void)r.add_histogram("h", "le is reserved", {"le"}), std::invalid_argument);
    CHECK_THROWS_AS((void)r.add_histogram("h2", "unsorted", {}, {1, 0.5}), std::invalid_argument);
    CHECK_THROWS_AS((void)a.labels({}), std::invalid_argument);
  }

  TEST_CASE("a hidden child is not exposed, keeps its value, and comes back when used again") {
    keel::metrics::registry r;
    auto& depth = r.add_gauge("depth", "Jobs.", {"queue"});
    auto& a = depth.labels({"a"});
    a.set(4);
    depth.labels({"b"}).set(1);
    depth.hide({"a"});
    depth.hide({"never-used"});
    CHECK(depth.exposed_children() == 1);
    CHECK(r.expose() == "# HELP depth Jobs.\n# TYPE depth gauge\ndepth{queue=\"b\"} 1\n");
    a.set(5);  // the reference stays valid
    CHECK(&depth.labels({"a"}) == &a);
    CHECK(depth.exposed_children() == 2);
    CHECK(r.expose() ==
          "# HELP depth Jobs.\n# TYPE depth gauge\ndepth{queue=\"a\"} 5\ndepth{queue=\"b\"} 1\n");
  }

  TEST_CASE("the metrics hot path counts exactly under several threads") {
    keel::metrics::registry r;
    auto& family = r.add_counter("hits_total", "Hits.", {"route"});
    auto& hist = r.add_histogram("sizes", "Sizes.", {"route"}, {1, 10, 100});
    constexpr int threads = 4;
    constexpr int per_thread = 50'000;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        auto& mine = family.labels({"/shared"});
        auto& sizes = hist.labels({"/shared"});
        for (int i = 0; i < per_thread; ++i) {
          mine.inc();
          sizes.observe(static_cast<double>(i % 200));
          // Resolving children concurrently with increments must be safe too.
          if (i % 1000 == 0) family.labels({"/t" + std::to_string(t)}).inc();
        }
      });
    }
    for (auto& t : pool) t.join();
    CHECK(family.labels({"/shared"}).value() == std::uint64_t{threads * per_thread});
    for (int t = 0; t < threads; ++t)
      CHECK(family.labels({"/t" + std::to_string(t)}).value() == per_thread / 1000);
    auto& h = hist.labels({"/shared"});
    CHECK(h.count() == std::uint64_t{threads * per_thread});
    // 0..199 repeated 250 times per thread: exact in a double.
    CHECK(h.sum() == threads * 250.0 * (199.0 * 200.0 / 2.0));
    const auto buckets = h.bucket_counts();
    REQUIRE(buckets.size() == 4);
    CHECK(buckets[0] == threads * 250 * 2);   // 0, 1
    CHECK(buckets[1] == threads * 250 * 9);   // 2..10
    CHECK(buckets[2] == threads * 250 * 90);  // 11..100
    CHECK(buckets[3] == threads * 250 * 99);  // 101..199
  }
}
