#include <keel/jobs/error.hpp>

namespace keel::jobs {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_job:
      return "invalid job: it needs a kind, a non-empty queue and max_attempts of at least 1";
    case errc::invalid_args:
      return "the job's args are not valid JSON; pass a JSON document such as {\"user\": 7}";
    case errc::job_not_found:
      return "no job has that id (finished jobs are pruned after their retention period)";
    case errc::invalid_state:
      return "the job is not in a state that allows this (see its state; running jobs can only be cancelled)";
    case errc::worker_running:
      return "the worker is already running; register handlers before start()";
    case errc::no_queues:
      return "the worker has no queues or no handlers; add queues to worker_options and call handle()";
    case errc::invalid_schedule:
      return "invalid cron expression: use five fields, minute hour day-of-month month day-of-week (UTC), "
             "each *, a number, a range a-b, a step */n or a-b/n, or a comma-separated list";
    case errc::unknown_dependency:
      return "a job depends on an id that no job has (it never existed, or finished and was pruned); enqueue "
             "the dependencies first and pass the ids enqueue returned; nothing of the batch was enqueued";
    case errc::dependency_failed:
      return "a dependency of this job was discarded or cancelled, so it cannot run; retry that dependency "
             "instead (the jobs it cancelled come back with it)";
    case errc::invalid_name:
      return "queue and kind names must be 1 to 255 bytes (keel::jobs::max_name_bytes) without NUL; "
             "Postgres carries queue names in notifications, which cap their size";
  }
  return "unknown keel.jobs error";
}

constexpr enum_error_category<errc> category{"keel.jobs", &describe};

}  // namespace

const error_category& jobs_category() noexcept {
  return category;
}

}  // namespace keel::jobs
