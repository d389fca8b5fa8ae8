#include <keel/jobs/metrics.hpp>

#include <array>
#include <map>

namespace keel::jobs {
namespace {

constexpr std::size_t state_count = 8;

// Counts per queue and state in one pass over the table (the CTE is materialised once), with the
// queues ranked by jobs not finished; those past $1 are summed under a NULL queue.
constexpr std::string_view depth_sql = R"sql(
WITH per_state AS (
  SELECT queue, state, count(*) AS n FROM keel_jobs GROUP BY queue, state
), ranked AS (
  SELECT queue,
         row_number() OVER (ORDER BY coalesce(sum(n) FILTER (WHERE state NOT IN ('completed', 'discarded', 'cancelled')), 0) DESC,
                                     sum(n) DESC, queue) AS position
  FROM per_state GROUP BY queue
)
SELECT CASE WHEN r.position <= $1 THEN p.queue END, p.state, sum(p.n)::int8
FROM per_state p JOIN ranked r ON r.queue = p.queue
GROUP BY 1, 2)sql";

double seconds(std::chrono::nanoseconds d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

metrics_observer::metrics_observer(keel::metrics::registry& registry, metrics_options options)
    : options_(std::move(options)),
      enqueued_(registry.add_counter("keel_jobs_enqueued_total", "Jobs enqueued by this process",
                                     {"queue", "kind"})),
      started_(registry.add_counter("keel_jobs_started_total", "Job runs started", {"queue", "kind"})),
      finished_(
          registry.add_counter("keel_jobs_finished_total",
                               "Job runs finished, by outcome (completed, failed, discarded, cancelled)",
                               {"queue", "kind", "outcome"})),
      run_time_(registry.add_histogram("keel_jobs_run_seconds", "Time a handler ran", {"queue", "kind"})),
      queue_wait_(registry.add_histogram("keel_jobs_queue_wait_seconds", "Time from runnable to started",
                                         {"queue", "kind"})),
      depth_(registry.add_gauge("keel_jobs_depth", "Jobs in the table, by queue and state",
                                {"queue", "state"})) {}

void metrics_observer::enqueued(std::string_view queue, std::string_view kind, std::size_t count) {
  enqueued_.labels({queue, kind}).inc(count);
}

void metrics_observer::started(std::string_view queue, std::string_view kind, std::chrono::nanoseconds wait) {
  started_.labels({queue, kind}).inc();
  queue_wait_.labels({queue, kind}).observe(seconds(wait));
}

void metrics_observer::finished(std::string_view queue, std::string_view kind, std::string_view outcome,
                                std::chrono::nanoseconds run_time) {
  finished_.labels({queue, kind, outcome}).inc();
  run_time_.labels({queue, kind}).observe(seconds(run_time));
}

result<void> metrics_observer::refresh_depth(pg::connection& c) {
  auto found = c.query(depth_sql, static_cast<std::int64_t>(options_.max_depth_queues));
  if (!found) return found.error();
  std::map<std::string, std::array<std::int64_t, state_count>, std::less<>> depth;
  for (const auto row : *found) {
    auto queue = row.get<std::optional<std::string>>(0);
    auto state_name = row.get<std::string>(1);
    auto n = row.get<std::int64_t>(2);
    if (!queue) return queue.error();
    if (!state_name) return state_name.error();
    if (!n) return n.error();
    const auto state = parse_job_state(*state_name);
    if (!state) continue;  // the table's CHECK allows only job states
    depth[queue->value_or(options_.other_queues)][static_cast<std::size_t>(*state)] += *n;
  }
  std::lock_guard lock(depth_mutex_);
  for (const auto& [queue, counts] : depth) {
    for (std::size_t s = 0; s < state_count; ++s) {
      depth_.labels({queue, to_string(static_cast<job_state>(s))}).set(static_cast<double>(counts[s]));
    }
  }
  for (const auto& queue : depth_queues_) {
    if (depth.contains(queue)) continue;
    for (std::size_t s = 0; s < state_count; ++s) depth_.hide({queue, to_string(static_cast<job_state>(s))});
  }
  depth_queues_.clear();
  for (const auto& [queue, counts] : depth) depth_queues_.insert(queue);
  return {};
}

}  // namespace keel::jobs
