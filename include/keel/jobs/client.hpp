#pragma once
/// @file keel/jobs/client.hpp
/// @brief The job queue's schema, enqueueing inside the caller's transaction, and the
/// administrative calls behind a dashboard (inspect, retry, cancel, discard, pause).
///
/// Every call takes a `keel::pg::connection&`: enqueue on the connection that runs your own
/// transaction and the job exists exactly when that transaction commits.
#include <keel/core/clock.hpp>
#include <keel/jobs/error.hpp>
#include <keel/pg/connection.hpp>
#include <keel/pg/migrations.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::jobs {

/// The life of a job.
enum class job_state {
  pending,    ///< waits for the jobs it depends on to complete
  available,  ///< ready to run now
  scheduled,  ///< ready to run at run_at (enqueued for later)
  running,    ///< held by a worker under a lease
  retryable,  ///< failed; runs again at run_at
  completed,  ///< done (final)
  discarded,  ///< failed for good or refused (dead letter; retry_job revives it)
  cancelled,  ///< cancelled by hand (final; retry_job revives it)
};

/// "available", "running", ...
[[nodiscard]] std::string_view to_string(job_state s) noexcept;
/// The state named `name`, or nullopt.
[[nodiscard]] std::optional<job_state> parse_job_state(std::string_view name) noexcept;

/// States a unique job's key is enforced in: a new job with the same key is not inserted while
/// another one is in one of these states. Combine with `|`.
enum class unique_states : std::uint16_t {
  none = 0,
  pending = 1U << 0U,
  available = 1U << 1U,
  scheduled = 1U << 2U,
  running = 1U << 3U,
  retryable = 1U << 4U,
  completed = 1U << 5U,
  discarded = 1U << 6U,
  cancelled = 1U << 7U,
  /// Not finished yet: at most one such job per key (the usual "deduplicate" meaning).
  unfinished = pending | available | scheduled | running | retryable,
  /// Ever, as long as the job row exists (until pruned): for "once per period" jobs.
  all = unfinished | completed | discarded | cancelled,
};
[[nodiscard]] constexpr unique_states operator|(unique_states a, unique_states b) noexcept {
  return static_cast<unique_states>(static_cast<std::uint16_t>(a) | static_cast<std::uint16_t>(b));
}

/// A job to enqueue. Only `kind` is required.
struct new_job {
  std::string kind;                         ///< which handler runs it
  std::string args = "{}";                  ///< JSON handed to the handler
  std::string queue = "default";            ///< workers fetch by queue
  std::int16_t priority = 0;                ///< lower runs first
  std::optional<timestamp> run_at{};        ///< not before; now when empty
  std::int32_t max_attempts = 25;           ///< attempts before the job is discarded
  std::vector<std::string> tags{};          ///< free-form labels, shown on the dashboard
  std::optional<std::string> unique_key{};  ///< at most one job per key in `unique_in` states
  unique_states unique_in = unique_states::unfinished;
  std::vector<std::int64_t> depends_on{};  ///< ids of jobs that must complete first
};

/// What enqueue did with one job.
struct enqueued {
  std::int64_t id = 0;     ///< the new job, or the existing one holding the same unique key
  bool duplicate = false;  ///< true when a job with the unique key already existed
};

/// Events for metrics, from enqueue calls (enqueue_options) and from workers
/// (worker_options::observer). Called from the calling or worker threads, so keep them cheap
/// (atomic adds). Override what you need; the others do nothing.
class observer {
 public:
  virtual ~observer() = default;
  /// `count` jobs of `kind` were inserted into `queue` by one enqueue call (duplicates of a
  /// unique key are not counted). Reported when the statement succeeded: if the caller's
  /// transaction then rolls back, the jobs never existed but were counted.
  virtual void enqueued(std::string_view queue, std::string_view kind, std::size_t count) {
    (void)queue, (void)kind, (void)count;
  }
  /// A job started, after waiting `queue_wait` since it became runnable.
  virtual void started(std::string_view queue, std::string_view kind, std::chrono::nanoseconds queue_wait) {
    (void)queue, (void)kind, (void)queue_wait;
  }
  /// A run ended after `run_time`, with `outcome`: "completed", "failed", "discarded" or "cancelled".
  virtual void finished(std::string_view queue, std::string_view kind, std::string_view outcome,
                        std::chrono::nanoseconds run_time) {
    (void)queue, (void)kind, (void)outcome, (void)run_time;
  }
};

/// How enqueue reports what it did.
struct enqueue_options {
  jobs::observer* observer = nullptr;  ///< told what was enqueued, per queue and kind; not owned
};

/// The job tables' migrations (component "jobs"), in version order, e.g. to apply them with
/// other tools.
[[nodiscard]] std::span<const pg::migration> migrations() noexcept;
/// Creates or upgrades the job tables: applies migrations() not yet applied. Safe to call from
/// several processes at once.
[[nodiscard]] result<pg::migration_report> migrate(pg::connection& c);

/// Inserts one job (one round trip) and wakes workers of its queue when the surrounding
/// transaction commits. @returns errc::invalid_job, errc::invalid_args, or the pg error.
[[nodiscard]] result<enqueued> enqueue(pg::connection& c, const new_job& job,
                                       const enqueue_options& options = {});

/// Inserts many jobs in one statement (array parameters, thousands per round trip), and sends
/// one notification per queue for the whole batch. Results are in the order of `jobs`.
/// All or nothing: a bad job fails the call before anything is inserted.
[[nodiscard]] result<std::vector<enqueued>> enqueue_many(pg::connection& c, std::span<const new_job> jobs,
                                                         const enqueue_options& options = {});

/// One failed attempt.
struct attempt_error {
  std::int32_t attempt = 0;
  std::string at;  ///< ISO 8601
  std::string error;
};

/// A job as stored.
struct job_info {
  std::int64_t id = 0;
  job_state state = job_state::available;
  std::string queue;
  std::string kind;
  std::string args;
  std::int16_t priority = 0;
  std::int32_t attempt = 0;
  std::int32_t max_attempts = 0;
  timestamp run_at{};
  timestamp created_at{};
  std::optional<timestamp> attempted_at;
  std::optional<timestamp> finished_at;
  std::optional<timestamp> lease_expires_at;
  std::optional<std::string> worker_id;
  std::optional<std::string> unique_key;
  std::vector<std::string> tags;
  std::vector<std::int64_t> depends_on;
  bool cancel_requested = false;
  std::vector<attempt_error> errors;  ///< one per failed attempt, oldest first
};

/// The job `id`, or errc::job_not_found.
[[nodiscard]] result<job_info> get_job(pg::connection& c, std::int64_t id);

/// True for the states a job ends in: completed, discarded, cancelled.
[[nodiscard]] bool is_finished(job_state s) noexcept;

/// Waits until job `id` has finished (completed, discarded or cancelled) or `timeout` passes,
/// woken by the notification a worker sends when it records a finished job — no polling loop
/// in your code. Uses `c` (LISTEN, then UNLISTEN), which must not be in a transaction.
/// @returns the job as it is then (check `is_finished(job.state)`: the timeout may have passed
/// first), errc::job_not_found, errc::invalid_state inside a transaction, or a pg::errc.
[[nodiscard]] result<job_info> wait_for_job(pg::connection& c, std::int64_t id,
                                            std::chrono::milliseconds timeout);

/// Which jobs list_jobs returns.
struct job_filter {
  std::optional<job_state> state{};
  std::optional<std::string> queue{};
  std::optional<std::string> kind{};
  std::int64_t limit = 50;
};
/// Jobs matching `filter`, most recently changed first.
[[nodiscard]] result<std::vector<job_info>> list_jobs(pg::connection& c, const job_filter& filter = {});

/// Runs a discarded, cancelled, completed or retryable job again now (a fresh attempt budget of
/// at least one more attempt). @returns errc::invalid_state for pending, available or running jobs.
[[nodiscard]] result<void> retry_job(pg::connection& c, std::int64_t id);
/// Cancels a job. One that is not running is cancelled at once; a running one is asked to stop
/// (its handler sees job_context::cancelled()) and is cancelled when its handler returns,
/// unless it completed. Once it returned, no worker fetches or starts the job again: a prefetched
/// job whose handler has not started never starts (docs/jobs.md, Guarantees).
/// @returns errc::invalid_state for finished jobs.
[[nodiscard]] result<void> cancel_job(pg::connection& c, std::int64_t id);
/// Moves a job that is not running or finished to discarded, with `reason` as its last error.
[[nodiscard]] result<void> discard_job(pg::connection& c, std::int64_t id,
                                       std::string_view reason = "discarded by hand");

/// Stops workers from starting jobs of `queue` (running ones finish). Takes effect at each
/// worker's next fetch.
/// The longest queue or kind name, in bytes: names travel in Postgres notifications (8000
/// bytes at most), and a bound keeps every call that takes one agreeing on what is valid.
inline constexpr std::size_t max_name_bytes = 255;

/// Pauses or resumes a queue. @returns errc::invalid_name for a name enqueue would refuse.
[[nodiscard]] result<void> pause_queue(pg::connection& c, std::string_view queue);
[[nodiscard]] result<void> resume_queue(pg::connection& c, std::string_view queue);

/// Limits how many of `queue`'s jobs run at once over all workers in all processes (enforced
/// when workers fetch; running jobs are not stopped); nullopt removes the limit.
/// @returns errc::invalid_job for an empty queue name or a negative limit.
[[nodiscard]] result<void> set_queue_limit(pg::connection& c, std::string_view queue,
                                           std::optional<std::int32_t> max_running);

/// A queue's jobs by state, for dashboards and the queue-depth metric.
struct queue_summary {
  std::string queue;
  bool paused = false;
  std::optional<std::int32_t> max_running;  ///< set_queue_limit, over all workers
  std::int64_t counts[8] = {};              ///< indexed by job_state
  std::int64_t completed_last_minute = 0;
  std::int64_t failed_last_minute = 0;  ///< attempts that failed in the last minute
  [[nodiscard]] std::int64_t count(job_state s) const noexcept { return counts[static_cast<int>(s)]; }
};
/// Every queue that has jobs or a pause record.
[[nodiscard]] result<std::vector<queue_summary>> queue_summaries(pg::connection& c);

/// The Postgres NOTIFY channel workers listen on; the payload is a queue name, or "!cancel".
inline constexpr std::string_view notify_channel = "keel_jobs";

}  // namespace keel::jobs
