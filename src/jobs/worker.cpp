// The worker: a fetcher thread, N handlers on an Asio thread pool, a control thread (acks,
// heartbeats, cancellation, timeouts), a LISTEN/NOTIFY listener on Asio, and the leader's
// maintenance thread (maintenance.cpp; its statements and this file's are in worker_sql.hpp). Each thread
// that talks to Postgres has its own connection, so a slow statement on one never holds up the others, and
// each reconnects by itself after a server restart.
#include <keel/core/assert.hpp>
#include <keel/core/backoff.hpp>
#include <keel/core/log.hpp>
#include <keel/jobs/worker.hpp>

#include "worker_impl.hpp"
#include "worker_sql.hpp"

#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <iterator>

#include <unistd.h>

namespace keel::jobs {

std::chrono::milliseconds backoff(const retry_policy& policy, std::int32_t failed_attempt,
                                  double unit_random) noexcept {
  return backoff_delay({.initial = policy.initial_backoff,
                        .max = policy.max_backoff,
                        .multiplier = 2.0,
                        .mode = jitter_mode::proportional,
                        .jitter = policy.jitter},
                       static_cast<std::uint32_t>(std::max(failed_attempt, 1)), unit_random);
}

namespace detail {

std::string default_worker_id() {
  char host[256] = {};
  (void)::gethostname(host, sizeof host - 1);
  std::random_device rd;
  return std::string(host) + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd() % 100000);
}

}  // namespace detail

using namespace detail;
using namespace std::chrono_literals;

// Opens or re-opens a connection, waiting between attempts; false when asked to stop.
bool worker::impl::ensure_connected(std::optional<pg::connection>& c, const bool& stop_flag,
                                    std::string_view role) {
  auto delay = 50ms;
  while (true) {
    if (c && c->is_open()) return true;
    {
      std::unique_lock lock(mutex);
      if (stop_flag) return false;
    }
    if (c) {
      if (c->reset()) return true;
    } else if (auto opened =
                   pg::connection::connect(options.conninfo, {.application_name = application_name(role)})) {
      c.emplace(std::move(*opened));
      return true;
    }
    std::unique_lock lock(mutex);
    control_cv.wait_for(lock, delay, [&] { return stop_flag; });
    delay = std::min(delay * 2, std::chrono::milliseconds(2000));
  }
}

bool worker::impl::try_connect(std::optional<pg::connection>& c) {
  if (c) return c->is_open() || static_cast<bool>(c->reset());
  auto opened = pg::connection::connect(options.conninfo, {.application_name = application_name("control")});
  if (!opened) return false;
  c.emplace(std::move(*opened));
  return true;
}

void worker::impl::fetch_loop() {
  std::optional<pg::connection> c;
  std::size_t queue_turn = 0;
  while (true) {
    std::vector<std::pair<std::string, std::size_t>> plan;  // queue, how many to fetch
    {
      std::unique_lock lock(mutex);
      fetch_cv.wait_for(lock, options.poll_interval, [&] {
        // Fetch in batches: wait until a quarter of the slots are free, unless handlers
        // have nothing left to start.
        const auto free_slots = capacity() - std::min(capacity(), held.size());
        return stopping_fetch ||
               (fetch_wanted && free_slots > 0 && (ready.empty() || free_slots >= capacity() / 4));
      });
      if (stopping_fetch) break;
      fetch_wanted = false;
      std::size_t free = capacity() - std::min(capacity(), held.size());
      for (std::size_t k = 0; k < options.queues.size() && free > 0; ++k) {
        const auto& q = options.queues[(queue_turn + k) % options.queues.size()];
        const auto in_queue = held_per_queue[q.name];
        const auto n =
            std::min({free, q.max_running > in_queue ? q.max_running - in_queue : 0, options.fetch_batch});
        if (n > 0) {
          plan.emplace_back(q.name, n);
          free -= n;
        }
      }
      ++queue_turn;
      if (plan.empty()) {
        // Every queue is at its own limit: wait for one of its jobs to finish.
        fetch_wanted = true;
        fetch_cv.wait_for(lock, options.poll_interval);
        continue;
      }
    }
    if (!ensure_connected(c, stopping_fetch, "fetch")) break;
    bool full = false;
    for (const auto& [queue, n] : plan) {
      const auto now = clock->now();
      const auto lease_until = now + options.lease;
      auto fetched =
          c->query(fetch_sql, queue, now, static_cast<std::int64_t>(n), lease_until, options.worker_id);
      if (!fetched) {
        if (!is_connection_error(fetched.error())) {
          log::warn("keel.jobs: fetch failed", {{"error", c->last_error().to_string()}});
        }
        std::unique_lock lock(mutex);
        fetch_wanted = true;
        fetch_cv.wait_for(lock, 100ms, [&] { return stopping_fetch; });
        break;
      }
      std::vector<std::shared_ptr<held_job>> got;
      for (const auto row : *fetched) {
        auto j = std::make_shared<held_job>();
        j->id = or_default(row.get<std::int64_t>(0), 0);
        j->kind = or_default(row.get<std::string>(1), "");
        j->args = or_default(row.get<pg::jsonb>(2), pg::jsonb{"null"}).text;
        j->attempt = or_default(row.get<std::int32_t>(3), 0);
        j->max_attempts = or_default(row.get<std::int32_t>(4), 1);
        const auto runnable = or_default(row.get<timestamp>(7), now);
        j->queue_wait = std::max(std::chrono::nanoseconds(0), now - runnable);
        j->queue = queue;
        got.push_back(std::move(j));
      }
      if (got.size() == n) full = true;
      std::size_t tasks = 0;
      {
        std::unique_lock lock(mutex);
        counters.fetched += got.size();
        ++counters.fetch_rounds;
        // Enough draining tasks for the new jobs, up to one per handler.
        tasks = std::min(got.size(), options.concurrency - std::min(options.concurrency, draining));
        draining += tasks;
        for (auto& j : got) {
          const bool added = held.emplace(j->id, j).second;
          KEEL_ASSERT(added, "a fetched job is not held already: fetches take only rows no worker runs");
          ++held_per_queue[j->queue];
          ready.push_back(std::move(j));
        }
        KEEL_ASSERT(held.size() <= capacity(), "a worker holds at most concurrency + prefetch jobs");
      }
      for (std::size_t k = 0; k < tasks; ++k) boost::asio::post(*pool, [this] { drain(); });
    }
    if (full) {
      std::unique_lock lock(mutex);
      fetch_wanted = true;  // there is probably more: fetch again as soon as slots free up
    }
  }
}

job_result worker::impl::run_handler(held_job& j, const job_context& ctx, const registered_kind* k) {
  if (k == nullptr) {
    return job_result::discard("no handler for kind '" + j.kind + "' in worker " + options.worker_id +
                               "; every worker of queue '" + j.queue +
                               "' must register it with worker::handle");
  }
  try {
    return k->run(ctx);
  } catch (const boost::system::system_error& e) {
    if (e.code().category() == boost::json::make_error_code(boost::json::error::not_object).category()) {
      return job_result::discard(std::string("bad args for kind '") + j.kind + "': " + e.what());
    }
    return job_result::fail(e.what());
  } catch (const std::exception& e) {
    return job_result::fail(std::string("handler threw: ") + e.what());
  } catch (...) {
    return job_result::fail("handler threw a non-standard exception");
  }
}

// A task on the handler pool: runs ready jobs, first come first served, until none is left.
// At most `concurrency` such tasks exist (`draining`), so a batch of jobs costs one task per
// handler rather than one per job, and no task waits while jobs wait. stop() hands back the
// ready jobs, and the tasks then find nothing and end. Each job is checked in Postgres right
// before it starts (check_starts), so one cancelled before its handler was free never starts.
void worker::impl::drain() {
  std::unique_lock lock(mutex);
  while (true) {
    if (ready.empty()) {
      --draining;
      return;
    }
    auto j = std::move(ready.front());
    ready.pop_front();
    KEEL_ASSERT(!j->started && j->phase == start_phase::ready, "a ready job was neither started nor checked");
    KEEL_ASSERT(held.contains(j->id), "a ready job is held: cancels and lost leases take it out of both");
    if (options.check_before_start) {
      j->phase = start_phase::awaiting_check;
      awaiting_check.push_back(j);
    } else {
      j->phase = start_phase::checked;  // taken as it is: cancellations arrive by heartbeat only
    }
    while (!j->released && (j->phase == start_phase::awaiting_check || j->phase == start_phase::checking)) {
      if (check_in_flight) {
        start_cv.wait(lock);
      } else {
        check_starts(lock);
      }
    }
    if (j->released) continue;  // handed back by stop(), which acked it
    KEEL_ASSERT(j->phase == start_phase::checked, "a job starts only after its start check");
    if (j->lease_lost || j->cancel_requested) {
      drop_unstarted(*j);
      continue;
    }
    const registered_kind* k = nullptr;
    if (auto found = kinds.find(j->kind); found != kinds.end()) k = &found->second;
    j->started = true;
    j->started_at = clock->monotonic();
    j->timeout = k != nullptr ? k->policy.timeout : 0ms;
    ++running_handlers;
    KEEL_ASSERT(running_handlers <= options.concurrency, "at most `concurrency` handlers run at once");
    lock.unlock();
    run(*j, k);
    lock.lock();
  }
}

// Checks every job awaiting its start in one statement (start_check_sql), with `lock` released
// meanwhile: handlers that want a job during the statement queue theirs for the next check, so
// starts are group-committed, one statement per batch rather than per job. Only jobs a handler
// is free for are checked, so none waits for a handler after its check.
void worker::impl::check_starts(std::unique_lock<std::mutex>& lock) {
  KEEL_ASSERT(!check_in_flight, "one start check at a time: it owns start_connection");
  check_in_flight = true;
  std::vector<std::shared_ptr<held_job>> batch;
  batch.swap(awaiting_check);
  std::vector<std::int64_t> ids, attempts;
  for (const auto& j : batch) {
    KEEL_ASSERT(j->phase == start_phase::awaiting_check && !j->started, "a job is checked once per start");
    j->phase = start_phase::checking;
    ids.push_back(j->id);
    attempts.push_back(j->attempt);
  }
  lock.unlock();
  std::optional<std::unordered_map<std::int64_t, bool>> answer;  // id -> cancel requested
  if (ensure_connected(start_connection, stopping_handlers, "start")) {
    if (auto checked = start_connection->query(start_check_sql, ids, attempts, options.worker_id)) {
      answer.emplace();
      for (const auto row : *checked) {
        if (auto fields = row.as<std::int64_t, bool>())
          answer->emplace(std::get<0>(*fields), std::get<1>(*fields));
      }
      KEEL_ASSERT(answer->size() <= ids.size(),
                  "the start check answers only for the jobs it was asked about");
    } else if (!is_connection_error(checked.error())) {
      log::warn("keel.jobs: checking jobs before their start failed; trying again",
                {{"error", start_connection->last_error().to_string()}});
    }
  }
  lock.lock();
  // A failed check is tried again after a pause (ensure_connected paces reconnects).
  if (!answer) start_cv.wait_for(lock, 100ms, [&] { return stopping_handlers; });
  check_in_flight = false;
  for (auto& held_ptr : batch) {
    auto& j = *held_ptr;
    if (j.released) continue;
    if (!answer) {
      // Unanswered (Postgres unreachable): checked again by the next check. Its handler keeps
      // waiting for it, so no other handler can take it meanwhile.
      j.phase = start_phase::awaiting_check;
      awaiting_check.push_back(held_ptr);
      continue;
    }
    j.phase = start_phase::checked;
    if (const auto a = answer->find(j.id); a == answer->end()) {
      j.lease_lost = true;  // rescued or changed by hand meanwhile
    } else if (a->second) {
      j.cancel_requested = true;
    }
  }
  start_cv.notify_all();
}

// Takes a job that never started out of the worker: one whose cancellation was requested is
// handed back, and the ack makes it cancelled ("cancelled before it started"), never available;
// one no longer ours (its lease was lost) is just forgotten.
void worker::impl::drop_unstarted(held_job& j) {
  KEEL_ASSERT(!j.started && !j.released, "only a job the worker still holds, unstarted, is dropped");
  if (!j.lease_lost && j.cancel_requested) {
    acks.push_back({.id = j.id, .attempt = j.attempt, .state = "release", .error = {}, .run_at_us = 0});
    ++counters.cancelled;
  }
  j.phase = start_phase::refused;
  const auto q = held_per_queue.find(j.queue);
  KEEL_ASSERT(q != held_per_queue.end() && q->second > 0, "each held job is counted in its queue");
  if (q != held_per_queue.end() && q->second > 0) --q->second;
  const auto id = j.id;  // `j` may be owned by `held` alone
  held.erase(id);
  fetch_wanted = true;  // a slot was freed
  fetch_cv.notify_one();
  control_cv.notify_one();
}

// Runs a started job's handler and finishes it; called without the mutex.
void worker::impl::run(held_job& j, const registered_kind* k) {
  if (options.observer) options.observer->started(j.queue, j.kind, j.queue_wait);
  const auto t0 = std::chrono::steady_clock::now();

  boost::system::error_code parse_error;
  const boost::json::value args = boost::json::parse(j.args, parse_error);
  job_context ctx(&j.stop);
  ctx.id = j.id;
  ctx.queue = j.queue;
  ctx.kind = j.kind;
  ctx.attempt = j.attempt;
  ctx.max_attempts = j.max_attempts;
  ctx.args = &args;
  ctx.args_text = j.args;
  const job_result outcome = parse_error
                                 ? job_result::discard("args are not valid JSON: " + parse_error.message())
                                 : run_handler(j, ctx, k);
  const auto run_time = std::chrono::steady_clock::now() - t0;
  finish(j, outcome, k, run_time);
}

// Turns a handler's outcome into an ack and frees the slot.
void worker::impl::finish(held_job& j, const job_result& outcome, const registered_kind* k,
                          std::chrono::nanoseconds run_time) {
  ack a{.id = j.id, .attempt = j.attempt, .state = "completed", .error = {}, .run_at_us = 0};
  std::string_view reported = "completed";
  std::unique_lock lock(mutex);
  KEEL_ASSERT(j.started, "only a started job finishes");
  KEEL_ASSERT(running_handlers > 0, "a finishing job holds a handler");
  const bool cancelled = j.cancel_requested && outcome.outcome() != job_result::kind::completed;
  if (cancelled) {
    a.state = "cancelled";
    a.error = outcome.error().empty() ? "cancelled" : "cancelled: " + outcome.error();
    reported = "cancelled";
    ++counters.cancelled;
  } else if (outcome.outcome() == job_result::kind::discard) {
    a.state = "discarded";
    a.error = outcome.error();
    reported = "discarded";
    ++counters.discarded;
  } else if (outcome.outcome() == job_result::kind::failed ||
             (j.timed_out && outcome.outcome() != job_result::kind::completed)) {
    a.error = j.timed_out ? "timed out after " + std::to_string(j.timeout.count()) + " ms" +
                                (outcome.error().empty() ? "" : ": " + outcome.error())
                          : (outcome.error().empty() ? "failed" : outcome.error());
    if (j.attempt >= j.max_attempts) {
      a.state = "discarded";
      reported = "discarded";
      ++counters.discarded;
    } else {
      a.state = "retryable";
      const auto policy = k != nullptr ? k->policy : retry_policy{};
      const double u = std::uniform_real_distribution<double>(0.0, 1.0)(random);
      a.run_at_us = to_unix_us(clock->now() + backoff(policy, j.attempt, u));
      reported = "failed";
      ++counters.failed;
    }
  } else {
    ++counters.completed;
  }
  KEEL_ASSERT(held.contains(j.id), "a started job stays held until it finishes");
  if (!j.released) acks.push_back(std::move(a));
  held.erase(j.id);
  const auto q = held_per_queue.find(j.queue);
  KEEL_ASSERT(q != held_per_queue.end() && q->second > 0, "each held job is counted in its queue");
  if (q != held_per_queue.end() && q->second > 0) --q->second;
  --running_handlers;
  // Wake only the threads that have something to do now: the fetcher once a batch's worth of
  // slots is free (or the handlers ran dry), the control thread for the first ack of a batch.
  const auto free_slots = capacity() - std::min(capacity(), held.size());
  if (fetch_wanted && (ready.empty() || free_slots >= capacity() / 4)) fetch_cv.notify_one();
  if (acks.size() == 1) control_cv.notify_one();
  if (stopping_handlers) idle_cv.notify_all();
  lock.unlock();
  if (options.observer) options.observer->finished(j.queue, j.kind, reported, run_time);
}

// Sends acks; keeps them for the next try when Postgres is unreachable.
bool worker::impl::flush_acks(std::optional<pg::connection>& c, std::vector<ack>& batch) {
  if (batch.empty()) return true;
  std::vector<std::int64_t> ids, attempts, run_at;
  std::vector<std::string> states, errors;
  for (const auto& a : batch) {
    ids.push_back(a.id);
    attempts.push_back(a.attempt);
    states.push_back(a.state);
    errors.push_back(a.error);
    run_at.push_back(a.run_at_us);
  }
  auto done = c->query(ack_sql, ids, attempts, states, errors, run_at, clock->now());
  if (!done) {
    if (is_connection_error(done.error())) return false;
    log::warn("keel.jobs: acknowledging finished jobs failed",
              {{"error", c->last_error().to_string()}, {"jobs", std::to_string(batch.size())}});
    if (batch.size() == 1) {
      // This ack cannot be applied; its job's lease expires and the rescuer takes it over.
      std::unique_lock lock(mutex);
      counters.acks_lost += 1;
      batch.clear();
      return true;
    }
    // One row the database refuses must not hold up the others: acknowledge one at a time.
    std::vector<ack> all;
    all.swap(batch);
    for (auto& a : all) {
      std::vector<ack> one;
      one.push_back(std::move(a));
      if (!flush_acks(c, one))
        batch.insert(batch.end(), std::make_move_iterator(one.begin()), std::make_move_iterator(one.end()));
    }
    return batch.empty();
  }
  KEEL_ASSERT(done->size() <= batch.size(), "an ack changes at most the rows it names");
  std::unique_lock lock(mutex);
  counters.acks_lost += batch.size() - std::min(batch.size(), static_cast<std::size_t>(done->size()));
  batch.clear();
  return true;
}

void worker::impl::heartbeat(pg::connection& c) {
  std::vector<std::int64_t> ids, attempts;
  {
    std::unique_lock lock(mutex);
    for (const auto& [id, j] : held) {
      if (j->released) continue;
      ids.push_back(id);
      attempts.push_back(j->attempt);
    }
  }
  if (ids.empty()) return;
  auto alive = c.query(heartbeat_sql, ids, attempts, clock->now() + options.lease);
  if (!alive) return;
  std::unordered_map<std::int64_t, bool> answer;
  for (const auto row : *alive)
    answer[or_default(row.get<std::int64_t>(0), 0)] = or_default(row.get<bool>(1), false);
  std::unique_lock lock(mutex);
  for (const auto id : ids) {
    auto found = held.find(id);
    if (found == held.end()) continue;  // finished meanwhile
    auto& j = *found->second;
    const auto a = answer.find(id);
    if (a == answer.end()) {
      j.lease_lost = true;  // rescued or changed by hand: the run no longer counts
      j.stop.store(true, std::memory_order_release);
    } else if (a->second) {
      j.cancel_requested = true;
      j.stop.store(true, std::memory_order_release);
    }
    // A prefetched job must not start once it is cancelled or no longer ours: take it out of
    // `ready` now. One a handler took already is dropped by that handler after its start check.
    if (!j.started && j.phase == start_phase::ready && (j.lease_lost || j.cancel_requested)) {
      std::erase_if(ready, [&](const std::shared_ptr<held_job>& r) { return r->id == id; });
      drop_unstarted(j);
    }
  }
}

void worker::impl::check_timeouts() {
  const auto now = clock->monotonic();
  std::unique_lock lock(mutex);
  for (auto& [id, j] : held) {
    if (j->started && j->timeout.count() > 0 && !j->timed_out && now - j->started_at > j->timeout) {
      j->timed_out = true;
      j->stop.store(true, std::memory_order_release);
    }
  }
}

void worker::impl::control_loop() {
  std::optional<pg::connection> c;
  std::vector<ack> batch;
  auto next_heartbeat = std::chrono::steady_clock::now() + heartbeat_every;
  while (true) {
    bool stop_now = false;
    bool cancel_check = false;
    {
      std::unique_lock lock(mutex);
      control_cv.wait_for(lock, 50ms, [&] { return stopping_control || !acks.empty() || check_cancel; });
      for (auto& a : acks) batch.push_back(std::move(a));
      acks.clear();
      stop_now = stopping_control;
      cancel_check = check_cancel;
      check_cancel = false;
    }
    check_timeouts();
    if (!c || !c->is_open()) {
      if (stop_now) {
        // Shutting down: try for a few seconds, then leave the rest to lease expiry.
        for (int i = 0; i < 20 && !try_connect(c); ++i) std::this_thread::sleep_for(250ms);
        if (!(c && c->is_open())) {
          log::warn(
              "keel.jobs: could not acknowledge finished jobs before stopping; their leases expire "
              "and they run again",
              {{"jobs", static_cast<std::int64_t>(batch.size())}});
          return;
        }
      } else if (!ensure_connected(c, stopping_control, "control")) {
        continue;  // stopping: the next round flushes what it can and returns
      }
    }
    if (!flush_acks(c, batch)) {
      if (stop_now && c->is_open()) return;  // a non-connection error: nothing more to do
      continue;
    }
    if (stop_now) return;
    if (cancel_check || std::chrono::steady_clock::now() >= next_heartbeat) {
      heartbeat(*c);
      next_heartbeat = std::chrono::steady_clock::now() + heartbeat_every;
    }
  }
}

void worker::impl::on_listener_event(const pg::listener_event& e) {
  std::unique_lock lock(mutex);
  if (e.what == pg::listener_event::kind::notification) {
    if (e.message.payload == "!cancel") {
      check_cancel = true;
      control_cv.notify_one();
      return;
    }
    for (const auto& q : options.queues) {
      if (q.name == e.message.payload) {
        fetch_wanted = true;
        fetch_cv.notify_one();
        return;
      }
    }
  } else if (e.what == pg::listener_event::kind::reconnected ||
             e.what == pg::listener_event::kind::connected) {
    fetch_wanted = true;  // notifications may have been missed: look at the table
    fetch_cv.notify_one();
  }
}

worker::worker(worker_options options) : impl_(std::make_shared<impl>(std::move(options))) {}

worker::~worker() {
  stop();
}

worker& worker::handle(std::string kind, handler h, retry_policy policy) {
  std::unique_lock lock(impl_->mutex);
  if (impl_->started) throw std::logic_error("keel::jobs::worker::handle: register handlers before start()");
  impl_->kinds[std::move(kind)] = registered_kind{std::move(h), policy};
  return *this;
}

result<void> worker::start() {
  auto& s = *impl_;
  {
    std::unique_lock lock(s.mutex);
    if (s.started) return errc::worker_running;
    if (s.options.queues.empty() || s.kinds.empty()) return errc::no_queues;
    s.schedules.clear();
    for (const auto& p : s.options.periodic) {
      if (p.cron.empty()) {
        s.schedules.emplace_back();
        continue;
      }
      auto parsed = cron_schedule::parse(p.cron);
      if (!parsed) return parsed.error();
      s.schedules.emplace_back(*parsed);
    }
  }
  // Fail early, and in the caller's thread, when Postgres cannot be reached.
  auto probe = pg::connection::connect(s.options.conninfo);
  if (!probe) return probe.error();
  {
    std::unique_lock lock(s.mutex);
    s.started = true;
  }
  s.io_guard.emplace(boost::asio::make_work_guard(s.io));
  s.listener = std::make_unique<pg::listener>(
      s.io.get_executor(),
      pg::listener_options{.conninfo = s.options.conninfo, .channels = {std::string(notify_channel)}},
      [weak = std::weak_ptr<impl>(impl_)](const pg::listener_event& e) {
        if (auto self = weak.lock()) self->on_listener_event(e);
      });
  s.listener->start();
  s.io_thread = std::thread([&s] { s.io.run(); });
  s.pool.emplace(s.options.concurrency);
  s.control = std::thread([&s] { s.control_loop(); });
  s.fetcher = std::thread([&s] { s.fetch_loop(); });
  if (s.options.maintenance) s.maintainer = std::thread([&s] { s.leader_loop(); });
  return {};
}

void worker::stop() {
  auto& s = *impl_;
  {
    std::unique_lock lock(s.mutex);
    if (!s.started || s.stopping_fetch) return;
    s.stopping_fetch = true;
    s.fetch_cv.notify_all();
  }
  if (s.fetcher.joinable()) s.fetcher.join();
  if (s.listener) s.listener->stop();
  {
    std::unique_lock lock(s.mutex);
    // Jobs fetched but not started go back to the queue as if never taken: those in `ready` and
    // those a handler took but has not started (waiting for or in its start check).
    for (auto it = s.held.begin(); it != s.held.end();) {
      auto& j = *it->second;
      if (j.started) {
        ++it;
        continue;
      }
      s.acks.push_back({.id = j.id, .attempt = j.attempt, .state = "release", .error = {}, .run_at_us = 0});
      j.released = true;
      it = s.held.erase(it);
    }
    s.ready.clear();
    s.awaiting_check.clear();
    s.stopping_handlers = true;
    s.control_cv.notify_all();
    s.start_cv.notify_all();
    // Running jobs get the shutdown timeout to finish.
    s.idle_cv.wait_for(lock, s.options.shutdown_timeout, [&] { return s.running_handlers == 0; });
    // The rest are told to stop and handed back to be run again elsewhere.
    for (auto& [id, j] : s.held) {
      j->stop.store(true, std::memory_order_release);
      j->released = true;
      s.acks.push_back({.id = j->id,
                        .attempt = j->attempt,
                        .state = "retryable",
                        .error = "the worker shut down before the job finished",
                        .run_at_us = to_unix_us(s.clock->now())});
    }
    s.control_cv.notify_all();
  }
  if (s.pool) s.pool->join();  // a handler that ignores cancelled() keeps us here
  {
    std::unique_lock lock(s.mutex);
    s.stopping_control = true;
    s.control_cv.notify_all();
  }
  if (s.control.joinable()) s.control.join();
  if (s.maintainer.joinable()) s.maintainer.join();
  s.listener.reset();
  s.io_guard.reset();
  s.io.stop();
  if (s.io_thread.joinable()) s.io_thread.join();
}

void worker::wake() {
  std::unique_lock lock(impl_->mutex);
  impl_->fetch_wanted = true;
  impl_->fetch_cv.notify_one();
}

worker_stats worker::stats() const {
  std::unique_lock lock(impl_->mutex);
  auto s = impl_->counters;
  s.running = impl_->running_handlers;
  return s;
}

const std::string& worker::id() const noexcept {
  return impl_->options.worker_id;
}

}  // namespace keel::jobs
