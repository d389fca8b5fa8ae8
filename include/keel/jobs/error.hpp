#pragma once
/// @file keel/jobs/error.hpp
/// @brief keel::jobs errors.
#include <keel/core/error.hpp>

namespace keel::jobs {

/// What went wrong in a keel::jobs call. Postgres failures keep their keel::pg::errc (and the
/// connection's diagnostics); these are the job queue's own.
enum class errc {
  invalid_job = 1,     ///< a new job is missing its kind, or has an empty queue or bad max_attempts
  invalid_args,        ///< the args are not valid JSON
  job_not_found,       ///< no job has that id (it may have been pruned)
  invalid_state,       ///< the job is not in a state that allows the operation
  worker_running,      ///< the worker was already started, or handlers changed after start
  no_queues,           ///< a worker was started without queues or without handlers
  invalid_schedule,    ///< a periodic job's cron expression is not five valid fields
  unknown_dependency,  ///< a new job depends on an id no job has (never existed, or pruned)
  dependency_failed,   ///< retry_job on a job whose dependency was discarded or cancelled
  invalid_name,        ///< a queue or kind name is empty, longer than max_name_bytes, or holds NUL
};

/// The category of keel::jobs::errc ("keel.jobs").
[[nodiscard]] const error_category& jobs_category() noexcept;

}  // namespace keel::jobs

KEEL_ERROR_ENUM(keel::jobs, jobs_category);
