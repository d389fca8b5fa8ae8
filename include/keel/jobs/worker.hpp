#pragma once
/// @file keel/jobs/worker.hpp
/// @brief A worker: N handlers on a thread pool, fed in batches from Postgres, woken by LISTEN/NOTIFY,
/// completing in batches, holding leases with heartbeats; and, on whichever worker holds the
/// leader lock, the maintenance (rescue expired leases, periodic jobs, pruning).
#include <keel/core/clock.hpp>
#include <keel/jobs/client.hpp>
#include <keel/jobs/cron.hpp>

#include <boost/json/value.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel::jobs {

/// What a handler sees of its job.
class job_context {
 public:
  std::int64_t id = 0;
  std::string_view queue;
  std::string_view kind;
  std::int32_t attempt = 0;  ///< 1 on the first run
  std::int32_t max_attempts = 0;
  const boost::json::value* args = nullptr;  ///< the parsed args (never null inside a handler)
  std::string_view args_text;

  /// True once the job was cancelled, timed out, lost its lease or the worker is shutting
  /// down past its deadline: the handler should stop soon and return.
  [[nodiscard]] bool cancelled() const noexcept { return stop_->load(std::memory_order_acquire); }

  explicit job_context(const std::atomic<bool>* stop) noexcept : stop_(stop) {}

 private:
  const std::atomic<bool>* stop_;
};

/// How a handler's run ended.
class job_result {
 public:
  enum class kind { completed, failed, discard };
  /// Done; the job completes.
  static job_result done() { return {kind::completed, {}}; }
  /// Failed: retried after the kind's backoff, discarded after its last attempt.
  static job_result fail(std::string error) { return {kind::failed, std::move(error)}; }
  /// Will never succeed (bad input): discarded now, with `reason`.
  static job_result discard(std::string reason) { return {kind::discard, std::move(reason)}; }

  [[nodiscard]] kind outcome() const noexcept { return kind_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

 private:
  job_result(kind k, std::string e) : kind_(k), error_(std::move(e)) {}
  kind kind_;
  std::string error_;
};

/// Runs one job. Throwing counts as a failure with the exception's message, except that a
/// Boost.JSON error (args of the wrong shape, e.g. from `value_to`) discards the job.
using handler = std::function<job_result(const job_context&)>;

/// When a failed job runs again: min(max_backoff, initial_backoff * 2^(attempt-1)), then
/// jitter of ±jitter of that, so retries of many jobs spread out.
struct retry_policy {
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{std::chrono::hours(1)};
  double jitter = 0.2;
  /// A run longer than this is cancelled (the handler sees cancelled()) and counted as failed;
  /// zero: no timeout.
  std::chrono::milliseconds timeout{0};
};

/// The delay before attempt `failed_attempt + 1`; `unit_random` in [0, 1) picks the jitter.
[[nodiscard]] std::chrono::milliseconds backoff(const retry_policy& policy, std::int32_t failed_attempt,
                                                double unit_random) noexcept;

/// What the leader does with slots of a periodic job that passed while no worker led (every
/// process was down, or none could reach Postgres).
enum class missed_slots {
  skip,      ///< forget them: only slots from now on run (the default)
  catch_up,  ///< enqueue each missed slot, oldest first, at most `catch_up_limit` (the newest ones)
  run_once,  ///< enqueue one job for the newest missed slot
};

/// A job enqueued once per slot across all workers, by the leader, with a unique key per slot
/// (so a leader change cannot enqueue a slot twice). Slots are multiples of `every` since the
/// Unix epoch, or, when `cron` is set, the minutes it matches (UTC). The last slot enqueued is
/// kept in Postgres, so slots that passed while no worker led are handled per `missed`.
struct periodic_job {
  std::string name;  ///< part of the unique key; keep it stable
  std::chrono::milliseconds every{std::chrono::minutes(1)};
  std::string cron{};  ///< e.g. "*/15 9-17 * * 1-5"; overrides `every` when set
  new_job job;
  missed_slots missed = missed_slots::skip;
  /// At most this many missed slots are enqueued with missed_slots::catch_up (a cron schedule
  /// looks back at most a year).
  std::size_t catch_up_limit = 10;
};

/// A queue a worker takes jobs from.
struct queue_options {
  std::string name = "default";
  /// Jobs of this queue running at once in this worker (at most the worker's concurrency).
  std::size_t max_running = 1'000'000;
};

struct worker_options {
  std::string conninfo;                   ///< Postgres, as a URL or key=value pairs
  std::vector<queue_options> queues{{}};  ///< the default queue unless set
  std::size_t concurrency = 10;           ///< handlers running at once (threads of its pool)
  std::size_t fetch_batch = 500;          ///< at most this many jobs per fetch
  /// Jobs held waiting for a free handler, so handlers never wait for a round trip; they are
  /// leased like running ones (and handed back on stop()). 0: 4 × concurrency.
  std::size_t prefetch = 0;
  std::chrono::milliseconds poll_interval{1000};    ///< fetch this often even without NOTIFY
  std::chrono::milliseconds lease{30'000};          ///< a job is rescued this long after its last heartbeat
  std::chrono::milliseconds heartbeat_interval{0};  ///< 0: lease / 3
  std::chrono::milliseconds shutdown_timeout{10'000};  ///< in-flight jobs get this long on stop()
  /// Confirm in Postgres right before jobs start that they were not cancelled (one statement per
  /// batch of starts), so a job cancelled before its handler starts never starts. false saves
  /// that round trip (no-op handlers run faster, docs/jobs.md), but then a prefetched job
  /// cancelled in the moments before its worker hears of it may still start.
  bool check_before_start = true;
  bool maintenance = true;  ///< take part in the leader election (rescue, periodic jobs, pruning)
  std::chrono::milliseconds maintenance_interval{1000};
  std::chrono::seconds keep_completed{std::chrono::hours(24)};  ///< completed/cancelled rows kept this long
  std::chrono::seconds keep_discarded{std::chrono::hours(24 * 7)};  ///< dead letters kept this long
  std::vector<periodic_job> periodic{};
  std::string worker_id{};             ///< empty: host-pid-random
  const keel::clock* clock = nullptr;  ///< system clock when null
  std::shared_ptr<jobs::observer> observer{};
};

/// Counters since start.
struct worker_stats {
  std::uint64_t fetched = 0;
  std::uint64_t completed = 0;
  std::uint64_t failed = 0;
  std::uint64_t discarded = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t rescued = 0;    ///< expired leases rescued while this worker led
  std::uint64_t acks_lost = 0;  ///< completions refused because the job moved on (rescued, cancelled)
  /// Fetch statements answered (one per queue per round), whatever they took: a test that waits
  /// for this to grow knows a fetch ran after some change, e.g. that a paused queue gave nothing.
  std::uint64_t fetch_rounds = 0;
  std::uint64_t maintenance_rounds = 0;  ///< maintenance rounds completed while leading
  std::size_t running = 0;
  bool leader = false;
};

/// Works jobs. Register handlers, start(), and stop() (or destroy) to shut down gracefully.
class worker {
 public:
  explicit worker(worker_options options);
  /// stop() with the configured shutdown timeout.
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  /// Runs jobs of `kind` with `h`, retried per `policy`. Before start() only.
  worker& handle(std::string kind, handler h, retry_policy policy = {});

  /// Connects, starts the threads and begins fetching. @returns errc::no_queues,
  /// errc::worker_running, or the pg error when Postgres cannot be reached.
  [[nodiscard]] result<void> start();
  /// Graceful shutdown: stops fetching, lets running jobs finish for up to shutdown_timeout,
  /// then cancels them, hands unfinished jobs back to the queue (they run again elsewhere)
  /// and waits for the handler threads. Idempotent.
  void stop();
  /// Makes the worker fetch now (as a NOTIFY would); for tests that move a manual clock.
  void wake();

  [[nodiscard]] worker_stats stats() const;
  [[nodiscard]] const std::string& id() const noexcept;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace keel::jobs
