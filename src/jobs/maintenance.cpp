// The leader's maintenance: leader election by advisory lock, rescue of expired leases, release
// and settling of pending dependents, periodic jobs, pruning of finished jobs.
#include <keel/core/log.hpp>
#include <keel/jobs/client.hpp>

#include "worker_impl.hpp"
#include "worker_sql.hpp"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace keel::jobs {

using namespace detail;

// Takes the lead if it is free, then runs a round; `lead` holds the leader lock while this
// worker leads and is given up (released) when a round fails, so another worker can take over.
void worker::impl::maintain(pg::connection& c, std::optional<pg::advisory_lock>& lead) {
  if (!lead) {
    auto locked = pg::advisory_lock::try_acquire(c, leader_lock);
    if (!locked || !*locked) return;
    lead.emplace(std::move(**locked));
    log::info("keel.jobs: this worker leads maintenance", {{"worker", options.worker_id}});
    periodic_states.assign(options.periodic.size(), {});
  }
  if (!maintenance_round(c)) lead.reset();
}

// Rescue, release, settle, periodic jobs, prune; false when a statement failed.
bool worker::impl::maintenance_round(pg::connection& c) {
  const auto now = clock->now();
  if (auto rescued = c.query(rescue_sql, now); rescued) {
    const auto n = or_default(rescued->value<std::int64_t>(), 0);
    if (n > 0) {
      log::info("keel.jobs: rescued jobs whose lease expired", {{"jobs", static_cast<std::int64_t>(n)}});
      std::unique_lock lock(mutex);
      counters.rescued += static_cast<std::uint64_t>(n);
    }
  } else {
    return false;
  }
  if (auto released = c.query(release_pending_sql); !released) {
    return false;
  }
  if (auto settled = c.query(settle_pending_sql); !settled) {
    return false;
  }
  if (!enqueue_periodic(c, now)) {
    return false;
  }
  for (int round = 0; round < 20; ++round) {
    auto pruned = c.query(prune_sql, now - options.keep_completed, now - options.keep_discarded);
    if (!pruned) {
      return false;
    }
    if (or_default(pruned->value<std::int64_t>(), 0) < 5000) break;
  }
  return true;
}

// Enqueues each periodic job's due slots; false when the connection failed. Each slot is
// enqueued with the unique key periodic:<name>:<slot> in scope `all`, so two leaders in a
// hand-over cannot enqueue a slot twice; the last slot enqueued is kept in keel_job_periodic,
// so a new leader knows which slots passed while no worker led (missed_slots policy).
bool worker::impl::enqueue_periodic(pg::connection& c, timestamp now) {
  using std::chrono::milliseconds;
  constexpr std::int64_t minute_ms = 60'000;
  constexpr std::int64_t cron_lookback_minutes = 366LL * 24 * 60;
  const auto now_ms = std::chrono::duration_cast<milliseconds>(now.time_since_epoch()).count();
  for (std::size_t i = 0; i < options.periodic.size(); ++i) {
    const auto& p = options.periodic[i];
    auto& state = periodic_states[i];
    // `upper`: the slot now falls in; `current`: the slot to run now, if now is one.
    std::int64_t step_ms = minute_ms, upper = 0;
    std::optional<std::int64_t> current;
    if (schedules[i]) {
      upper = now_ms - now_ms % minute_ms;
      if (schedules[i]->matches(now)) current = upper;
    } else {
      step_ms = std::max<std::int64_t>(1, p.every.count());
      upper = now_ms - now_ms % step_ms;
      current = upper;
    }
    if (state.examined && *state.examined == upper) continue;  // this slot was handled
    if (!state.loaded) {
      auto recorded = c.query("SELECT last_slot FROM keel_job_periodic WHERE name = $1", p.name);
      if (!recorded) return !is_connection_error(recorded.error());
      if (!recorded->empty()) {
        if (auto t = (*recorded)[0].get<timestamp>(0)) {
          state.recorded = std::chrono::duration_cast<milliseconds>(t->time_since_epoch()).count();
        }
      }
      state.loaded = true;
    }
    std::vector<std::int64_t> slots;
    if (p.missed != missed_slots::skip && state.recorded) {
      // Slots after the last one enqueued (or examined) and before `upper` were missed; walk
      // back from the newest, keeping as many as the policy wants.
      const std::size_t wanted = p.missed == missed_slots::run_once ? 1 : p.catch_up_limit;
      const auto after = std::max(*state.recorded, state.examined.value_or(*state.recorded));
      if (schedules[i]) {
        std::int64_t looked = 0;
        for (auto m = upper - minute_ms; m > after && slots.size() < wanted && looked < cron_lookback_minutes;
             m -= minute_ms, ++looked) {
          if (schedules[i]->matches(timestamp(milliseconds(m)))) slots.push_back(m);
        }
      } else {
        for (auto slot = upper - step_ms; slot > after && slots.size() < wanted; slot -= step_ms) {
          slots.push_back(slot);
        }
      }
      std::reverse(slots.begin(), slots.end());
    }
    if (current && (!state.recorded || *current > *state.recorded)) slots.push_back(*current);
    if (!slots.empty()) {
      std::vector<new_job> batch;
      for (const auto slot : slots) {
        new_job j = p.job;
        j.unique_key = "periodic:" + p.name + ":" + std::to_string(slot);
        j.unique_in = unique_states::all;
        batch.push_back(std::move(j));
      }
      if (auto put = enqueue_many(c, batch, {.observer = options.observer.get()}); !put) {
        log::warn("keel.jobs: could not enqueue a periodic job",
                  {{"name", p.name}, {"error", put.error().message()}});
        if (is_connection_error(put.error())) return false;
        continue;  // tried again at the next round
      }
      const auto last = slots.back();
      auto saved = c.query(
          "INSERT INTO keel_job_periodic (name, last_slot) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE "
          "SET last_slot = greatest(keel_job_periodic.last_slot, excluded.last_slot), updated_at = now()",
          p.name, timestamp(milliseconds(last)));
      if (!saved) return !is_connection_error(saved.error());
      state.recorded = std::max(state.recorded.value_or(last), last);
    }
    state.examined = upper;
  }
  return true;
}

void worker::impl::leader_loop() {
  std::optional<pg::connection> c;
  // Refers to *c: reset before the connection is replaced or closed.
  std::optional<pg::advisory_lock> lead;
  while (true) {
    if (lead && !c->is_open()) lead.reset();
    if (!ensure_connected(c, stopping_control, "leader")) break;
    const bool was_leader = lead.has_value();
    maintain(*c, lead);
    if (was_leader && !lead) {
      log::warn("keel.jobs: lost maintenance leadership", {{"error", c->last_error().to_string()}});
    }
    {
      std::unique_lock lock(mutex);
      counters.leader = lead.has_value();
      if (lead) ++counters.maintenance_rounds;
      control_cv.wait_for(lock, options.maintenance_interval, [&] { return stopping_control; });
      if (stopping_control) break;
    }
  }
  lead.reset();  // released at once, so another worker takes over without waiting
}

}  // namespace keel::jobs
