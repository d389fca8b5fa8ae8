#pragma once
// The statements the worker and the leader run (internal to keel::jobs).
#include <keel/pg/advisory_lock.hpp>

#include <string_view>

namespace keel::jobs::detail {

// Fetch a batch: lock the first runnable rows (skipping rows other workers hold), and take
// them under a lease in the same statement; paused queues give nothing, and a queue's
// max_running (set_queue_limit) bounds its running jobs over all workers (keel_jobs_fetch).
inline constexpr std::string_view fetch_sql = "SELECT * FROM keel_jobs_fetch($1, $2, $3, $4, $5)";

// Acknowledge a batch of finished runs. A row changes only if it is still running the same
// attempt: a job rescued (lease expired) or cancelled meanwhile is left alone, and a rescue
// can never overwrite a completion either (it checks state = 'running' too). Dependents of
// completed jobs are released in the same statement. A job handed back unstarted ('release')
// whose cancellation was requested meanwhile is cancelled, not made available: once cancel_job
// returned, no worker may fetch it again.
inline constexpr std::string_view ack_sql = R"sql(
WITH u AS (
  SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[]) AS u(id, attempt, state, error, run_at_us)
), done AS (
  UPDATE keel_jobs j SET
    state = CASE WHEN u.state <> 'completed' AND j.cancel_requested THEN 'cancelled'
                 WHEN u.state = 'release' THEN 'available'
                 ELSE u.state END,
    attempt = CASE WHEN u.state = 'release' THEN j.attempt - 1 ELSE j.attempt END,
    finished_at = CASE WHEN u.state IN ('release', 'retryable') AND NOT j.cancel_requested THEN NULL ELSE $6 END,
    run_at = CASE WHEN u.state = 'retryable' THEN 'epoch'::timestamptz + u.run_at_us * interval '1 microsecond'
                  ELSE j.run_at END,
    errors = CASE WHEN u.state = 'release' AND j.cancel_requested
                    THEN j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt - 1, 'at', $6, 'error',
                                                                          'cancelled before it started'))
                  WHEN u.error = '' THEN j.errors
                  ELSE j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt, 'at', $6, 'error', u.error))
             END,
    lease_expires_at = NULL
  FROM u WHERE j.id = u.id AND j.state = 'running' AND j.attempt = u.attempt
  RETURNING j.id, j.state, j.queue
), completed AS (
  SELECT coalesce(array_agg(id), '{}'::int8[]) AS ids FROM done WHERE state = 'completed'
), released AS (
  UPDATE keel_jobs p SET state = 'available'
  FROM completed c
  WHERE p.state = 'pending' AND p.depends_on && c.ids
    AND NOT EXISTS (SELECT 1 FROM keel_jobs d WHERE d.id = ANY(p.depends_on) AND d.state <> 'completed'
                    AND d.id <> ALL(c.ids))
  RETURNING p.queue
), woke AS (
  SELECT count(*) AS n FROM (SELECT pg_notify('keel_jobs', q.queue)
                             FROM (SELECT DISTINCT queue FROM released
                                   UNION SELECT DISTINCT queue FROM done WHERE state = 'available'
                                   UNION SELECT DISTINCT queue FROM done
                                         WHERE queue IN (SELECT name FROM keel_job_queues
                                                         WHERE max_running IS NOT NULL)) q) x
), finished AS (
  -- One notification per batch that finished a job, for wait_for_job (waiters look again).
  SELECT count(pg_notify('keel_jobs_finished', '')) AS n
  FROM (SELECT 1 FROM done WHERE state IN ('completed', 'discarded', 'cancelled') LIMIT 1) f
)
SELECT done.id FROM done CROSS JOIN woke CROSS JOIN finished)sql";

// Extend the leases of the jobs this worker holds; learn which ones were cancelled by hand and
// which ones it no longer holds (missing from the answer). The rows are locked in id order, as
// the start check locks them, so the two cannot deadlock on the jobs they both hold.
inline constexpr std::string_view heartbeat_sql = R"sql(
WITH locked AS (
  SELECT j.id FROM keel_jobs j
  JOIN unnest($1::int8[], $2::int8[]) AS u(id, attempt) ON j.id = u.id
  WHERE j.attempt = u.attempt AND j.state = 'running'
  ORDER BY j.id
  FOR NO KEY UPDATE OF j)
UPDATE keel_jobs j SET lease_expires_at = $3
FROM locked WHERE j.id = locked.id
RETURNING j.id, j.cancel_requested)sql";

// Confirm, just before their handlers start, that jobs are still this worker's and not cancelled:
// the rows still running this attempt for this worker, with their cancel flag. The row lock
// conflicts with cancel_job's UPDATE, so the two serialise: either this statement comes first
// and the job starts (cancel_job then flags a running job), or it reads the committed flag (after
// waiting for the cancelling transaction) and the job is handed back to become cancelled. A lock
// rather than an UPDATE: no new row version, so no index entries and less WAL per start.
inline constexpr std::string_view start_check_sql = R"sql(
SELECT j.id, j.cancel_requested FROM keel_jobs j
JOIN unnest($1::int8[], $2::int8[]) AS u(id, attempt) ON j.id = u.id
WHERE j.attempt = u.attempt AND j.state = 'running' AND j.worker_id = $3
ORDER BY j.id
FOR NO KEY UPDATE OF j)sql";

inline constexpr std::string_view rescue_sql = R"sql(
WITH rescued AS (
  UPDATE keel_jobs SET
    state = CASE WHEN cancel_requested THEN 'cancelled' WHEN attempt >= max_attempts THEN 'discarded'
                 ELSE 'retryable' END,
    finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts THEN $1 END,
    run_at = $1,
    lease_expires_at = NULL,
    errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', $1, 'error',
      'lease expired: worker ' || coalesce(worker_id, '?') ||
      ' stopped renewing it (it crashed, was killed, hung or lost Postgres); run again'))
  WHERE id IN (SELECT id FROM keel_jobs WHERE state = 'running' AND lease_expires_at < $1
               ORDER BY lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
  RETURNING queue, state
), woke AS (
  SELECT count(*) AS n FROM (SELECT pg_notify('keel_jobs', q.queue)
                             FROM (SELECT DISTINCT queue FROM rescued WHERE state = 'retryable') q) x
), finished AS (
  SELECT count(pg_notify('keel_jobs_finished', '')) AS n
  FROM (SELECT 1 FROM rescued WHERE state IN ('discarded', 'cancelled') LIMIT 1) f
)
SELECT count(*) FROM rescued CROSS JOIN woke CROSS JOIN finished)sql";

// Fallback for dependents whose release raced (two dependencies completed in concurrent
// transactions, or a dependency completed while the dependent was being enqueued).
inline constexpr std::string_view release_pending_sql = R"sql(
WITH released AS (
  UPDATE keel_jobs p SET state = 'available'
  WHERE p.id IN (SELECT id FROM keel_jobs WHERE state = 'pending' ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED)
    AND NOT EXISTS (SELECT 1 FROM keel_jobs d WHERE d.id = ANY(p.depends_on) AND d.state <> 'completed')
  RETURNING p.queue
)
SELECT count(pg_notify('keel_jobs', q.queue)) FROM (SELECT DISTINCT queue FROM released) q)sql";

// Fallback for dependents enqueued while their dependency was being discarded or cancelled
// (the trigger that settles dependents cannot see rows of a transaction not yet committed).
// Candidates are chosen by the condition itself, so old pending jobs cannot crowd them out.
inline constexpr std::string_view settle_pending_sql = R"sql(
SELECT keel_jobs_settle_blocked(ARRAY(
  SELECT p.id FROM keel_jobs p
  WHERE p.state = 'pending' AND EXISTS (SELECT 1 FROM keel_jobs d WHERE d.id = ANY(p.depends_on)
                                        AND d.state IN ('discarded', 'cancelled'))
  LIMIT 1000)))sql";

inline constexpr std::string_view prune_sql = R"sql(
WITH gone AS (
  DELETE FROM keel_jobs WHERE id IN (
    SELECT id FROM keel_jobs
    WHERE (state IN ('completed', 'cancelled') AND finished_at < $1) OR (state = 'discarded' AND finished_at < $2)
    LIMIT 5000)
  RETURNING 1)
SELECT count(*) FROM gone)sql";

// The leader holds a session-level advisory lock, one per schema, so job tables in different
// schemas of one database each get their own leader. If its session dies, Postgres releases
// the lock and the next worker to try takes over. The key is the one earlier versions took by
// hand, so workers of both versions elect one leader during a rolling upgrade.
inline constexpr pg::advisory_key leader_lock{.name_hash = 1802137199, .per_schema = true};

}  // namespace keel::jobs::detail
