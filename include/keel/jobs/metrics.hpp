#pragma once
/// @file keel/jobs/metrics.hpp
/// @brief Prometheus metrics for keel::jobs: an observer that counts what enqueue calls and
/// workers report, and the queue-depth gauge, read from the table when metrics are scraped.
#include <keel/core/metrics.hpp>
#include <keel/jobs/client.hpp>

#include <chrono>
#include <cstddef>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

namespace keel::jobs {

/// How many queues keel_jobs_depth names.
struct metrics_options {
  /// Queues named in keel_jobs_depth, the deepest first (by jobs not finished); the jobs of all
  /// other queues are summed under `other_queues`, so /metrics stays small with many queues.
  std::size_t max_depth_queues = 50;
  /// The queue label of that sum. A named queue of the same name is added to it.
  std::string other_queues = "other";
};

/// Reports keel::jobs into a metrics registry:
/// - `keel_jobs_enqueued_total{queue,kind}`, from enqueue calls given this observer;
/// - `keel_jobs_started_total{queue,kind}` and
///   `keel_jobs_finished_total{queue,kind,outcome}` (completed, failed, discarded, cancelled),
///   from workers given this observer (worker_options::observer);
/// - `keel_jobs_run_seconds{queue,kind}` and `keel_jobs_queue_wait_seconds{queue,kind}`
///   histograms (handler run time; time from runnable to started);
/// - `keel_jobs_depth{queue,state}`: jobs in the table, set by refresh_depth().
/// Share one instance between the workers and enqueue calls of a process.
class metrics_observer final : public observer {
 public:
  /// Registers the families in `registry`, which must outlive this observer.
  explicit metrics_observer(keel::metrics::registry& registry, metrics_options options = {});

  void enqueued(std::string_view queue, std::string_view kind, std::size_t count) override;
  void started(std::string_view queue, std::string_view kind, std::chrono::nanoseconds queue_wait) override;
  void finished(std::string_view queue, std::string_view kind, std::string_view outcome,
                std::chrono::nanoseconds run_time) override;

  /// Sets keel_jobs_depth from one aggregate query over the job table: the
  /// `max_depth_queues` deepest queues by name and the rest under `other_queues`, every state
  /// of each. Queues no longer named stop being exposed. Call it where metrics are served,
  /// before exposing them. @returns the pg error; the gauge then keeps its previous values.
  [[nodiscard]] result<void> refresh_depth(pg::connection& c);

 private:
  metrics_options options_;
  keel::metrics::counter_family& enqueued_;
  keel::metrics::counter_family& started_;
  keel::metrics::counter_family& finished_;
  keel::metrics::histogram_family& run_time_;
  keel::metrics::histogram_family& queue_wait_;
  keel::metrics::gauge_family& depth_;
  std::mutex depth_mutex_;
  std::set<std::string, std::less<>> depth_queues_;  // queue labels refresh_depth last set
};

}  // namespace keel::jobs
