// keel::jobs against a real Postgres: enqueue, workers, retries, leases, control, maintenance,
// and the reliability run with real worker processes (tests/jobs/test_worker.cpp).
#include <keel/jobs.hpp>
#include <keel/pg/async.hpp>
#include <keel/pg/local_cluster.hpp>
#include <keel/pg/transaction.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <signal.h>
#include <spawn.h>
#include <support/pg.hpp>
#include <support/result.hpp>
#include <support/subprocess.hpp>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

using namespace std::chrono_literals;
namespace jobs = keel::jobs;

// Polls `condition` until it holds or `timeout` passes.
template <class F>
bool eventually(F&& condition, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

std::int64_t count(keel::pg::connection& c, std::string_view sql) {
  return c.query(sql).value().value<std::int64_t>().value();
}

std::string state_of(keel::pg::connection& c, std::int64_t id) {
  return c.query("SELECT state FROM keel_jobs WHERE id = $1", id).value().value<std::string>().value();
}

struct schema_with_jobs : keel::test::scratch_schema {
  keel::pg::connection c = connect();
  schema_with_jobs() { REQUIRE(jobs::migrate(c)); }
};

// Returns once `w` answered two more fetch statements than when called, so at least one of
// them started after the call: anything it could take, it has taken. Negative checks ("nothing
// was started") then follow a fetch that happened, not a guess of how long one takes.
void await_fetch_rounds(jobs::worker& w) {
  const auto from = w.stats().fetch_rounds;
  w.wake();
  REQUIRE(eventually([&] { return w.stats().fetch_rounds >= from + 2; }));
}

// The same for the leader's maintenance rounds (rescue, periodic jobs, pruning).
void await_maintenance_rounds(const jobs::worker& w) {
  const auto from = w.stats().maintenance_rounds;
  REQUIRE(eventually([&] { return w.stats().maintenance_rounds >= from + 2; }));
}

jobs::worker_options fast_options(const std::string& conninfo) {
  return {.conninfo = conninfo,
          .concurrency = 4,
          .poll_interval = 100ms,
          .lease = 2000ms,
          .shutdown_timeout = 2000ms,
          .maintenance_interval = 100ms};
}

// Counts what enqueue reports, per (queue, kind).
struct counting_observer final : jobs::observer {
  std::mutex m;
  std::map<std::pair<std::string, std::string>, std::size_t> jobs_enqueued;
  std::size_t calls = 0;
  void enqueued(std::string_view queue, std::string_view kind, std::size_t n) override {
    std::lock_guard lock(m);
    jobs_enqueued[{std::string(queue), std::string(kind)}] += n;
    ++calls;
  }
  std::size_t of(const std::string& queue, const std::string& kind) {
    std::lock_guard lock(m);
    return jobs_enqueued[{queue, kind}];
  }
};

// A child process running tests/jobs/test_worker.cpp.
struct child : keel::test::child_process {
  child(const std::string& mode, const std::string& conninfo)
      : child_process(KEEL_JOBS_TEST_WORKER, {mode, conninfo}) {}
};

// 3,000 queues with known contents: queue i ("q0000"...) has i % 4 + 1 available jobs, one more
// scheduled when i % 3 == 0; of its first job, one completed in the last minute when i % 5 == 0,
// else one that failed in the last minute (retryable) when i % 7 == 0. "q0001" is paused,
// "q0002" limited to 3, and "idle" has a pause record and no jobs.
struct many_queues {
  struct expected {
    std::array<std::int64_t, 8> counts{};
    [[nodiscard]] std::int64_t unfinished() const {
      return counts[0] + counts[1] + counts[2] + counts[3] + counts[4];
    }
    [[nodiscard]] std::int64_t total() const {
      std::int64_t n = 0;
      for (const auto c : counts) n += c;
      return n;
    }
  };
  std::map<std::string, expected> queues;

  static std::string name(int i) {
    std::string n = std::to_string(i);
    return "q" + std::string(4 - n.size(), '0') + n;
  }

  static many_queues enqueue(keel::pg::connection& c) {
    many_queues out;
    std::vector<jobs::new_job> batch;
    std::vector<std::string> completing, failing;
    const auto later = keel::timestamp(std::chrono::system_clock::now() + std::chrono::hours(1));
    for (int i = 0; i < 3000; ++i) {
      auto& want = out.queues[name(i)].counts;
      const int available = i % 4 + 1;
      for (int k = 0; k < available; ++k) batch.push_back({.kind = "k", .queue = name(i)});
      want[static_cast<int>(jobs::job_state::available)] = available;
      if (i % 3 == 0) {
        batch.push_back({.kind = "k", .queue = name(i), .run_at = later});
        want[static_cast<int>(jobs::job_state::scheduled)] = 1;
      }
      if (i % 5 == 0) {
        completing.push_back(name(i));
        --want[static_cast<int>(jobs::job_state::available)];
        want[static_cast<int>(jobs::job_state::completed)] = 1;
      } else if (i % 7 == 0) {
        failing.push_back(name(i));
        --want[static_cast<int>(jobs::job_state::available)];
        want[static_cast<int>(jobs::job_state::retryable)] = 1;
      }
    }
    REQUIRE(jobs::enqueue_many(c, batch));
    // The first job of those queues finished or failed just now (as a worker would leave them).
    REQUIRE(c.query(
        "UPDATE keel_jobs SET state = 'completed', attempt = 1, attempted_at = now(), finished_at = now() "
        "WHERE id IN (SELECT min(id) FROM keel_jobs WHERE queue = ANY($1) GROUP BY queue)",
        completing));
    REQUIRE(
        c.query("UPDATE keel_jobs SET state = 'retryable', attempt = 1, attempted_at = now() "
                "WHERE id IN (SELECT min(id) FROM keel_jobs WHERE queue = ANY($1) GROUP BY queue)",
                failing));
    REQUIRE(jobs::pause_queue(c, "q0001"));
    REQUIRE(jobs::set_queue_limit(c, "q0002", 3));
    REQUIRE(jobs::pause_queue(c, "idle"));
    REQUIRE(c.execute("ANALYZE keel_jobs"));
    return out;
  }
};

// The value of `series` (name and labels, as exposed) in a Prometheus exposition, or -1.
double sample(const std::string& exposition, const std::string& series) {
  const auto at = exposition.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(exposition.substr(at + series.size() + 2));
}

// The queue label values of keel_jobs_depth in an exposition.
std::set<std::string> depth_queues(const std::string& exposition) {
  std::set<std::string> out;
  const std::string prefix = "\nkeel_jobs_depth{queue=\"";
  for (auto at = exposition.find(prefix); at != std::string::npos; at = exposition.find(prefix, at + 1)) {
    const auto begin = at + prefix.size();
    out.insert(exposition.substr(begin, exposition.find('"', begin) - begin));
  }
  return out;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("backoff doubles from the initial delay, is capped, and jitters within bounds") {
    const jobs::retry_policy p{.initial_backoff = 100ms, .max_backoff = 1000ms, .jitter = 0.0};
    CHECK(jobs::backoff(p, 1, 0.5) == 100ms);
    CHECK(jobs::backoff(p, 2, 0.5) == 200ms);
    CHECK(jobs::backoff(p, 3, 0.5) == 400ms);
    CHECK(jobs::backoff(p, 5, 0.5) == 1000ms);
    CHECK(jobs::backoff(p, 200, 0.5) == 1000ms);
    const jobs::retry_policy j{.initial_backoff = 1000ms, .max_backoff = 10s, .jitter = 0.2};
    CHECK(jobs::backoff(j, 1, 0.0) == 800ms);
    CHECK(jobs::backoff(j, 1, 0.5) == 1000ms);
    CHECK(jobs::backoff(j, 1, 0.999) >= 1199ms);
  }

  TEST_CASE("cron expressions match the minutes they name, in UTC") {
    using namespace std::chrono;
    auto at = [](int y, unsigned mo, unsigned d, int h, int mi) {
      return keel::timestamp(sys_days(year{y} / month{mo} / day{d}) + hours(h) + minutes(mi) + seconds(17));
    };
    auto every_15 = jobs::cron_schedule::parse("*/15 * * * *").value();
    CHECK(every_15.matches(at(2026, 11, 26, 3, 0)));
    CHECK(every_15.matches(at(2026, 11, 26, 3, 45)));
    CHECK_FALSE(every_15.matches(at(2026, 11, 26, 3, 44)));
    // Weekdays 9-17 at minute 30; 2026-11-26 is a Thursday, 2026-11-29 a Sunday.
    auto office = jobs::cron_schedule::parse("30 9-17 * * 1-5").value();
    CHECK(office.matches(at(2026, 11, 26, 9, 30)));
    CHECK_FALSE(office.matches(at(2026, 11, 26, 18, 30)));
    CHECK_FALSE(office.matches(at(2026, 11, 29, 10, 30)));
    // Sunday as 0 and as 7; lists and stepped ranges.
    CHECK(jobs::cron_schedule::parse("0 0 * * 7").value().matches(at(2026, 11, 29, 0, 0)));
    CHECK(jobs::cron_schedule::parse("0 0 * * 0").value().matches(at(2026, 11, 29, 0, 0)));
    CHECK(jobs::cron_schedule::parse("5,10-20/5 * * * *").value().matches(at(2026, 1, 1, 0, 15)));
    CHECK_FALSE(jobs::cron_schedule::parse("5,10-20/5 * * * *").value().matches(at(2026, 1, 1, 0, 16)));
    // Both day fields restricted: either matches (the 1st, or any Monday).
    auto either = jobs::cron_schedule::parse("0 12 1 * 1").value();
    CHECK(either.matches(at(2026, 11, 1, 12, 0)));   // a Sunday, but the 1st
    CHECK(either.matches(at(2026, 11, 30, 12, 0)));  // a Monday
    CHECK_FALSE(either.matches(at(2026, 11, 26, 12, 0)));
    for (const char* bad : {"", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
                            "*/0 * * * *", "a * * * *", "5-1 * * * *", "* * * * * *"}) {
      CHECK_MESSAGE(jobs::cron_schedule::parse(bad).error() == jobs::errc::invalid_schedule, bad);
    }
  }

  TEST_CASE("job states have names both ways") {
    for (int i = 0; i < 8; ++i) {
      const auto s = static_cast<jobs::job_state>(i);
      CHECK(jobs::parse_job_state(jobs::to_string(s)) == s);
    }
    CHECK_FALSE(jobs::parse_job_state("finished").has_value());
  }
}

TEST_SUITE("pg") {
  TEST_CASE("a job exists exactly when the enqueueing transaction commits") {
    schema_with_jobs db;
    {
      auto tx = keel::pg::transaction::begin(db.c).value();
      REQUIRE(jobs::enqueue(db.c, {.kind = "email", .args = R"({"to": 1})"}));
      REQUIRE(tx.rollback());
    }
    CHECK(count(db.c, "SELECT count(*) FROM keel_jobs") == 0);
    {
      auto tx = keel::pg::transaction::begin(db.c).value();
      auto put =
          jobs::enqueue(db.c, {.kind = "email", .args = R"({"to": 2})", .priority = 3, .tags = {"a", "b,c"}});
      REQUIRE(put);
      REQUIRE(tx.commit());
      auto job = jobs::get_job(db.c, put->id).value();
      CHECK(job.kind == "email");
      CHECK(job.state == jobs::job_state::available);
      CHECK(job.priority == 3);
      CHECK(job.tags == std::vector<std::string>{"a", "b,c"});
      CHECK(boost::json::parse(job.args) == boost::json::parse(R"({"to": 2})"));
    }
  }

  TEST_CASE("queue and kind names over max_name_bytes are refused by every call alike") {
    schema_with_jobs db;
    const std::string longest(jobs::max_name_bytes, 'q');
    const std::string too_long(jobs::max_name_bytes + 1, 'q');
    CHECK(jobs::pause_queue(db.c, longest));
    CHECK(jobs::resume_queue(db.c, longest));
    CHECK(jobs::enqueue(db.c, {.kind = "email", .queue = longest}));
    CHECK(jobs::pause_queue(db.c, too_long).error() == jobs::errc::invalid_name);
    CHECK(jobs::resume_queue(db.c, too_long).error() == jobs::errc::invalid_name);
    CHECK(jobs::set_queue_limit(db.c, too_long, 1).error() == jobs::errc::invalid_name);
    CHECK(jobs::enqueue(db.c, {.kind = "email", .queue = too_long}).error() == jobs::errc::invalid_name);
    CHECK(jobs::enqueue(db.c, {.kind = too_long}).error() == jobs::errc::invalid_name);
    CHECK(jobs::pause_queue(db.c, std::string("a\0b", 3)).error() == jobs::errc::invalid_name);
    // A 9,000-byte name (past Postgres's notification limit) could be paused but never resumed.
    const std::string huge(9000, 'q');
    CHECK(jobs::pause_queue(db.c, huge).error() == jobs::errc::invalid_name);
    CHECK(count(db.c, "SELECT count(*) FROM keel_job_queues WHERE length(name) > 255") == 0);
  }

  TEST_CASE("bad jobs are refused before anything is inserted") {
    schema_with_jobs db;
    std::vector<jobs::new_job> batch = {{.kind = "ok"}, {.kind = "ok", .args = "{not json"}};
    CHECK(jobs::enqueue_many(db.c, batch).error() == jobs::errc::invalid_args);
    CHECK(jobs::enqueue(db.c, {.kind = ""}).error() == jobs::errc::invalid_job);
    CHECK(jobs::enqueue(db.c, {.kind = "x", .max_attempts = 0}).error() == jobs::errc::invalid_job);
    CHECK(count(db.c, "SELECT count(*) FROM keel_jobs") == 0);
  }

  TEST_CASE("a batch inserts thousands in one statement and notifies once per queue") {
    schema_with_jobs db;
    boost::asio::io_context io;
    std::vector<std::string> payloads;
    keel::pg::listener listen(io.get_executor(), {.conninfo = db.conninfo, .channels = {"keel_jobs"}},
                              [&](const keel::pg::listener_event& e) {
                                if (e.what == keel::pg::listener_event::kind::notification) {
                                  payloads.push_back(e.message.payload);
                                }
                              });
    listen.start();
    io.run_for(300ms);
    std::vector<jobs::new_job> batch;
    for (int i = 0; i < 5000; ++i) {
      batch.push_back(
          {.kind = "k", .args = "{\"i\":" + std::to_string(i) + "}", .queue = i % 2 ? "odd" : "even"});
    }
    auto put = jobs::enqueue_many(db.c, batch);
    REQUIRE(put);
    REQUIRE(put->size() == 5000);
    std::set<std::int64_t> ids;
    for (const auto& e : *put) ids.insert(e.id);
    CHECK(ids.size() == 5000);
    // Ids come back in input order.
    auto args_of_first = jobs::get_job(db.c, (*put)[17].id).value().args;
    CHECK(boost::json::parse(args_of_first).at("i") == 17);
    io.run_for(500ms);
    std::sort(payloads.begin(), payloads.end());
    CHECK(payloads == std::vector<std::string>{"even", "odd"});
    listen.stop();
  }

  TEST_CASE("a batch stores every field whether a column is the same for all jobs or differs") {
    schema_with_jobs db;
    const auto later = keel::timestamp(std::chrono::floor<std::chrono::microseconds>(
        std::chrono::system_clock::now() + std::chrono::hours(1)));
    auto dep = jobs::enqueue(db.c, {.kind = "dep"}).value().id;
    // Identical jobs: no column varies.
    const jobs::new_job same{.kind = "same",
                             .args = R"({"x": 1})",
                             .queue = "q1",
                             .priority = 3,
                             .run_at = later,
                             .max_attempts = 4,
                             .tags = {"t"}};
    std::vector<jobs::new_job> identical(3, same);
    auto put = jobs::enqueue_many(db.c, identical).value();
    REQUIRE(put.size() == 3);
    for (const auto& e : put) {
      auto j = jobs::get_job(db.c, e.id).value();
      CHECK(j.kind == "same");
      CHECK(j.queue == "q1");
      CHECK(j.priority == 3);
      CHECK(j.run_at == later);
      CHECK(j.max_attempts == 4);
      CHECK(j.tags == std::vector<std::string>{"t"});
      CHECK(j.state == jobs::job_state::scheduled);
      CHECK(boost::json::parse(j.args) == boost::json::parse(R"({"x": 1})"));
    }
    // Every column differs between the two jobs.
    std::vector<jobs::new_job> mixed = {
        {.kind = "a", .args = R"({"i": 1})", .queue = "q1", .priority = 1, .max_attempts = 2, .tags = {}},
        {.kind = "b",
         .args = R"({"i": 2})",
         .queue = "q2",
         .priority = 2,
         .run_at = later,
         .max_attempts = 3,
         .tags = {"x", "y"},
         .unique_key = "k",
         .unique_in = jobs::unique_states::all,
         .depends_on = {dep}}};
    put = jobs::enqueue_many(db.c, mixed).value();
    auto a = jobs::get_job(db.c, put[0].id).value();
    auto b = jobs::get_job(db.c, put[1].id).value();
    CHECK((a.kind == "a" && a.queue == "q1" && a.priority == 1 && a.max_attempts == 2 && a.tags.empty()));
    CHECK(a.state == jobs::job_state::available);
    CHECK(!a.unique_key.has_value());
    CHECK((b.kind == "b" && b.queue == "q2" && b.priority == 2 && b.max_attempts == 3 && b.run_at == later));
    CHECK(b.tags == std::vector<std::string>{"x", "y"});
    CHECK(b.unique_key == "k");
    CHECK(b.depends_on == std::vector<std::int64_t>{dep});
    CHECK(b.state == jobs::job_state::pending);
    CHECK(boost::json::parse(b.args) == boost::json::parse(R"({"i": 2})"));
  }

  TEST_CASE("unique keys hold in the chosen states, also under concurrent enqueue") {
    schema_with_jobs db;
    auto first = jobs::enqueue(db.c, {.kind = "sync", .unique_key = "user:1"}).value();
    auto again = jobs::enqueue(db.c, {.kind = "sync", .unique_key = "user:1"}).value();
    CHECK_FALSE(first.duplicate);
    CHECK(again.duplicate);
    CHECK(again.id == first.id);
    // Finished jobs leave the default scope (unfinished), so the key is free again.
    REQUIRE(
        db.c.query("UPDATE keel_jobs SET state = 'completed', finished_at = now() WHERE id = $1", first.id));
    auto third = jobs::enqueue(db.c, {.kind = "sync", .unique_key = "user:1"}).value();
    CHECK_FALSE(third.duplicate);
    // With scope `all` a completed job still holds its key.
    auto once =
        jobs::enqueue(db.c, {.kind = "once", .unique_key = "k", .unique_in = jobs::unique_states::all})
            .value();
    REQUIRE(
        db.c.query("UPDATE keel_jobs SET state = 'completed', finished_at = now() WHERE id = $1", once.id));
    CHECK(jobs::enqueue(db.c, {.kind = "once", .unique_key = "k", .unique_in = jobs::unique_states::all})
              ->duplicate);

    // Four connections race to enqueue the same 200 keys, in batches with duplicates inside.
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    std::string first_failure;  // written by the thread whose failure is the first
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        auto c = db.connect();
        for (int round = 0; round < 10; ++round) {
          std::vector<jobs::new_job> batch;
          for (int k = 0; k < 200; ++k) {
            batch.push_back(
                {.kind = "race", .unique_key = "race:" + std::to_string((k * (t + 1) + round) % 200)});
          }
          if (auto r = jobs::enqueue_many(c, batch); !r) {
            if (++failures == 1) first_failure = r.error().message() + ": " + c.last_error().to_string();
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK_MESSAGE(failures == 0, first_failure);
    CHECK(count(db.c, "SELECT count(*) FROM keel_jobs WHERE kind = 'race'") == 200);
    CHECK(count(db.c, "SELECT count(DISTINCT unique_key) FROM keel_jobs WHERE kind = 'race'") == 200);
  }

  TEST_CASE("a worker runs every job once and completes it") {
    schema_with_jobs db;
    std::vector<jobs::new_job> batch;
    for (int i = 0; i < 300; ++i)
      batch.push_back({.kind = "add", .args = "{\"n\":" + std::to_string(i) + "}"});
    REQUIRE(jobs::enqueue_many(db.c, batch));
    std::atomic<std::int64_t> sum{0}, runs{0};
    auto options = fast_options(db.conninfo);
    SUBCASE("with the start check (the default)") {
      CHECK(options.check_before_start);
    }
    SUBCASE("without the start check") {
      options.check_before_start = false;
    }
    jobs::worker w(options);
    w.handle("add", [&](const jobs::job_context& ctx) {
      sum += ctx.args->at("n").as_int64();
      ++runs;
      return jobs::job_result::done();
    });
    REQUIRE(w.start());
    CHECK(eventually(
        [&] { return count(db.c, "SELECT count(*) FROM keel_jobs WHERE state = 'completed'") == 300; }));
    CHECK(runs == 300);
    CHECK(sum == 299 * 300 / 2);
    // A job enqueued now is picked up through NOTIFY.
    auto late = jobs::enqueue(db.c, {.kind = "add", .args = R"({"n": 1000})"}).value();
    CHECK(eventually([&] { return state_of(db.c, late.id) == "completed"; }));
    w.stop();
    CHECK(w.stats().completed == 301);
  }

  TEST_CASE(
      "wait_for_job: woken by the worker's notification when the job finishes; a timeout returns it as it "
      "is") {
    schema_with_jobs db;
    std::atomic<bool> release{false};
    jobs::worker w(fast_options(db.conninfo));
    w.handle("slow", [&](const jobs::job_context&) {
      while (!release.load()) std::this_thread::yield();  // held until the test lets it finish
      return jobs::job_result::done();
    });
    auto job = jobs::enqueue(db.c, {.kind = "slow"}).value();
    REQUIRE(w.start());
    // Not finished within the timeout: the job comes back as it is.
    auto early = jobs::wait_for_job(db.c, job.id, 20ms).value();
    CHECK(!jobs::is_finished(early.state));

    // The worker notifies when it records a finished job.
    auto watcher = db.connect();
    REQUIRE(watcher.execute("LISTEN keel_jobs_finished"));
    release = true;
    auto done = jobs::wait_for_job(db.c, job.id, 20s).value();
    CHECK(done.state == jobs::job_state::completed);
    CHECK(watcher.wait_for_notifications(20s).value() >= 1);
    w.stop();

    // Cancelled before it ran (scheduled for later): that ends the wait too.
    auto later =
        jobs::enqueue(db.c,
                      {.kind = "slow",
                       .run_at = keel::timestamp(std::chrono::system_clock::now() + std::chrono::hours(1))})
            .value();
    std::thread canceller([&] {
      auto other = db.connect();
      REQUIRE(jobs::cancel_job(other, later.id));
    });
    CHECK(jobs::wait_for_job(db.c, later.id, 20s).value().state == jobs::job_state::cancelled);
    canceller.join();
    CHECK(watcher.wait_for_notifications(20s).value() >= 1);

    CHECK(jobs::wait_for_job(db.c, 999'999, 20ms).error() == jobs::errc::job_not_found);
    REQUIRE(db.c.execute("BEGIN"));
    CHECK(jobs::wait_for_job(db.c, job.id, 20ms).error() == jobs::errc::invalid_state);
    REQUIRE(db.c.execute("ROLLBACK"));
  }

  TEST_CASE("a worker runs exactly `concurrency` handlers at once on its pool") {
    schema_with_jobs db;
    std::vector<jobs::new_job> batch(12, jobs::new_job{.kind = "wide"});
    REQUIRE(jobs::enqueue_many(db.c, batch));
    auto options = fast_options(db.conninfo);  // concurrency 4
    std::atomic<int> now_running{0}, most{0};
    jobs::worker w(options);
    w.handle("wide", [&](const jobs::job_context&) {
      const int n = ++now_running;
      int seen = most.load();
      while (n > seen && !most.compare_exchange_weak(seen, n)) {
      }
      // Hold the slot until four run together (or a while passed), so the peak is observable.
      const auto until = std::chrono::steady_clock::now() + 2s;
      while (most.load() < 4 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
      std::this_thread::sleep_for(5ms);
      --now_running;
      return jobs::job_result::done();
    });
    REQUIRE(w.start());
    CHECK(eventually(
        [&] { return count(db.c, "SELECT count(*) FROM keel_jobs WHERE state = 'completed'") == 12; }));
    CHECK(most == 4);
    w.stop();
  }

  TEST_CASE("retries follow the kind's backoff on a manual clock, then discard with every error kept") {
    schema_with_jobs db;
    // Fetching compares run_at with the worker's clock; start it just after the enqueue.
    keel::manual_clock clock(
        std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now()) + 1s);
    auto id = jobs::enqueue(db.c, {.kind = "flaky", .max_attempts = 3}).value().id;
    auto options = fast_options(db.conninfo);
    options.clock = &clock;
    jobs::worker w(options);
    std::atomic<int> runs{0};
    w.handle("flaky",
             [&](const jobs::job_context& ctx) {
               ++runs;
               return jobs::job_result::fail("boom " + std::to_string(ctx.attempt));
             },
             {.initial_backoff = 10s, .max_backoff = 1h, .jitter = 0.0});
    REQUIRE(w.start());
    REQUIRE(eventually([&] { return state_of(db.c, id) == "retryable"; }));
    auto job = jobs::get_job(db.c, id).value();
    // First retry 10 s after the failure, on the manual clock (microsecond precision).
    CHECK(std::chrono::abs(job.run_at - (clock.now() + 10s)) < 1ms);
    await_fetch_rounds(w);
    CHECK(runs == 1);  // not before its time
    clock.advance(10s);
    w.wake();
    REQUIRE(eventually([&] { return runs == 2 && state_of(db.c, id) == "retryable"; }));
    job = jobs::get_job(db.c, id).value();
    CHECK(std::chrono::abs(job.run_at - (clock.now() + 20s)) < 1ms);
    clock.advance(20s);
    w.wake();
    REQUIRE(eventually([&] { return state_of(db.c, id) == "discarded"; }));
    job = jobs::get_job(db.c, id).value();
    CHECK(job.attempt == 3);
    REQUIRE(job.errors.size() == 3);
    CHECK(job.errors[0].error == "boom 1");
    CHECK(job.errors[2].error == "boom 3");
    CHECK(job.errors[2].attempt == 3);

    // A dead letter can be retried by hand: one more attempt.
    REQUIRE(jobs::retry_job(db.c, id));
    REQUIRE(eventually([&] { return runs == 4 && state_of(db.c, id) == "discarded"; }));
    CHECK(jobs::get_job(db.c, id)->attempt == 4);
    w.stop();
  }

  TEST_CASE("bad args and unknown kinds are discarded with the reason; other jobs are unaffected") {
    schema_with_jobs db;
    struct point {
      std::int64_t x;
    };
    auto bad_shape = jobs::enqueue(db.c, {.kind = "typed", .args = R"({"x": "not a number"})"}).value().id;
    auto good = jobs::enqueue(db.c, {.kind = "typed", .args = R"({"x": 5})"}).value().id;
    auto unknown = jobs::enqueue(db.c, {.kind = "nobody-handles-this"}).value().id;
    std::atomic<std::int64_t> seen{0};
    jobs::worker w(fast_options(db.conninfo));
    w.handle("typed", [&](const jobs::job_context& ctx) {
      seen += boost::json::value_to<std::int64_t>(ctx.args->at("x"));  // throws on a string
      return jobs::job_result::done();
    });
    REQUIRE(w.start());
    REQUIRE(eventually([&] { return state_of(db.c, good) == "completed"; }));
    REQUIRE(eventually(
        [&] { return state_of(db.c, bad_shape) == "discarded" && state_of(db.c, unknown) == "discarded"; }));
    CHECK(seen == 5);
    auto bad = jobs::get_job(db.c, bad_shape).value();
    REQUIRE(bad.errors.size() == 1);
    CHECK(bad.errors[0].error.find("bad args for kind 'typed'") != std::string::npos);
    CHECK(bad.attempt == 1);  // not retried: it cannot succeed
    auto lost = jobs::get_job(db.c, unknown).value();
    REQUIRE(lost.errors.size() == 1);
    CHECK(lost.errors[0].error.find("no handler for kind 'nobody-handles-this'") != std::string::npos);
    w.stop();
  }

  TEST_CASE("cancel stops a running handler; timeouts cancel and retry") {
    schema_with_jobs db;
    std::atomic<bool> started{false};
    jobs::worker w(fast_options(db.conninfo));
    w.handle("long", [&](const jobs::job_context& ctx) {
      started = true;
      while (!ctx.cancelled()) std::this_thread::sleep_for(5ms);
      return jobs::job_result::fail("stopped");
    });
    w.handle("slow",
             [&](const jobs::job_context& ctx) {
               while (!ctx.cancelled()) std::this_thread::sleep_for(5ms);
               return jobs::job_result::fail("gave up");
             },
             {.initial_backoff = 1h, .timeout = 200ms});
    // Not running yet: cancelled at once.
    auto later = jobs::enqueue(
                     db.c, {.kind = "long", .run_at = keel::timestamp(std::chrono::system_clock::now() + 1h)})
                     .value()
                     .id;
    REQUIRE(jobs::cancel_job(db.c, later));
    CHECK(state_of(db.c, later) == "cancelled");
    CHECK(jobs::cancel_job(db.c, later).error() == jobs::errc::invalid_state);
    CHECK(jobs::cancel_job(db.c, 999999).error() == jobs::errc::job_not_found);

    REQUIRE(w.start());
    auto id = jobs::enqueue(db.c, {.kind = "long"}).value().id;
    REQUIRE(eventually([&] { return started.load(); }));
    REQUIRE(jobs::cancel_job(db.c, id));
    REQUIRE(eventually([&] { return state_of(db.c, id) == "cancelled"; }, 5s));
    CHECK(jobs::get_job(db.c, id)->errors.back().error == "cancelled: stopped");

    auto slow = jobs::enqueue(db.c, {.kind = "slow"}).value().id;
    REQUIRE(eventually([&] { return state_of(db.c, slow) == "retryable"; }, 5s));
    CHECK(jobs::get_job(db.c, slow)->errors.back().error == "timed out after 200 ms: gave up");
    w.stop();
  }

  TEST_CASE("a prefetched job cancelled before a handler is free for it never starts") {
    // Deterministic, not a race: the control thread, which would bring the cancellation to the
    // worker, is held in an acknowledgement blocked on a row lock this test holds, and the only
    // handler frees up after cancel_job returned. The worker must still refuse to start the job.
    schema_with_jobs db;
    auto row_locks = db.connect();
    std::optional<keel::pg::transaction> holding;
    std::mutex gate_mutex;
    std::condition_variable gate_cv;
    bool gate_open = false;
    std::atomic<bool> target_ran{false};
    auto options = fast_options(db.conninfo);
    options.concurrency = 1;
    options.prefetch = 4;
    options.lease = 60s;
    options.heartbeat_interval = 1h;
    options.maintenance = false;
    options.worker_id = "cancel-window";  // its session names fit Postgres's 63 bytes
    jobs::worker w(options);
    w.handle("lock_own_row", [&](const jobs::job_context& ctx) {
      // The ack of this job then waits for `holding`, and the control thread with it.
      std::lock_guard lock(gate_mutex);
      holding.emplace(keel::pg::transaction::begin(row_locks).value());
      REQUIRE(row_locks.query("SELECT 1 FROM keel_jobs WHERE id = $1 FOR UPDATE", ctx.id));
      return jobs::job_result::done();
    });
    w.handle("gated", [&](const jobs::job_context&) {
      std::unique_lock lock(gate_mutex);
      gate_cv.wait(lock, [&] { return gate_open; });
      return jobs::job_result::done();
    });
    w.handle("target", [&](const jobs::job_context&) {
      target_ran = true;
      return jobs::job_result::done();
    });
    // However the test ends, the worker can stop: the gate opens and the row lock goes first.
    struct at_exit {
      std::function<void()> run;
      ~at_exit() { run(); }
    } release_all{[&] {
      std::lock_guard lock(gate_mutex);
      gate_open = true;
      gate_cv.notify_all();
      holding.reset();
    }};
    const auto enqueued =
        jobs::enqueue_many(db.c, std::vector<jobs::new_job>{{.kind = "lock_own_row", .priority = 0},
                                                            {.kind = "gated", .priority = 1},
                                                            {.kind = "target", .priority = 2}})
            .value();
    const auto locker = enqueued[0].id, gated = enqueued[1].id, target = enqueued[2].id;
    REQUIRE(w.start());
    // The target is prefetched behind the gated job, and the control thread waits for the lock.
    REQUIRE(eventually([&] {
      return db.c.query(
                     "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                     "AND wait_event_type = 'Lock'",
                     "keel-jobs-control " + w.id())
                 .value()
                 .value<std::int64_t>()
                 .value() == 1;
    }));
    REQUIRE(state_of(db.c, target) == "running");
    REQUIRE(jobs::cancel_job(db.c, target));
    {
      std::lock_guard lock(gate_mutex);
      gate_open = true;
    }
    gate_cv.notify_all();
    // The handler is free: it either starts the target or the worker refuses it as cancelled.
    REQUIRE(eventually([&] { return target_ran.load() || w.stats().cancelled == 1; }));
    CHECK_FALSE(target_ran.load());
    {
      std::lock_guard lock(gate_mutex);
      REQUIRE(holding->commit());
    }
    REQUIRE(eventually([&] { return state_of(db.c, target) == "cancelled"; }, 5s));
    const auto info = jobs::get_job(db.c, target).value();
    CHECK(info.attempt == 0);
    CHECK(info.errors.back().error == "cancelled before it started");
    REQUIRE(eventually([&] { return state_of(db.c, gated) == "completed"; }, 5s));
    CHECK(state_of(db.c, locker) == "completed");
    CHECK_FALSE(target_ran.load());
    w.stop();
  }

  TEST_CASE("an expired lease is rescued by the leader, and a late ack cannot overwrite the rescue") {
    schema_with_jobs db;
    // A job a dead worker held: running, lease long gone.
    auto id = jobs::enqueue(db.c, {.kind = "work"}).value().id;
    REQUIRE(
        db.c.query("UPDATE keel_jobs SET state = 'running', attempt = 1, worker_id = 'dead', "
                   "lease_expires_at = now() - interval '1 minute' WHERE id = $1",
                   id));
    std::atomic<int> runs{0};
    jobs::worker w(fast_options(db.conninfo));
    w.handle("work", [&](const jobs::job_context&) {
      ++runs;
      return jobs::job_result::done();
    });
    REQUIRE(w.start());
    REQUIRE(eventually([&] { return state_of(db.c, id) == "completed"; }));
    auto job = jobs::get_job(db.c, id).value();
    CHECK(job.attempt == 2);
    REQUIRE(job.errors.size() == 1);
    CHECK(job.errors[0].error.find("lease expired: worker dead") != std::string::npos);
    CHECK(w.stats().rescued == 1);
    CHECK(w.stats().leader);
    w.stop();
  }

  TEST_CASE("a worker whose lease expired mid-run has its late completion refused") {
    schema_with_jobs db;
    auto id = jobs::enqueue(db.c, {.kind = "work"}).value().id;
    // The stalled worker never renews its lease (a heartbeat once an hour, a lease of 300 ms) and
    // holds one job at most. Its attempt 1 completes only once the leader rescued the job and
    // runs attempt 2; attempt 2 completes only once attempt 1's completion was refused.
    auto stalled_options = fast_options(db.conninfo);
    stalled_options.queues = {{.name = "default", .max_running = 1}};
    stalled_options.lease = 300ms;
    stalled_options.heartbeat_interval = 1h;
    stalled_options.maintenance = false;
    stalled_options.worker_id = "stalled";
    jobs::worker stalled(stalled_options);
    std::atomic<bool> first_saw_second{false}, second_saw_refusal{false};
    stalled.handle("work", [&](const jobs::job_context& ctx) {
      auto c = db.connect();
      first_saw_second = eventually([&] {
        return c.query("SELECT state = 'running' AND attempt = 2 FROM keel_jobs WHERE id = $1", ctx.id)
            .value()
            .value<bool>()
            .value();
      });
      return jobs::job_result::done();  // too late: attempt 1 no longer holds the job
    });
    jobs::worker leader(fast_options(db.conninfo));
    leader.handle("work", [&](const jobs::job_context&) {
      second_saw_refusal = eventually([&] { return stalled.stats().acks_lost == 1; });
      return jobs::job_result::done();
    });
    REQUIRE(stalled.start());
    REQUIRE(eventually(
        [&] { return count(db.c, "SELECT count(*) FROM keel_jobs WHERE worker_id = 'stalled'") == 1; }));
    REQUIRE(leader.start());
    REQUIRE(eventually([&] { return state_of(db.c, id) == "completed"; }, 30s));
    CHECK(first_saw_second);
    CHECK(second_saw_refusal);
    CHECK(stalled.stats().acks_lost == 1);
    CHECK(stalled.stats().completed == 1);  // its handler did complete; the table did not take it
    CHECK(leader.stats().rescued == 1);
    auto job = jobs::get_job(db.c, id).value();
    CHECK(job.attempt == 2);
    CHECK(job.worker_id == leader.id());
    REQUIRE(job.errors.size() == 1);
    CHECK(job.errors[0].attempt == 1);
    CHECK(job.errors[0].error.find("lease expired: worker stalled") != std::string::npos);
    stalled.stop();
    leader.stop();
  }

  TEST_CASE("paused queues are not fetched until resumed") {
    schema_with_jobs db;
    REQUIRE(jobs::pause_queue(db.c, "default"));
    auto id = jobs::enqueue(db.c, {.kind = "p"}).value().id;
    jobs::worker w(fast_options(db.conninfo));
    w.handle("p", [](const jobs::job_context&) { return jobs::job_result::done(); });
    REQUIRE(w.start());
    await_fetch_rounds(w);
    CHECK(state_of(db.c, id) == "available");
    CHECK(w.stats().fetched == 0);
    auto summary = jobs::queue_summaries(db.c).value();
    REQUIRE(summary.size() == 1);
    CHECK(summary[0].paused);
    CHECK(summary[0].count(jobs::job_state::available) == 1);
    REQUIRE(jobs::resume_queue(db.c, "default"));
    CHECK(eventually([&] { return state_of(db.c, id) == "completed"; }));
    w.stop();
  }

  TEST_CASE("queue summaries of 3,000 queues are right and take one pass") {
    schema_with_jobs db;
    const auto many = many_queues::enqueue(db.c);
    const auto t0 = std::chrono::steady_clock::now();
    auto summaries = jobs::queue_summaries(db.c).value();
    const auto took = std::chrono::steady_clock::now() - t0;
    MESSAGE("queue_summaries of " << many.queues.size() << " queues: "
                                  << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                                  << " ms");
    // A correlated subquery per queue took seconds here; one aggregate pass takes milliseconds.
    CHECK(took < 1s);
    REQUIRE(summaries.size() == many.queues.size() + 1);  // and "idle", which only has a pause record
    for (const auto& s : summaries) {
      if (s.queue == "idle") {
        CHECK(s.paused);
        CHECK(std::all_of(std::begin(s.counts), std::end(s.counts), [](std::int64_t n) { return n == 0; }));
        continue;
      }
      const auto& want = many.queues.at(s.queue);
      CHECK_MESSAGE(std::equal(std::begin(s.counts), std::end(s.counts), want.counts.begin()), s.queue);
      CHECK_MESSAGE(s.paused == (s.queue == "q0001"), s.queue);
      CHECK_MESSAGE(s.max_running == (s.queue == "q0002" ? std::optional<std::int32_t>(3) : std::nullopt),
                    s.queue);
      CHECK_MESSAGE(s.completed_last_minute == want.counts[static_cast<int>(jobs::job_state::completed)],
                    s.queue);
      CHECK_MESSAGE(s.failed_last_minute == want.counts[static_cast<int>(jobs::job_state::retryable)],
                    s.queue);
    }
  }

  TEST_CASE("the depth gauge names the N deepest of 3,000 queues and sums the rest under other") {
    schema_with_jobs db;
    auto many = many_queues::enqueue(db.c);
    keel::metrics::registry registry;
    jobs::metrics_observer metrics(registry, {.max_depth_queues = 10});
    auto check_depth = [&] {
      std::vector<std::pair<std::string, many_queues::expected>> ranked(many.queues.begin(),
                                                                        many.queues.end());
      std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
        if (a.second.unfinished() != b.second.unfinished())
          return a.second.unfinished() > b.second.unfinished();
        if (a.second.total() != b.second.total()) return a.second.total() > b.second.total();
        return a.first < b.first;
      });
      const auto text = registry.expose();
      std::set<std::string> want_labels{"other"};
      std::array<std::int64_t, 8> other{};
      for (std::size_t i = 0; i < ranked.size(); ++i) {
        const auto& queue = ranked[i].first;
        const auto& want = ranked[i].second;
        if (i >= 10) {
          for (std::size_t k = 0; k < 8; ++k) other[k] += want.counts[k];
          continue;
        }
        want_labels.insert(queue);
        for (int k = 0; k < 8; ++k) {
          const auto state = std::string(jobs::to_string(static_cast<jobs::job_state>(k)));
          CHECK_MESSAGE(sample(text, "keel_jobs_depth{queue=\"" + queue + "\",state=\"" + state + "\"}") ==
                            static_cast<double>(want.counts[static_cast<std::size_t>(k)]),
                        queue << " " << state);
        }
      }
      CHECK(depth_queues(text) == want_labels);  // at most N + 1 queue labels
      for (int k = 0; k < 8; ++k) {
        const auto state = std::string(jobs::to_string(static_cast<jobs::job_state>(k)));
        CHECK_MESSAGE(sample(text, "keel_jobs_depth{queue=\"other\",state=\"" + state + "\"}") ==
                          static_cast<double>(other[static_cast<std::size_t>(k)]),
                      state);
      }
    };
    REQUIRE(metrics.refresh_depth(db.c));
    check_depth();
    // A queue that becomes the deepest is named; the one it pushes out is no longer exposed.
    std::vector<jobs::new_job> burst(20, jobs::new_job{.kind = "k", .queue = "q2998"});
    REQUIRE(jobs::enqueue_many(db.c, burst));
    many.queues["q2998"].counts[static_cast<int>(jobs::job_state::available)] += 20;
    REQUIRE(metrics.refresh_depth(db.c));
    check_depth();
    CHECK(depth_queues(registry.expose()).contains("q2998"));
  }

  TEST_CASE("the metrics observer counts a known workload, and the depth gauge reads the table") {
    schema_with_jobs db;
    keel::metrics::registry registry;
    auto metrics = std::make_shared<jobs::metrics_observer>(registry);
    const jobs::enqueue_options report{.observer = metrics.get()};
    std::vector<jobs::new_job> work(3, jobs::new_job{.kind = "ok", .queue = "alpha"});
    work.push_back({.kind = "flaky", .queue = "alpha", .max_attempts = 2});  // fails, then is discarded
    work.push_back({.kind = "bad", .queue = "alpha"});                       // discarded at once
    REQUIRE(jobs::enqueue_many(db.c, work, report));
    // Jobs no worker takes: four available and one scheduled in "beta".
    std::vector<jobs::new_job> waiting(4, jobs::new_job{.kind = "ok", .queue = "beta"});
    waiting.push_back(
        {.kind = "ok", .queue = "beta", .run_at = keel::timestamp(std::chrono::system_clock::now() + 1h)});
    REQUIRE(jobs::enqueue_many(db.c, waiting, report));
    auto options = fast_options(db.conninfo);
    options.queues = {{.name = "alpha"}};
    options.observer = metrics;
    jobs::worker w(options);
    w.handle("ok", [](const jobs::job_context&) { return jobs::job_result::done(); });
    w.handle("flaky", [](const jobs::job_context&) { return jobs::job_result::fail("not today"); },
             {.initial_backoff = 0ms, .jitter = 0.0});
    w.handle("bad", [](const jobs::job_context&) { return jobs::job_result::discard("bad input"); });
    REQUIRE(w.start());
    REQUIRE(eventually([&] {
      return count(db.c, "SELECT count(*) FROM keel_jobs WHERE queue = 'alpha' AND state = 'completed'") ==
                 3 &&
             count(db.c, "SELECT count(*) FROM keel_jobs WHERE queue = 'alpha' AND state = 'discarded'") == 2;
    }));
    w.stop();  // every finished run has been reported
    REQUIRE(metrics->refresh_depth(db.c));
    const auto text = registry.expose();
    CHECK(sample(text, R"(keel_jobs_enqueued_total{queue="alpha",kind="ok"})") == 3);
    CHECK(sample(text, R"(keel_jobs_enqueued_total{queue="alpha",kind="flaky"})") == 1);
    CHECK(sample(text, R"(keel_jobs_enqueued_total{queue="alpha",kind="bad"})") == 1);
    CHECK(sample(text, R"(keel_jobs_enqueued_total{queue="beta",kind="ok"})") == 5);
    CHECK(sample(text, R"(keel_jobs_started_total{queue="alpha",kind="ok"})") == 3);
    CHECK(sample(text, R"(keel_jobs_started_total{queue="alpha",kind="flaky"})") == 2);
    CHECK(sample(text, R"(keel_jobs_started_total{queue="alpha",kind="bad"})") == 1);
    CHECK(sample(text, R"(keel_jobs_finished_total{queue="alpha",kind="ok",outcome="completed"})") == 3);
    CHECK(sample(text, R"(keel_jobs_finished_total{queue="alpha",kind="flaky",outcome="failed"})") == 1);
    CHECK(sample(text, R"(keel_jobs_finished_total{queue="alpha",kind="flaky",outcome="discarded"})") == 1);
    CHECK(sample(text, R"(keel_jobs_finished_total{queue="alpha",kind="bad",outcome="discarded"})") == 1);
    CHECK(sample(text, R"(keel_jobs_run_seconds_count{queue="alpha",kind="ok"})") == 3);
    CHECK(sample(text, R"(keel_jobs_run_seconds_count{queue="alpha",kind="flaky"})") == 2);
    CHECK(sample(text, R"(keel_jobs_queue_wait_seconds_count{queue="alpha",kind="ok"})") == 3);
    CHECK(sample(text, R"(keel_jobs_queue_wait_seconds_count{queue="alpha",kind="bad"})") == 1);
    CHECK(sample(text, R"(keel_jobs_queue_wait_seconds_sum{queue="alpha",kind="ok"})") >= 0);
    CHECK(sample(text, R"(keel_jobs_depth{queue="alpha",state="completed"})") == 3);
    CHECK(sample(text, R"(keel_jobs_depth{queue="alpha",state="discarded"})") == 2);
    CHECK(sample(text, R"(keel_jobs_depth{queue="alpha",state="available"})") == 0);
    CHECK(sample(text, R"(keel_jobs_depth{queue="beta",state="available"})") == 4);
    CHECK(sample(text, R"(keel_jobs_depth{queue="beta",state="scheduled"})") == 1);
    CHECK(sample(text, R"(keel_jobs_depth{queue="beta",state="running"})") == 0);
    CHECK(depth_queues(text) == std::set<std::string>{"alpha", "beta"});  // fewer than N: no "other"
  }

  TEST_CASE("per-queue limits bound how many of a queue's jobs run at once") {
    schema_with_jobs db;
    std::vector<jobs::new_job> batch(20, jobs::new_job{.kind = "q", .queue = "narrow"});
    REQUIRE(jobs::enqueue_many(db.c, batch));
    auto options = fast_options(db.conninfo);
    options.queues = {{.name = "narrow", .max_running = 2}};
    options.concurrency = 6;
    std::atomic<int> now_running{0}, most{0};
    jobs::worker w(options);
    w.handle("q", [&](const jobs::job_context&) {
      const int n = ++now_running;
      int seen = most.load();
      while (n > seen && !most.compare_exchange_weak(seen, n)) {
      }
      std::this_thread::sleep_for(20ms);
      --now_running;
      return jobs::job_result::done();
    });
    REQUIRE(w.start());
    CHECK(eventually(
        [&] { return count(db.c, "SELECT count(*) FROM keel_jobs WHERE state = 'completed'") == 20; }));
    CHECK(most <= 2);
    w.stop();
  }

  TEST_CASE("a queue's limit in Postgres bounds its running jobs over all workers") {
    schema_with_jobs db;
    CHECK(jobs::set_queue_limit(db.c, "narrow", -1).error() == jobs::errc::invalid_job);
    REQUIRE(jobs::set_queue_limit(db.c, "narrow", 3));
    std::vector<jobs::new_job> batch(60, jobs::new_job{.kind = "q", .queue = "narrow"});
    REQUIRE(jobs::enqueue_many(db.c, batch));
    auto summaries = jobs::queue_summaries(db.c).value();
    REQUIRE(summaries.size() == 1);
    CHECK(summaries[0].max_running == 3);
    // Two workers, each with its own connections and room for 4 at once (and a prefetch of 4).
    std::atomic<int> now_running{0}, most{0};
    std::mutex m;
    std::set<std::string> workers_that_ran;
    auto options = fast_options(db.conninfo);
    options.queues = {{.name = "narrow"}};
    options.prefetch = 4;
    auto handler_of = [&](std::string name) {
      return [&, name](const jobs::job_context&) {
        const int n = ++now_running;
        int seen = most.load();
        while (n > seen && !most.compare_exchange_weak(seen, n)) {
        }
        std::this_thread::sleep_for(15ms);
        --now_running;
        std::lock_guard lock(m);
        workers_that_ran.insert(name);
        return jobs::job_result::done();
      };
    };
    jobs::worker first(options);
    jobs::worker second(options);
    first.handle("q", handler_of("first"));
    second.handle("q", handler_of("second"));
    REQUIRE(first.start());
    REQUIRE(second.start());
    CHECK(eventually(
        [&] { return count(db.c, "SELECT count(*) FROM keel_jobs WHERE state = 'completed'") == 60; }));
    CHECK(most <= 3);
    CHECK(most >= 2);  // the limit is not a lock on the whole queue
    {
      std::lock_guard lock(m);
      CHECK(workers_that_ran == std::set<std::string>{"first", "second"});
    }
    // A limit of 0 holds the queue; removing the limit lets it run again.
    REQUIRE(jobs::set_queue_limit(db.c, "narrow", 0));
    auto held = jobs::enqueue(db.c, {.kind = "q", .queue = "narrow"}).value().id;
    await_fetch_rounds(first);
    await_fetch_rounds(second);
    CHECK(state_of(db.c, held) == "available");
    REQUIRE(jobs::set_queue_limit(db.c, "narrow", std::nullopt));
    CHECK(eventually([&] { return state_of(db.c, held) == "completed"; }));
    first.stop();
    second.stop();
  }

  TEST_CASE("a job with dependencies starts only after all of them completed") {
    schema_with_jobs db;
    auto a = jobs::enqueue(db.c, {.kind = "step", .args = R"({"name": "a"})"}).value().id;
    auto b = jobs::enqueue(db.c, {.kind = "step", .args = R"({"name": "b"})", .priority = 5}).value().id;
    auto c =
        jobs::enqueue(db.c, {.kind = "step", .args = R"({"name": "c"})", .depends_on = {a, b}}).value().id;
    CHECK(state_of(db.c, c) == "pending");
    std::mutex m;
    std::vector<std::string> order;
    jobs::worker w(fast_options(db.conninfo));
    w.handle("step", [&](const jobs::job_context& ctx) {
      std::this_thread::sleep_for(50ms);
      std::lock_guard lock(m);
      order.emplace_back(ctx.args->at("name").as_string());
      return jobs::job_result::done();
    });
    REQUIRE(w.start());
    REQUIRE(eventually([&] { return state_of(db.c, c) == "completed"; }));
    {
      // Not held past this block: a handler may still take it, and stop() waits for handlers.
      std::lock_guard lock(m);
      REQUIRE(order.size() == 3);
      CHECK(order[2] == "c");
    }
    // Depending on jobs that already completed: runnable at once.
    auto d = jobs::enqueue(db.c, {.kind = "step", .args = R"({"name": "d"})", .depends_on = {a}}).value().id;
    CHECK(state_of(db.c, d) != "pending");
    w.stop();
  }

  TEST_CASE("dependents of a discarded or cancelled job are cancelled with the reason, recursively") {
    schema_with_jobs db;
    auto last_error = [&](std::int64_t id) {
      auto j = jobs::get_job(db.c, id).value();
      return j.errors.empty() ? std::string() : j.errors.back().error;
    };
    // a <- b <- c: discarding a settles b, and b's cancellation settles c.
    auto a = jobs::enqueue(db.c, {.kind = "step"}).value().id;
    auto b = jobs::enqueue(db.c, {.kind = "step", .depends_on = {a}}).value().id;
    auto c = jobs::enqueue(db.c, {.kind = "step", .depends_on = {b}}).value().id;
    auto other = jobs::enqueue(db.c, {.kind = "step"}).value().id;
    auto both = jobs::enqueue(db.c, {.kind = "step", .depends_on = {other, a}}).value().id;
    REQUIRE(jobs::discard_job(db.c, a, "bad input"));
    CHECK(state_of(db.c, b) == "cancelled");
    CHECK(state_of(db.c, c) == "cancelled");
    CHECK(state_of(db.c, both) == "cancelled");
    CHECK(state_of(db.c, other) == "available");
    CHECK(last_error(b) == "dependency " + std::to_string(a) + " was discarded, so this job cannot start; " +
                               "retrying job " + std::to_string(a) + " brings it back");
    CHECK(last_error(c).starts_with("dependency " + std::to_string(b) + " was cancelled"));
    // A dependent cannot be retried while its dependency failed: retry the dependency.
    CHECK(jobs::retry_job(db.c, b).error() == jobs::errc::dependency_failed);
    // A job enqueued on a dependency that already failed is cancelled at once.
    auto late = jobs::enqueue(db.c, {.kind = "step", .depends_on = {a}}).value().id;
    CHECK(state_of(db.c, late) == "cancelled");
    CHECK(last_error(late).starts_with("dependency " + std::to_string(a) + " was discarded"));

    // Retrying the dependency brings its dependents back to pending, recursively; a job
    // cancelled by hand stays cancelled.
    auto by_hand = jobs::enqueue(db.c, {.kind = "step", .depends_on = {other}}).value().id;
    REQUIRE(jobs::cancel_job(db.c, by_hand));
    REQUIRE(jobs::retry_job(db.c, a));
    CHECK(state_of(db.c, a) == "available");
    CHECK(state_of(db.c, b) == "pending");
    CHECK(state_of(db.c, c) == "pending");
    CHECK(state_of(db.c, both) == "pending");
    CHECK(state_of(db.c, late) == "pending");
    CHECK(state_of(db.c, by_hand) == "cancelled");

    // The same when a worker discards the dependency after its last attempt, and then all of it
    // runs once the dependency is retried and succeeds.
    std::atomic<bool> healthy{false};
    jobs::worker w(fast_options(db.conninfo));
    w.handle("step", [](const jobs::job_context&) { return jobs::job_result::done(); });
    w.handle("flaky", [&](const jobs::job_context&) {
      return healthy ? jobs::job_result::done() : jobs::job_result::fail("not yet");
    });
    auto f = jobs::enqueue(db.c, {.kind = "flaky", .max_attempts = 1}).value().id;
    auto g = jobs::enqueue(db.c, {.kind = "step", .depends_on = {f}}).value().id;
    auto h = jobs::enqueue(db.c, {.kind = "step", .depends_on = {g}}).value().id;
    REQUIRE(w.start());
    REQUIRE(eventually([&] { return state_of(db.c, h) == "cancelled"; }));
    CHECK(state_of(db.c, f) == "discarded");
    CHECK(state_of(db.c, g) == "cancelled");
    CHECK(
        eventually([&] { return state_of(db.c, c) == "completed" && state_of(db.c, both) == "completed"; }));
    CHECK(state_of(db.c, late) == "completed");
    healthy = true;
    REQUIRE(jobs::retry_job(db.c, f));
    CHECK(eventually([&] { return state_of(db.c, h) == "completed"; }));
    CHECK(state_of(db.c, g) == "completed");
    w.stop();
    CHECK(count(db.c, "SELECT count(*) FROM keel_jobs WHERE state = 'pending'") == 0);
  }

  TEST_CASE("a long chain of dependents is settled and revived without nesting triggers") {
    schema_with_jobs db;
    // 500 levels: one trigger call per level would pass Postgres's max_stack_depth.
    std::vector<std::int64_t> chain{jobs::enqueue(db.c, {.kind = "step"}).value().id};
    for (int i = 0; i < 500; ++i)
      chain.push_back(jobs::enqueue(db.c, {.kind = "step", .depends_on = {chain.back()}}).value().id);
    const std::string ids = [&] {
      std::string list;
      for (const auto id : chain) list += (list.empty() ? "" : ",") + std::to_string(id);
      return list;
    }();
    const auto in_state = [&](const char* state) {
      return count(db.c,
                   "SELECT count(*) FROM keel_jobs WHERE id IN (" + ids + ") AND state = '" + state + "'");
    };
    REQUIRE(jobs::discard_job(db.c, chain.front(), "bad input"));
    CHECK(in_state("cancelled") == 500);
    REQUIRE(jobs::retry_job(db.c, chain.front()));
    CHECK(in_state("pending") == 500);
    CHECK(in_state("available") == 1);
  }

  TEST_CASE("a cancelled dependent whose unique key was taken meanwhile is not revived") {
    schema_with_jobs db;
    auto a = jobs::enqueue(db.c, {.kind = "step"}).value().id;
    auto keyed =
        jobs::enqueue(db.c, {.kind = "step", .unique_key = "report-42", .depends_on = {a}}).value().id;
    auto plain = jobs::enqueue(db.c, {.kind = "step", .depends_on = {a}}).value().id;
    REQUIRE(jobs::discard_job(db.c, a, "bad input"));
    REQUIRE(state_of(db.c, keyed) == "cancelled");
    // With the first one cancelled, a new job may take the key.
    auto replacement = jobs::enqueue(db.c, {.kind = "step", .unique_key = "report-42"}).value();
    REQUIRE_FALSE(replacement.duplicate);
    REQUIRE(jobs::retry_job(db.c, a));
    CHECK(state_of(db.c, plain) == "pending");
    CHECK(state_of(db.c, keyed) == "cancelled");
    CHECK(state_of(db.c, replacement.id) == "available");
  }

  TEST_CASE("a dependency id that no job has is refused, and nothing of the batch is enqueued") {
    schema_with_jobs db;
    auto a = jobs::enqueue(db.c, {.kind = "step"}).value().id;
    std::vector<jobs::new_job> batch = {
        {.kind = "step"}, {.kind = "step", .depends_on = {a}}, {.kind = "step", .depends_on = {a, a + 1000}}};
    CHECK(jobs::enqueue_many(db.c, batch).error() == jobs::errc::unknown_dependency);
    CHECK(jobs::enqueue(db.c, {.kind = "step", .depends_on = {-1}}).error() ==
          jobs::errc::unknown_dependency);
    CHECK(count(db.c, "SELECT count(*) FROM keel_jobs") == 1);
    CHECK(jobs::make_error_code(jobs::errc::unknown_dependency).message().find("nothing of the batch") !=
          std::string::npos);
    batch.pop_back();
    CHECK(jobs::enqueue_many(db.c, batch));
    CHECK(count(db.c, "SELECT count(*) FROM keel_jobs") == 3);
  }

  TEST_CASE("graceful shutdown lets short jobs finish and hands long ones back") {
    schema_with_jobs db;
    auto options = fast_options(db.conninfo);
    options.concurrency = 2;
    options.shutdown_timeout = 300ms;
    jobs::worker w(options);
    std::atomic<int> started{0};
    w.handle("short", [&](const jobs::job_context&) {
      ++started;
      std::this_thread::sleep_for(100ms);
      return jobs::job_result::done();
    });
    w.handle("stubborn", [&](const jobs::job_context& ctx) {
      ++started;
      while (!ctx.cancelled()) std::this_thread::sleep_for(5ms);
      return jobs::job_result::fail("interrupted");
    });
    auto s = jobs::enqueue(db.c, {.kind = "short"}).value().id;
    auto l = jobs::enqueue(db.c, {.kind = "stubborn", .priority = 1}).value().id;
    REQUIRE(w.start());
    REQUIRE(eventually([&] { return started == 2; }));
    w.stop();
    CHECK(state_of(db.c, s) == "completed");
    auto job = jobs::get_job(db.c, l).value();
    CHECK(job.state == jobs::job_state::retryable);
    CHECK(job.errors.back().error == "the worker shut down before the job finished");
    CHECK(count(db.c, "SELECT count(*) FROM keel_jobs WHERE state = 'running'") == 0);
  }

  TEST_CASE("the leader prunes finished jobs after their retention") {
    schema_with_jobs db;
    auto old_done = jobs::enqueue(db.c, {.kind = "x"}).value().id;
    auto old_dead = jobs::enqueue(db.c, {.kind = "x"}).value().id;
    auto fresh = jobs::enqueue(db.c, {.kind = "x"}).value().id;
    REQUIRE(db.c.query(
        "UPDATE keel_jobs SET state = 'completed', finished_at = now() - interval '2 hours' WHERE id = $1",
        old_done));
    REQUIRE(db.c.query(
        "UPDATE keel_jobs SET state = 'discarded', finished_at = now() - interval '2 hours' WHERE id = $1",
        old_dead));
    REQUIRE(db.c.query("UPDATE keel_jobs SET state = 'completed', finished_at = now() WHERE id = $1", fresh));
    auto options = fast_options(db.conninfo);
    options.keep_completed = 1h;
    options.keep_discarded = 3h;
    jobs::worker w(options);
    w.handle("x", [](const jobs::job_context&) { return jobs::job_result::done(); });
    REQUIRE(w.start());
    CHECK(eventually([&] { return !jobs::get_job(db.c, old_done); }));
    CHECK(jobs::get_job(db.c, old_dead));
    CHECK(jobs::get_job(db.c, fresh));
    w.stop();
  }

  TEST_CASE("cron periodic jobs are enqueued once in each matching minute (manual clock)") {
    schema_with_jobs db;
    using namespace std::chrono;
    // An even minute, 5 s in; the expression fires every second minute. Ahead of the real time,
    // which enqueue gives the jobs as run_at, so the worker's clock finds them due.
    const auto base = floor<hours>(system_clock::now()) + hours(1) + minutes(2) + seconds(5);
    keel::manual_clock clock(time_point_cast<nanoseconds>(base));
    auto options = fast_options(db.conninfo);
    options.clock = &clock;
    options.periodic = {{.name = "report", .cron = "*/2 * * * *", .job = {.kind = "report"}}};
    {
      auto bad = options;
      bad.periodic[0].cron = "*/2 * * *";
      jobs::worker w(bad);
      w.handle("report", [](const jobs::job_context&) { return jobs::job_result::done(); });
      CHECK(w.start().error() == jobs::errc::invalid_schedule);
    }
    jobs::worker w(options);
    std::atomic<int> ran{0};
    w.handle("report", [&](const jobs::job_context&) {
      ++ran;
      return jobs::job_result::done();
    });
    REQUIRE(w.start());
    auto reports = [&] { return count(db.c, "SELECT count(*) FROM keel_jobs WHERE kind = 'report'"); };
    REQUIRE(eventually([&] { return reports() == 1; }));
    CHECK(eventually([&] { return ran == 1; }));  // the slot's job fired
    clock.advance(30s);                           // same minute
    await_maintenance_rounds(w);
    CHECK(reports() == 1);
    clock.advance(60s);  // an odd minute: no slot
    await_maintenance_rounds(w);
    CHECK(reports() == 1);
    clock.advance(60s);  // the next even minute
    CHECK(eventually([&] { return reports() == 2; }));
    CHECK(eventually([&] { return ran == 2; }));
    w.stop();
  }

  TEST_CASE(
      "slots missed while no worker led are skipped, caught up or run once, per schedule (manual clock)") {
    schema_with_jobs db;
    using namespace std::chrono;
    // Minute 10 of an hour, 5 s in.
    const auto base_minute = floor<hours>(system_clock::now()) - hours(2) + minutes(10);
    keel::manual_clock clock(time_point_cast<nanoseconds>(base_minute + seconds(5)));
    auto options = fast_options(db.conninfo);
    options.clock = &clock;
    options.queues = {{.name = "work"}};  // the periodic jobs wait in "ticks", where nothing runs them
    auto seen = std::make_shared<counting_observer>();
    options.observer = seen;
    const jobs::new_job tick{.kind = "tick", .queue = "ticks"};
    options.periodic = {
        {.name = "skip", .every = 1min, .job = tick},
        {.name = "catch",
         .every = 1min,
         .job = tick,
         .missed = jobs::missed_slots::catch_up,
         .catch_up_limit = 3},
        {.name = "once", .every = 1min, .job = tick, .missed = jobs::missed_slots::run_once},
        {.name = "cron",
         .cron = "*/2 * * * *",
         .job = tick,
         .missed = jobs::missed_slots::catch_up,
         .catch_up_limit = 3},
    };
    // The slots enqueued for `name`, in minutes after the base minute.
    auto slots_of = [&](const std::string& name) {
      std::vector<std::int64_t> out;
      const auto base_ms = duration_cast<milliseconds>(base_minute.time_since_epoch()).count();
      auto keys = db.c.query("SELECT unique_key FROM keel_jobs WHERE unique_key LIKE $1 ORDER BY id",
                             "periodic:" + name + ":%")
                      .value();
      for (const auto row : keys) {
        const auto key = row.get<std::string>(0).value();
        out.push_back((std::stoll(key.substr(key.rfind(':') + 1)) - base_ms) / 60'000);
      }
      return out;
    };
    using slots = std::vector<std::int64_t>;
    auto run_worker_until = [&](const std::map<std::string, slots>& expected) {
      jobs::worker w(options);
      w.handle("noop", [](const jobs::job_context&) { return jobs::job_result::done(); });
      REQUIRE(w.start());
      auto all_there = [&] {
        for (const auto& [name, want] : expected) {
          if (slots_of(name) != want) return false;
        }
        return true;
      };
      CHECK(eventually(all_there));
      await_maintenance_rounds(w);  // more rounds add nothing
      for (const auto& entry : expected) CHECK_MESSAGE(slots_of(entry.first) == entry.second, entry.first);
      w.stop();
    };
    run_worker_until({{"skip", {0}}, {"catch", {0}}, {"once", {0}}, {"cron", {0}}});
    // Every process is down for 9 minutes; the next leader starts in minute 19 (odd: no cron slot).
    clock.advance(9min);
    run_worker_until(
        {{"skip", {0, 9}}, {"catch", {0, 6, 7, 8, 9}}, {"once", {0, 8, 9}}, {"cron", {0, 4, 6, 8}}});
    clock.advance(1min);
    run_worker_until({{"skip", {0, 9, 10}},
                      {"catch", {0, 6, 7, 8, 9, 10}},
                      {"once", {0, 8, 9, 10}},
                      {"cron", {0, 4, 6, 8, 10}}});
    // The leader reported each periodic job it enqueued.
    CHECK(seen->of("ticks", "tick") ==
          static_cast<std::size_t>(count(db.c, "SELECT count(*) FROM keel_jobs WHERE kind = 'tick'")));
  }

  TEST_CASE("enqueue reports what it inserted to the caller's observer") {
    schema_with_jobs db;
    counting_observer seen;
    const jobs::enqueue_options report{.observer = &seen};
    REQUIRE(jobs::enqueue(db.c, {.kind = "email"}, report));
    std::vector<jobs::new_job> batch = {{.kind = "email"},
                                        {.kind = "sms", .queue = "urgent"},
                                        {.kind = "email"},
                                        {.kind = "sms", .queue = "urgent", .unique_key = "u1"},
                                        {.kind = "sms", .queue = "urgent", .unique_key = "u1"}};
    REQUIRE(jobs::enqueue_many(db.c, batch, report));
    CHECK(seen.of("default", "email") == 3);
    CHECK(seen.of("urgent", "sms") == 2);  // the duplicate of key u1 was not inserted
    CHECK(seen.calls == 3);                // one report per (queue, kind) per call
    // A refused batch reports nothing, and neither does a call without the option.
    std::vector<jobs::new_job> bad = {{.kind = "email"}, {.kind = "email", .args = "{"}};
    CHECK_FALSE(jobs::enqueue_many(db.c, bad, report));
    REQUIRE(jobs::enqueue(db.c, {.kind = "email"}));
    CHECK(seen.of("default", "email") == 3);
    CHECK(count(db.c, "SELECT count(*) FROM keel_jobs") == 6);
  }

  TEST_CASE("a cancelled job is never started again: neither from a prefetch nor once handed back at stop") {
    // Worker processes with one handler and four prefetched jobs behind it; the handlers ignore
    // cancellation and wait for their job's gate (tests/jobs/test_worker.cpp, mode "cancel").
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(jobs::migrate(c));
    REQUIRE(
        c.execute("CREATE TABLE test_runs (job_id int8 NOT NULL, attempt int4 NOT NULL, pid int4 NOT NULL)"));
    REQUIRE(c.execute("CREATE TABLE test_gates (job_id int8 NOT NULL)"));
    REQUIRE(c.execute("CREATE TABLE test_saw_cancel (job_id int8 NOT NULL)"));
    auto enqueue_five = [&] {
      std::vector<jobs::new_job> batch(5, jobs::new_job{.kind = "gated", .queue = "cancel"});
      std::vector<std::int64_t> ids;
      for (const auto& e : jobs::enqueue_many(c, batch).value()) ids.push_back(e.id);
      return ids;
    };
    auto number = [&](std::string_view sql, const std::vector<std::int64_t>& ids) {
      return c.query(sql, ids).value().value<std::int64_t>().value();
    };
    auto runs = [&](const std::vector<std::int64_t>& ids) {
      return number("SELECT count(*) FROM test_runs WHERE job_id = ANY($1)", ids);
    };
    auto in_state = [&](const std::vector<std::int64_t>& ids, const char* state) {
      return c.query("SELECT count(*) FROM keel_jobs WHERE id = ANY($1) AND state = $2", ids, state)
          .value()
          .value<std::int64_t>()
          .value();
    };
    auto started_one = [&](const std::vector<std::int64_t>& ids) {
      return number("SELECT job_id FROM test_runs WHERE job_id = ANY($1) LIMIT 1", ids);
    };
    auto a = std::make_unique<child>("cancel", schema.conninfo);
    const std::string a_worker = "test-worker-" + std::to_string(a->pid());
    auto held_by_a = [&](const std::vector<std::int64_t>& ids) {
      return c
          .query("SELECT count(*) FROM keel_jobs WHERE id = ANY($1) AND state = 'running' AND worker_id = $2",
                 ids, a_worker)
          .value()
          .value<std::int64_t>()
          .value();
    };

    // 1. Cancelled while prefetched: A learns of it and never starts them, even when its handler
    //    frees up.
    const auto first = enqueue_five();
    REQUIRE(eventually([&] { return runs(first) == 1 && held_by_a(first) == 5; }));
    const auto running_first = started_one(first);
    for (const auto id : first) REQUIRE(jobs::cancel_job(c, id));
    // The running handler saw cancelled() turn true: A has heard of every cancellation.
    REQUIRE(eventually(
        [&] { return number("SELECT count(*) FROM test_saw_cancel WHERE job_id = ANY($1)", first) == 1; }));
    REQUIRE(c.query("INSERT INTO test_gates SELECT unnest($1::int8[])", first));
    REQUIRE(eventually([&] { return in_state(first, "running") == 0; }));
    CHECK(runs(first) == 1);
    CHECK(state_of(c, running_first) == "completed");  // it ignored the cancellation and completed
    CHECK(in_state(first, "cancelled") == 4);
    auto cancelled_unstarted = [&](const std::vector<std::int64_t>& ids) {
      return number(
          "SELECT count(*) FROM keel_jobs WHERE id = ANY($1) AND attempt = 0 "
          "AND errors->-1->>'error' = 'cancelled before it started'",
          ids);
    };
    CHECK(cancelled_unstarted(first) == 4);

    // 2. Cancelled while A stops: the cancellations commit after stop() handed the prefetched
    //    jobs back (its acknowledgement waits for the cancelling transaction's row locks), and
    //    process B, started afterwards, must not run them.
    const auto second = enqueue_five();
    REQUIRE(eventually([&] { return runs(second) == 1 && held_by_a(second) == 5; }));
    const auto running_second = started_one(second);
    {
      auto watcher = schema.connect();
      auto tx = keel::pg::transaction::begin(c).value();
      for (const auto id : second) REQUIRE(jobs::cancel_job(c, id));
      a->kill(SIGTERM);
      // Past its shutdown timeout stop() cancels the running handler, after handing back the
      // prefetched jobs.
      REQUIRE(eventually([&] {
        return watcher.query("SELECT count(*) FROM test_saw_cancel WHERE job_id = $1", running_second)
                   .value()
                   .value<std::int64_t>()
                   .value() == 1;
      }));
      REQUIRE(tx.commit());
    }
    REQUIRE(c.query("INSERT INTO test_gates SELECT unnest($1::int8[])", second));
    CHECK(WIFEXITED(a->wait()));
    auto b = std::make_unique<child>("cancel", schema.conninfo);
    // A job behind the handed-back ones in B's fetch order: once it ran, B has fetched them too if
    // they were runnable.
    auto sentinel = jobs::enqueue(c, {.kind = "record", .queue = "cancel", .priority = 1}).value().id;
    REQUIRE(eventually([&] { return state_of(c, sentinel) == "completed"; }));
    CHECK(runs(second) == 1);
    CHECK(in_state(second, "cancelled") == 5);
    CHECK(state_of(c, running_second) == "cancelled");
    CHECK(cancelled_unstarted(second) == 4);
    CHECK(c.query("SELECT count(*) FROM test_runs WHERE pid = $1 AND job_id <> $2",
                  static_cast<std::int32_t>(b->pid()), sentinel)
              .value()
              .value<std::int64_t>()
              .value() == 0);
    b->kill(SIGTERM);
    CHECK(WIFEXITED(b->wait()));
  }

  TEST_CASE("the leader process is SIGKILLed: another takes over within the lease; each slot once") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(jobs::migrate(c));
    REQUIRE(c.execute("CREATE TABLE test_ticks (job_id int8, slot text, pid int4)"));
    // Three processes with a periodic job every 500 ms, a lease of 3 s (tests/jobs/test_worker.cpp).
    constexpr auto lease = 3000ms;
    std::vector<std::unique_ptr<child>> workers;
    for (int i = 0; i < 3; ++i) workers.push_back(std::make_unique<child>("periodic", schema.conninfo));
    // Who leads: the session holding this schema's leader lock (pg_locks), its application name
    // (pg_stat_activity: "keel-jobs-leader <worker id>"), and the pid in the worker id.
    auto leader_pid = [&]() -> pid_t {
      auto found = c.query(R"sql(
SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1802137199
  AND l.objid = hashtext(current_schema())::oid AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))sql");
      if (!found || found->empty()) return -1;
      const auto name = (*found)[0].get<std::string>(0).value();
      constexpr std::string_view prefix = "keel-jobs-leader test-worker-";
      if (!name.starts_with(prefix)) return -1;
      return static_cast<pid_t>(std::stol(name.substr(prefix.size())));
    };
    auto slots = [&] {
      return count(c, "SELECT count(DISTINCT unique_key) FROM keel_jobs WHERE kind = 'tick'");
    };
    REQUIRE(eventually([&] { return leader_pid() > 0 && slots() >= 3; }));
    const auto killed_pid = leader_pid();
    auto leader =
        std::find_if(workers.begin(), workers.end(), [&](const auto& w) { return w->pid() == killed_pid; });
    REQUIRE(leader != workers.end());
    const auto slots_before = slots();
    (*leader)->kill(SIGKILL);
    const auto killed_at = std::chrono::steady_clock::now();
    (*leader)->wait();
    pid_t next_pid = -1;
    REQUIRE(eventually([&] {
      next_pid = leader_pid();
      return next_pid > 0 && next_pid != killed_pid;
    }));
    const auto took_over = std::chrono::steady_clock::now() - killed_at;
    MESSAGE("leader " << killed_pid << " killed; " << next_pid << " took over after "
                      << std::chrono::duration_cast<std::chrono::milliseconds>(took_over).count() << " ms");
    CHECK(took_over < lease);
    CHECK(std::any_of(workers.begin(), workers.end(), [&](const auto& w) { return w->pid() == next_pid; }));
    // The new leader goes on enqueueing slots.
    CHECK(eventually([&] { return slots() >= slots_before + 3; }));
    for (auto& w : workers) {
      if (w->pid() > 0) w->kill(SIGTERM);
    }
    for (auto& w : workers) {
      if (w->pid() > 0) CHECK(WIFEXITED(w->wait()));
    }
    const auto all_slots = slots();
    CHECK(count(c, "SELECT count(*) FROM keel_jobs WHERE kind = 'tick'") == all_slots);  // none twice
    // Each slot's job ran once (a graceful stop may leave the last one or two unrun), except one
    // the killed worker was running: it runs again once its lease expires (at least once).
    CHECK(count(c,
                "SELECT count(*) FROM (SELECT job_id FROM test_ticks GROUP BY job_id HAVING count(*) > 1 "
                "AND NOT bool_or(pid = " +
                    std::to_string(killed_pid) + ")) d") == 0);
    CHECK(count(c, "SELECT count(DISTINCT job_id) FROM test_ticks") >= all_slots - 2);
  }

  TEST_CASE("reliability: 100,000 jobs, two worker processes, one SIGKILLed, Postgres restarted") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(jobs::migrate(c));
    REQUIRE(
        c.execute("CREATE TABLE test_runs (job_id int8 NOT NULL, attempt int4 NOT NULL, pid int4 NOT NULL)"));
    constexpr int total = 100'000;
    for (int start = 0; start < total; start += 10'000) {
      std::vector<jobs::new_job> batch;
      for (int i = start; i < start + 10'000; ++i) {
        batch.push_back(
            {.kind = "record", .args = "{\"i\":" + std::to_string(i) + "}", .queue = "reliability"});
      }
      REQUIRE(jobs::enqueue_many(c, batch));
    }
    auto completed = [&]() -> std::int64_t {
      auto r = c.query("SELECT count(*) FROM keel_jobs WHERE state = 'completed'");
      if (!r) {
        (void)c.reset();
        return -1;
      }
      return r->value<std::int64_t>().value();
    };
    auto a = std::make_unique<child>("work", schema.conninfo);
    auto b = std::make_unique<child>("work", schema.conninfo);
    REQUIRE(eventually([&] { return completed() >= total / 4; }, 120s));
    a->kill(SIGKILL);  // mid-run: it holds leased jobs, some half done
    a->wait();
    // The crashed process is replaced, as a supervisor would; B keeps working meanwhile.
    auto replacement = std::make_unique<child>("work", schema.conninfo);
    REQUIRE(eventually([&] { return completed() >= total / 2; }, 120s));
    if (auto* cluster = keel::test::cluster()) {
      REQUIRE(cluster->restart());  // every connection of every process breaks
      (void)c.reset();
      MESSAGE("Postgres restarted at " << completed() << " completed jobs");
    }
    REQUIRE(eventually([&] { return completed() == total; }, 240s));
    b->kill(SIGTERM);
    replacement->kill(SIGTERM);
    CHECK(WIFEXITED(b->wait()));
    CHECK(WIFEXITED(replacement->wait()));

    // Every job completed; none lost.
    CHECK(count(c, "SELECT count(*) FROM keel_jobs") == total);
    CHECK(count(c, "SELECT count(DISTINCT job_id) FROM test_runs") == total);
    // None completed twice: exactly one run of each job's final attempt, and no attempt ran twice.
    CHECK(count(c,
                "SELECT count(*) FROM test_runs r JOIN keel_jobs j ON j.id = r.job_id AND r.attempt = "
                "j.attempt") == total);
    CHECK(count(c,
                "SELECT count(*) FROM (SELECT 1 FROM test_runs GROUP BY job_id, attempt HAVING count(*) > 1) "
                "d") == 0);
    // A second execution only after the first attempt ended with a recorded error (its lease
    // expired, or its handler failed while Postgres restarted).
    CHECK(count(c, R"sql(SELECT count(*) FROM test_runs r JOIN keel_jobs j ON j.id = r.job_id
                         WHERE r.attempt <> j.attempt AND NOT EXISTS (
                           SELECT 1 FROM jsonb_array_elements(j.errors) e WHERE (e->>'attempt')::int = r.attempt))sql") ==
          0);
    const auto reruns = count(c, "SELECT count(*) - count(DISTINCT job_id) FROM test_runs");
    const auto lease_reruns =
        count(c, R"sql(SELECT count(*) FROM keel_jobs j, jsonb_array_elements(j.errors) e
                                              WHERE e->>'error' LIKE 'lease expired%')sql");
    MESSAGE("executions beyond one per job: " << reruns << " (after an expired lease: " << lease_reruns
                                              << ")");
    // Rescued jobs that were fetched but not yet started ran only once, so reruns can be fewer.
    CHECK(reruns <= count(c, "SELECT count(*) FROM keel_jobs j, jsonb_array_elements(j.errors) e"));
  }
}
