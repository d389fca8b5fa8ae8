// Schema, enqueue and the administrative calls. Every statement takes its values as
// parameters; the SQL text is constant.
#include <keel/jobs/client.hpp>
#include <keel/pg/migrations.hpp>

#include <boost/json.hpp>

#include <array>
#include <limits>

namespace keel::jobs {
namespace {

template <class T, class U>
T or_default(result<T>&& r, U&& fallback) {
  if (r) return std::move(*r);
  return T(std::forward<U>(fallback));
}

constexpr std::array<std::string_view, 8> state_names = {"pending",   "available", "scheduled", "running",
                                                         "retryable", "completed", "discarded", "cancelled"};

// The hot table keeps only what workers need; finished rows leave it when the leader prunes
// them. Partial indexes cover exactly the rows each query looks for, so they stay small however
// many finished rows wait for pruning.
constexpr pg::migration migrations[] = {
    {1, "jobs", R"sql(
CREATE TABLE keel_jobs (
  id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  state            text        NOT NULL DEFAULT 'available' CHECK (state IN
                     ('pending','available','scheduled','running','retryable','completed','discarded','cancelled')),
  queue            text        NOT NULL CHECK (queue <> ''),
  kind             text        NOT NULL CHECK (kind <> ''),
  args             jsonb       NOT NULL DEFAULT '{}',
  priority         smallint    NOT NULL DEFAULT 0,
  run_at           timestamptz NOT NULL DEFAULT now(),
  attempt          integer     NOT NULL DEFAULT 0,
  max_attempts     integer     NOT NULL DEFAULT 25 CHECK (max_attempts > 0),
  tags             text[]      NOT NULL DEFAULT '{}',
  unique_key       text,
  unique_states    smallint    NOT NULL DEFAULT 0,
  depends_on       bigint[]    NOT NULL DEFAULT '{}',
  created_at       timestamptz NOT NULL DEFAULT now(),
  attempted_at     timestamptz,
  finished_at      timestamptz,
  lease_expires_at timestamptz,
  worker_id        text,
  cancel_requested boolean     NOT NULL DEFAULT false,
  errors           jsonb       NOT NULL DEFAULT '[]'
) WITH (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.05);

-- The bit of each state in keel_jobs.unique_states (keel::jobs::unique_states).
CREATE FUNCTION keel_jobs_state_bit(state text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE state WHEN 'pending' THEN 1 WHEN 'available' THEN 2 WHEN 'scheduled' THEN 4
                     WHEN 'running' THEN 8 WHEN 'retryable' THEN 16 WHEN 'completed' THEN 32
                     WHEN 'discarded' THEN 64 WHEN 'cancelled' THEN 128 ELSE 0 END)::smallint
$$;

-- A unique key holds only while its job is in one of the states the job chose.
CREATE UNIQUE INDEX keel_jobs_unique ON keel_jobs (unique_key)
  WHERE unique_key IS NOT NULL AND (unique_states & keel_jobs_state_bit(state)) <> 0;
-- What workers fetch, in the order they fetch it.
CREATE INDEX keel_jobs_fetch ON keel_jobs (queue, priority, run_at, id)
  WHERE state IN ('available', 'scheduled', 'retryable');
-- Leases the rescuer looks at.
CREATE INDEX keel_jobs_running ON keel_jobs (lease_expires_at) WHERE state = 'running';
-- Pruning and "recently finished".
CREATE INDEX keel_jobs_finished ON keel_jobs (finished_at) WHERE state IN ('completed', 'discarded', 'cancelled');
-- Jobs waiting on a dependency, found by the dependency's id.
CREATE INDEX keel_jobs_pending ON keel_jobs USING gin (depends_on) WHERE state = 'pending';

CREATE TABLE keel_job_queues (
  name       text        PRIMARY KEY,
  paused     boolean     NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);
)sql"},
};

// One statement for a whole batch: arrays in, one row per inserted job out, and one NOTIFY per
// queue that got runnable jobs (Postgres sends it at commit, and folds repeats in a transaction).
constexpr std::string_view insert_sql = R"sql(
WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::int8[], $6::int4[], $7::text[],
                       $8::text[], $9::int2[], $10::text[]) WITH ORDINALITY
           AS t(queue, kind, args, priority, run_at_us, max_attempts, tags, unique_key, unique_states, deps, ord)
), rows AS (
  SELECT queue, kind, args::jsonb AS args, priority,
         coalesce('epoch'::timestamptz + nullif(run_at_us, -9223372036854775808) * interval '1 microsecond', now()) AS run_at,
         max_attempts,
         CASE WHEN tags = '' THEN '{}'::text[] ELSE ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)) END AS tags,
         nullif(unique_key, '') AS unique_key, unique_states,
         CASE WHEN deps = '' THEN '{}'::int8[] ELSE string_to_array(deps, ',')::int8[] END AS depends_on, ord
  FROM input
), ins AS (
  INSERT INTO keel_jobs (state, queue, kind, args, priority, run_at, max_attempts, tags, unique_key, unique_states,
                         depends_on)
  SELECT CASE WHEN cardinality(depends_on) > 0 THEN 'pending' WHEN run_at > now() THEN 'scheduled' ELSE 'available' END,
         queue, kind, args, priority, run_at, max_attempts, tags, unique_key, unique_states, depends_on
  FROM rows ORDER BY ord
  ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND (unique_states & keel_jobs_state_bit(state)) <> 0
  DO NOTHING
  RETURNING id, coalesce(unique_key, '') AS unique_key, queue, state
), woke AS (
  SELECT count(*) AS queues FROM (SELECT pg_notify('keel_jobs', q.queue)
                                  FROM (SELECT DISTINCT queue FROM ins WHERE state = 'available') q) n
)
SELECT ins.id, ins.unique_key, ins.state FROM ins CROSS JOIN woke)sql";

// Dependents whose dependencies already completed (or were pruned) are released at once.
constexpr std::string_view release_sql = R"sql(
WITH released AS (
  UPDATE keel_jobs p SET state = CASE WHEN p.run_at > now() THEN 'scheduled' ELSE 'available' END
  WHERE p.id = ANY($1::int8[]) AND p.state = 'pending'
    AND NOT EXISTS (SELECT 1 FROM keel_jobs d WHERE d.id = ANY(p.depends_on) AND d.state <> 'completed')
  RETURNING p.queue)
SELECT count(pg_notify('keel_jobs', q.queue)) FROM (SELECT DISTINCT queue FROM released) q)sql";

constexpr std::int64_t no_time = std::numeric_limits<std::int64_t>::min();

std::int64_t to_unix_us(timestamp t) noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

result<void> validate(const new_job& job) {
  if (job.kind.empty() || job.queue.empty() || job.max_attempts < 1) return errc::invalid_job;
  boost::system::error_code ec;
  (void)boost::json::parse(job.args, ec);
  if (ec) return errc::invalid_args;
  return {};
}

std::string join_ids(const std::vector<std::int64_t>& ids) {
  std::string out;
  for (const auto id : ids) {
    if (!out.empty()) out += ',';
    out += std::to_string(id);
  }
  return out;
}

std::string tags_json(const std::vector<std::string>& tags) {
  if (tags.empty()) return {};
  boost::json::array a;
  for (const auto& t : tags) a.emplace_back(t);
  return boost::json::serialize(a);
}

constexpr std::string_view job_columns =
    "id, state, queue, kind, args, priority, attempt, max_attempts, run_at, created_at, attempted_at, "
    "finished_at, "
    "lease_expires_at, worker_id, unique_key, tags, depends_on, cancel_requested, errors";

result<job_info> read_job(const pg::row& r) {
  job_info j;
  auto fail = [](const error_code& ec) { return result<job_info>(boost::system::in_place_error, ec); };
#define KEEL_JOBS_READ(field, type, index) \
  if (auto v = r.get<type>(index); v) {    \
    j.field = std::move(*v);               \
  } else {                                 \
    return fail(v.error());                \
  }
  KEEL_JOBS_READ(id, std::int64_t, 0)
  std::string state;
  KEEL_JOBS_READ(queue, std::string, 2)
  KEEL_JOBS_READ(kind, std::string, 3)
  pg::jsonb args;
  if (auto v = r.get<pg::jsonb>(4); v)
    args = std::move(*v);
  else
    return fail(v.error());
  j.args = std::move(args.text);
  KEEL_JOBS_READ(priority, std::int16_t, 5)
  KEEL_JOBS_READ(attempt, std::int32_t, 6)
  KEEL_JOBS_READ(max_attempts, std::int32_t, 7)
  KEEL_JOBS_READ(run_at, timestamp, 8)
  KEEL_JOBS_READ(created_at, timestamp, 9)
  KEEL_JOBS_READ(attempted_at, std::optional<timestamp>, 10)
  KEEL_JOBS_READ(finished_at, std::optional<timestamp>, 11)
  KEEL_JOBS_READ(lease_expires_at, std::optional<timestamp>, 12)
  KEEL_JOBS_READ(worker_id, std::optional<std::string>, 13)
  KEEL_JOBS_READ(unique_key, std::optional<std::string>, 14)
  KEEL_JOBS_READ(tags, std::vector<std::string>, 15)
  KEEL_JOBS_READ(depends_on, std::vector<std::int64_t>, 16)
  KEEL_JOBS_READ(cancel_requested, bool, 17)
#undef KEEL_JOBS_READ
  if (auto v = r.get<std::string>(1); v) {
    j.state = parse_job_state(*v).value_or(job_state::available);
  } else {
    return fail(v.error());
  }
  auto errors = r.get<pg::jsonb>(18);
  if (!errors) return fail(errors.error());
  boost::system::error_code ec;
  const auto parsed = boost::json::parse(errors->text, ec);
  if (!ec && parsed.is_array()) {
    for (const auto& e : parsed.as_array()) {
      if (!e.is_object()) continue;
      const auto& o = e.as_object();
      attempt_error a;
      if (const auto* n = o.if_contains("attempt"); n != nullptr && n->is_int64()) {
        a.attempt = static_cast<std::int32_t>(n->as_int64());
      }
      if (const auto* s = o.if_contains("at"); s != nullptr && s->is_string()) a.at = s->as_string().c_str();
      if (const auto* s = o.if_contains("error"); s != nullptr && s->is_string())
        a.error = s->as_string().c_str();
      j.errors.push_back(std::move(a));
    }
  }
  return j;
}

// Runs an admin UPDATE that returns the changed id; tells "no such job" from "wrong state".
result<void> change_state(pg::connection& c, std::string_view sql, std::int64_t id) {
  auto changed = c.query(sql, id);
  if (!changed) return changed.error();
  if (changed->size() > 0) return {};
  auto exists = c.query("SELECT 1 FROM keel_jobs WHERE id = $1", id);
  if (!exists) return exists.error();
  return exists->empty() ? errc::job_not_found : errc::invalid_state;
}

}  // namespace

std::string_view to_string(job_state s) noexcept {
  return state_names[static_cast<std::size_t>(s)];
}

std::optional<job_state> parse_job_state(std::string_view name) noexcept {
  for (std::size_t i = 0; i < state_names.size(); ++i) {
    if (state_names[i] == name) return static_cast<job_state>(i);
  }
  return std::nullopt;
}

result<void> migrate(pg::connection& c) {
  auto applied = pg::migrate(c, "jobs", migrations);
  if (!applied) return applied.error();
  return {};
}

result<enqueued> enqueue(pg::connection& c, const new_job& job) {
  auto many = enqueue_many(c, std::span<const new_job>(&job, 1));
  if (!many) return many.error();
  return many->front();
}

result<std::vector<enqueued>> enqueue_many(pg::connection& c, std::span<const new_job> jobs) {
  std::vector<enqueued> out;
  if (jobs.empty()) return out;
  std::vector<std::string> queues, kinds, args, tags, keys, deps;
  std::vector<std::int64_t> priorities, run_at, max_attempts, unique_bits;
  queues.reserve(jobs.size());
  kinds.reserve(jobs.size());
  args.reserve(jobs.size());
  tags.reserve(jobs.size());
  keys.reserve(jobs.size());
  deps.reserve(jobs.size());
  priorities.reserve(jobs.size());
  run_at.reserve(jobs.size());
  max_attempts.reserve(jobs.size());
  unique_bits.reserve(jobs.size());
  std::vector<std::int64_t> with_dependencies;
  for (const auto& j : jobs) {
    if (auto valid = validate(j); !valid) return valid.error();
    queues.push_back(j.queue);
    kinds.push_back(j.kind);
    args.push_back(j.args);
    priorities.push_back(j.priority);
    run_at.push_back(j.run_at ? to_unix_us(*j.run_at) : no_time);
    max_attempts.push_back(j.max_attempts);
    tags.push_back(tags_json(j.tags));
    const bool unique = j.unique_key.has_value() && !j.unique_key->empty();
    keys.push_back(unique ? *j.unique_key : std::string());
    unique_bits.push_back(unique ? static_cast<std::int64_t>(j.unique_in) : 0);
    deps.push_back(join_ids(j.depends_on));
  }
  // int2[]/int4[] columns take int8[] parameters (keel::pg's array codec); the server casts them.
  pg::params p;
  p.add(queues).add(kinds).add(args).add(priorities).add(run_at).add(max_attempts).add(tags).add(keys);
  p.add(unique_bits).add(deps);
  auto inserted = c.query_params(insert_sql, p);
  if (!inserted) return inserted.error();

  // RETURNING lists inserted rows in input order; a job with a unique key that is missing from
  // it was a duplicate.
  out.reserve(jobs.size());
  std::size_t next = 0;
  std::vector<std::string> duplicate_keys;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const auto& key = keys[i];
    bool taken = false;
    if (next < inserted->size()) {
      const auto row = (*inserted)[next];
      auto returned_key = row.get<std::string>(1);
      if (!returned_key) return returned_key.error();
      if (*returned_key == key) {
        auto id = row.get<std::int64_t>(0);
        if (!id) return id.error();
        auto state = row.get<std::string>(2);
        if (state && *state == "pending") with_dependencies.push_back(*id);
        out.push_back({.id = *id, .duplicate = false});
        ++next;
        taken = true;
      }
    }
    if (!taken) {
      out.push_back({.id = 0, .duplicate = true});
      duplicate_keys.push_back(key);
    }
  }
  if (!duplicate_keys.empty()) {
    auto existing = c.query(
        "SELECT DISTINCT ON (unique_key) unique_key, id FROM keel_jobs WHERE unique_key = ANY($1::text[]) "
        "ORDER BY unique_key, id DESC",
        duplicate_keys);
    if (!existing) return existing.error();
    for (const auto row : *existing) {
      auto key = row.get<std::string>(0);
      auto id = row.get<std::int64_t>(1);
      if (!key || !id) continue;
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        if (out[i].duplicate && out[i].id == 0 && keys[i] == *key) out[i].id = *id;
      }
    }
  }
  if (!with_dependencies.empty()) {
    if (auto released = c.query(release_sql, with_dependencies); !released) return released.error();
  }
  return out;
}

result<job_info> get_job(pg::connection& c, std::int64_t id) {
  auto found = c.query("SELECT " + std::string(job_columns) + " FROM keel_jobs WHERE id = $1", id);
  if (!found) return found.error();
  if (found->empty()) return errc::job_not_found;
  return read_job((*found)[0]);
}

result<std::vector<job_info>> list_jobs(pg::connection& c, const job_filter& filter) {
  std::optional<std::string> state;
  if (filter.state) state = std::string(to_string(*filter.state));
  auto found = c.query(
      "SELECT " + std::string(job_columns) +
          " FROM keel_jobs WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR queue = $2)"
          " AND ($3::text IS NULL OR kind = $3)"
          " ORDER BY greatest(created_at, attempted_at, finished_at) DESC, id DESC LIMIT $4",
      state, filter.queue, filter.kind, filter.limit);
  if (!found) return found.error();
  std::vector<job_info> out;
  out.reserve(found->size());
  for (const auto row : *found) {
    auto j = read_job(row);
    if (!j) return j.error();
    out.push_back(std::move(*j));
  }
  return out;
}

result<void> retry_job(pg::connection& c, std::int64_t id) {
  constexpr std::string_view sql = R"sql(
WITH revived AS (
  UPDATE keel_jobs SET state = 'available', run_at = now(), finished_at = NULL, cancel_requested = false,
                       lease_expires_at = NULL, worker_id = NULL, max_attempts = greatest(max_attempts, attempt + 1)
  WHERE id = $1 AND state IN ('discarded', 'cancelled', 'completed', 'retryable', 'scheduled')
  RETURNING id, queue)
SELECT id, pg_notify('keel_jobs', queue)::text FROM revived)sql";
  return change_state(c, sql, id);
}

result<void> cancel_job(pg::connection& c, std::int64_t id) {
  // Not running: cancelled now. Running: flagged; the worker's heartbeat sees the flag (the
  // notification makes it look at once) and its handler's job_context::cancelled() turns true.
  constexpr std::string_view sql = R"sql(
WITH changed AS (
  UPDATE keel_jobs SET
    state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
    finished_at = CASE WHEN state = 'running' THEN finished_at ELSE now() END,
    cancel_requested = true
  WHERE id = $1 AND state IN ('pending', 'available', 'scheduled', 'retryable', 'running')
  RETURNING id, state)
SELECT id, CASE WHEN state = 'running' THEN pg_notify('keel_jobs', '!cancel')::text END FROM changed)sql";
  return change_state(c, sql, id);
}

result<void> discard_job(pg::connection& c, std::int64_t id, std::string_view reason) {
  auto changed = c.query(R"sql(
UPDATE keel_jobs SET state = 'discarded', finished_at = now(),
  errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', now(), 'error', $2::text))
WHERE id = $1 AND state IN ('pending', 'available', 'scheduled', 'retryable')
RETURNING id)sql",
                         id, reason);
  if (!changed) return changed.error();
  if (changed->size() > 0) return {};
  auto exists = c.query("SELECT 1 FROM keel_jobs WHERE id = $1", id);
  if (!exists) return exists.error();
  return exists->empty() ? errc::job_not_found : errc::invalid_state;
}

result<void> pause_queue(pg::connection& c, std::string_view queue) {
  auto r = c.query(
      "INSERT INTO keel_job_queues (name, paused) VALUES ($1, true) "
      "ON CONFLICT (name) DO UPDATE SET paused = true, updated_at = now()",
      queue);
  if (!r) return r.error();
  return {};
}

result<void> resume_queue(pg::connection& c, std::string_view queue) {
  auto r = c.query(
      "WITH resumed AS (INSERT INTO keel_job_queues (name, paused) VALUES ($1, false) "
      "ON CONFLICT (name) DO UPDATE SET paused = false, updated_at = now() RETURNING name) "
      "SELECT pg_notify('keel_jobs', name)::text FROM resumed",
      queue);
  if (!r) return r.error();
  return {};
}

result<std::vector<queue_summary>> queue_summaries(pg::connection& c) {
  auto found = c.query(R"sql(
WITH counts AS (SELECT queue, state, count(*) AS n FROM keel_jobs GROUP BY queue, state),
     names AS (SELECT queue FROM counts UNION SELECT name FROM keel_job_queues)
SELECT n.queue, coalesce(q.paused, false),
       coalesce((SELECT jsonb_object_agg(state, c.n) FROM counts c WHERE c.queue = n.queue), '{}'::jsonb),
       (SELECT count(*) FROM keel_jobs j WHERE j.queue = n.queue AND j.state = 'completed'
          AND j.finished_at > now() - interval '1 minute'),
       (SELECT count(*) FROM keel_jobs j WHERE j.queue = n.queue AND j.state IN ('retryable', 'discarded')
          AND j.attempted_at > now() - interval '1 minute')
FROM names n LEFT JOIN keel_job_queues q ON q.name = n.queue
ORDER BY n.queue)sql");
  if (!found) return found.error();
  std::vector<queue_summary> out;
  for (const auto row : *found) {
    queue_summary s;
    s.queue = or_default(row.get<std::string>(0), "");
    s.paused = or_default(row.get<bool>(1), false);
    if (auto counts = row.get<pg::jsonb>(2)) {
      boost::system::error_code ec;
      const auto parsed = boost::json::parse(counts->text, ec);
      if (!ec && parsed.is_object()) {
        for (const auto& [name, n] : parsed.as_object()) {
          const auto state = parse_job_state(std::string_view(name.data(), name.size()));
          if (state && n.is_int64()) s.counts[static_cast<int>(*state)] = n.as_int64();
        }
      }
    }
    s.completed_last_minute = or_default(row.get<std::int64_t>(3), 0);
    s.failed_last_minute = or_default(row.get<std::int64_t>(4), 0);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace keel::jobs
