#pragma once
// worker::impl, shared by worker.cpp (fetching, handlers, acks, heartbeats) and maintenance.cpp
// (the leader: rescue, pruning, periodic jobs); internal to keel::jobs, so Asio may appear here.
#include <keel/core/clock.hpp>
#include <keel/jobs/cron.hpp>
#include <keel/jobs/worker.hpp>
#include <keel/pg/advisory_lock.hpp>
#include <keel/pg/async.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace keel::jobs {

namespace detail {

// A value, or `fallback` when reading it failed.
template <class T, class U>
T or_default(result<T>&& r, U&& fallback) {
  if (r) return std::move(*r);
  return T(std::forward<U>(fallback));
}

inline std::int64_t to_unix_us(timestamp t) noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

// Errors a reconnect may cure, as opposed to a statement Postgres refused.
inline bool is_connection_error(const error_code& ec) {
  return ec == pg::errc::connection_lost || ec == pg::errc::connection_failed || ec == pg::errc::pool_closed;
}

// A kind's handler and retry policy, as worker::handle registered them.
struct registered_kind {
  handler run;
  retry_policy policy;
};

// Where a held job is on its way to a handler: prefetched in `ready`, waiting for the next start
// check, in the statement that checks it, checked (then started, or refused if it was cancelled or
// lost meanwhile).
enum class start_phase { ready, awaiting_check, checking, checked, refused };

// A job this worker holds (fetched, then running), until its ack is sent.
struct held_job {
  std::int64_t id = 0;
  std::int32_t attempt = 0;
  std::int32_t max_attempts = 0;
  std::string queue;
  std::string kind;
  std::string args;
  std::chrono::nanoseconds queue_wait{0};
  std::atomic<bool> stop{false};
  // Guarded by impl::mutex.
  start_phase phase = start_phase::ready;
  bool started = false;
  monotonic_time started_at{};
  std::chrono::milliseconds timeout{0};
  bool timed_out = false;
  bool cancel_requested = false;
  bool lease_lost = false;
  bool released = false;  // handed back at shutdown; its own ack is dropped
};

// A finished (or handed back) run, to be acknowledged in the next batch (ack_sql).
struct ack {
  std::int64_t id;
  std::int32_t attempt;
  std::string state;  // completed, retryable, discarded, cancelled, release
  std::string error;
  std::int64_t run_at_us = 0;
};

// host-pid-random, the worker id unless the options name one.
std::string default_worker_id();

}  // namespace detail

struct worker::impl : std::enable_shared_from_this<worker::impl> {
  using registered_kind = detail::registered_kind;
  using held_job = detail::held_job;
  using ack = detail::ack;

  worker_options options;
  const keel::clock* clock;
  std::unordered_map<std::string, registered_kind> kinds;
  std::vector<std::optional<cron_schedule>> schedules;  // one per options.periodic
  // The leader's view of each periodic job (reset when it becomes leader).
  struct periodic_state {
    bool loaded = false;                   // `recorded` was read from keel_job_periodic
    std::optional<std::int64_t> recorded;  // the last slot enqueued, ms since the epoch
    std::optional<std::int64_t> examined;  // the last slot handled by this leader
  };
  std::vector<periodic_state> periodic_states;
  std::chrono::milliseconds heartbeat_every;

  std::mutex mutex;
  std::condition_variable fetch_cv;    // fetcher: wake, slots freed, stopping
  std::condition_variable control_cv;  // control: acks, cancel check, stopping
  std::condition_variable idle_cv;     // stop(): running jobs finished
  std::condition_variable start_cv;    // handlers: a start check answered
  bool started = false;
  bool stopping_fetch = false;
  bool stopping_handlers = false;
  bool stopping_control = false;
  bool fetch_wanted = true;
  bool check_cancel = false;
  std::deque<std::shared_ptr<held_job>> ready;
  // Jobs taken from `ready` by a handler, for the next start check (one statement for all).
  std::vector<std::shared_ptr<held_job>> awaiting_check;
  bool check_in_flight = false;
  std::optional<pg::connection> start_connection;  // used by whichever handler runs the check
  std::unordered_map<std::int64_t, std::shared_ptr<held_job>> held;
  std::map<std::string, std::size_t, std::less<>> held_per_queue;
  std::vector<ack> acks;
  std::size_t running_handlers = 0;
  std::size_t draining = 0;  // tasks on the pool that run ready jobs (at most concurrency)
  worker_stats counters;

  std::thread fetcher, control, maintainer;
  std::optional<boost::asio::thread_pool> pool;  // runs the handlers, `concurrency` threads
  boost::asio::io_context io;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> io_guard;
  std::thread io_thread;
  std::unique_ptr<pg::listener> listener;
  std::mt19937_64 random{std::random_device{}()};

  explicit impl(worker_options o)
      : options(std::move(o)), clock(options.clock != nullptr ? options.clock : &system_clock::instance()) {
    if (options.worker_id.empty()) options.worker_id = detail::default_worker_id();
    heartbeat_every = options.heartbeat_interval.count() > 0 ? options.heartbeat_interval : options.lease / 3;
    if (options.concurrency == 0) options.concurrency = 1;
    if (options.fetch_batch == 0) options.fetch_batch = 1;
    if (options.prefetch == 0) options.prefetch = 4 * options.concurrency;
  }

  // Jobs held at most: one per handler thread plus the prefetched ones.
  [[nodiscard]] std::size_t capacity() const { return options.concurrency + options.prefetch; }

  // "keel-jobs-leader <worker id>": pg_stat_activity then tells which worker a session belongs
  // to, e.g. the holder of the leader lock. Postgres keeps the first 63 bytes.
  [[nodiscard]] std::string application_name(std::string_view role) const {
    return "keel-jobs-" + std::string(role) + " " + options.worker_id;
  }

  // worker.cpp: connections, the fetcher, the handlers and their start checks, the control
  // thread (acks, heartbeats, timeouts), notifications.
  bool ensure_connected(std::optional<pg::connection>& c, const bool& stop_flag, std::string_view role);
  bool try_connect(std::optional<pg::connection>& c);
  void fetch_loop();
  job_result run_handler(held_job& j, const job_context& ctx, const registered_kind* k);
  void drain();
  void check_starts(std::unique_lock<std::mutex>& lock);
  void drop_unstarted(held_job& j);
  void run(held_job& j, const registered_kind* k);
  void finish(held_job& j, const job_result& outcome, const registered_kind* k,
              std::chrono::nanoseconds run_time);
  bool flush_acks(std::optional<pg::connection>& c, std::vector<ack>& batch);
  void heartbeat(pg::connection& c);
  void check_timeouts();
  void control_loop();
  void on_listener_event(const pg::listener_event& e);

  // maintenance.cpp: the leader election and its rounds.
  void maintain(pg::connection& c, std::optional<pg::advisory_lock>& lead);
  bool maintenance_round(pg::connection& c);
  bool enqueue_periodic(pg::connection& c, timestamp now);
  void leader_loop();
};

}  // namespace keel::jobs
