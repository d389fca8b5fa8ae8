// keel::events on Postgres.
//
// The global order is (transaction_id, position): the appending transaction's xid8, then a
// sequence number drawn at insert. Sequence numbers are handed out before commit, so a reader
// that follows them alone skips an event whose transaction commits after a later one's. Instead
// readers stop at the horizon, pg_snapshot_xmin(pg_current_snapshot()): every transaction below
// it has ended, so every event below it is final, and every transaction still to commit has an
// id at or above it and sorts after the cursor. No append takes a lock shared with other
// streams: the only lock is the stream's own row.
#include <keel/core/assert.hpp>
#include <keel/core/log.hpp>
#include <keel/events/metrics.hpp>
#include <keel/events/store.hpp>
#include <keel/pg/transaction.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <iterator>
#include <numeric>
#include <string>
#include <utility>

namespace keel::events {
namespace {

constexpr pg::migration events_migrations[] = {
    {1, "events", R"sql(
-- One row per stream: its last version (the lock an append takes, and the only one), retention
-- settings and deletion. Updated by every append, so room is left for HOT updates.
CREATE TABLE keel_events_streams (
  name            text        PRIMARY KEY,
  category        text        NOT NULL,
  version         bigint      NOT NULL DEFAULT -1 CHECK (version >= -1),
  deleted         boolean     NOT NULL DEFAULT false,
  tombstoned      boolean     NOT NULL DEFAULT false,
  truncate_before bigint      NOT NULL DEFAULT 0 CHECK (truncate_before >= 0),
  max_count       bigint      CHECK (max_count >= 0),
  max_age_seconds bigint      CHECK (max_age_seconds >= 0),
  custom          jsonb       NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
-- The streams scavenging looks at.
CREATE INDEX keel_events_streams_retention ON keel_events_streams (name)
  WHERE truncate_before > 0 OR max_count IS NOT NULL OR max_age_seconds IS NOT NULL;

CREATE TABLE keel_events (
  transaction_id bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
  position       bigint      GENERATED ALWAYS AS IDENTITY,
  stream         text        NOT NULL,
  category       text        NOT NULL,
  version        bigint      NOT NULL CHECK (version >= 0),
  id             uuid        NOT NULL,
  type           text        NOT NULL,
  -- json, not jsonb: kept as the caller wrote it, and sent to readers without conversion (jsonb
  -- output costs readers of $all about 40% of their throughput). Validated before it is sent.
  data           json        NOT NULL,
  metadata       json        NOT NULL,
  recorded_at    timestamptz NOT NULL DEFAULT now(),
  -- $all in order; the horizon bounds every read of it.
  PRIMARY KEY (transaction_id, position),
  -- A stream in order, and each version taken once.
  CONSTRAINT keel_events_stream_version UNIQUE (stream, version),
  -- Idempotent appends: an id is stored once.
  CONSTRAINT keel_events_id UNIQUE (id)
);
-- A category in order.
CREATE INDEX keel_events_category ON keel_events (category, transaction_id, position);
)sql"},
    {2, "events checkpoints", R"sql(
-- Where each subscription or projection has got to in the global order.
CREATE TABLE keel_events_checkpoints (
  name           text        PRIMARY KEY,
  transaction_id bigint      NOT NULL,
  position       bigint      NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now()
);
)sql"},
    {3, "events snapshots", R"sql(
-- The latest snapshot of each stream's fold (aggregates), with the schema of its state.
CREATE TABLE keel_events_snapshots (
  stream         text        PRIMARY KEY,
  version        bigint      NOT NULL CHECK (version >= 0),
  schema_version integer     NOT NULL,
  state          json        NOT NULL,
  taken_at       timestamptz NOT NULL DEFAULT now()
);
)sql"},
    {4, "events consumer groups", R"sql(
-- Consumer groups: a fixed number of partitions (a stream's is a hash of its name), each with
-- an owner under a lease and a checkpoint; members heartbeat.
CREATE TABLE keel_events_groups (
  name       text        PRIMARY KEY,
  partitions integer     NOT NULL CHECK (partitions > 0),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE keel_events_group_members (
  group_name   text        NOT NULL REFERENCES keel_events_groups (name) ON DELETE CASCADE,
  member       text        NOT NULL,
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_name, member)
);
CREATE TABLE keel_events_group_partitions (
  group_name       text        NOT NULL REFERENCES keel_events_groups (name) ON DELETE CASCADE,
  partition        integer     NOT NULL,
  owner            text,
  lease_expires_at timestamptz,
  transaction_id   bigint      NOT NULL DEFAULT 0,
  position         bigint      NOT NULL DEFAULT 0,
  PRIMARY KEY (group_name, partition)
);
)sql"},
    {5, "events dense sequence", R"sql(
-- The strict mode: dense, gap-free sequence numbers for the global order, assigned after commit
-- by store::assign_sequence below the horizon, so appends take no lock for them. Insert-only:
-- keel_events rows are never updated for it.
CREATE TABLE keel_events_sequence (
  sequence       bigint PRIMARY KEY,
  transaction_id bigint NOT NULL,
  position       bigint NOT NULL
);
-- The sequencer's cursor: one row, locked by the one assigning.
CREATE TABLE keel_events_sequencer (
  id             integer PRIMARY KEY CHECK (id = 1),
  last_sequence  bigint  NOT NULL,
  transaction_id bigint  NOT NULL,
  position       bigint  NOT NULL
);
INSERT INTO keel_events_sequencer VALUES (1, 0, 0, 0);
)sql"},
    {6, "events stream order in the global order", R"sql(
-- The ordering key each stream's last append used. An append's events are ordered by
-- greatest(its transaction id, this), never by less: a transaction that took its id before
-- another, and appends to a stream after that one did, would otherwise sort its later version
-- first. Keys stay at or above the real transaction id, so the horizon rule still holds.
ALTER TABLE keel_events_streams ADD COLUMN last_transaction_id bigint NOT NULL DEFAULT 0;
UPDATE keel_events_streams s
SET last_transaction_id = coalesce((SELECT max(e.transaction_id) FROM keel_events e WHERE e.stream = s.name), 0);
)sql"},
};

// ---------------------------------------------------------------------------------------------
// Appending. One statement per stream: the input rows, the ids already stored (idempotency), the
// stream row's update under the expected-version condition, and the insert, which runs only if
// the stream row was updated. Four variants, one per expected-version kind, assembled from fixed
// text; every value is a parameter: $1 stream, $2 category, $3 exact version, $4 ids ('' for a
// generated one), $5 types, $6 data, $7 metadata.
constexpr std::string_view append_head = R"sql(
WITH input AS (
  SELECT nullif(t.id, '')::uuid AS id, t.type, t.data::json AS data, t.metadata::json AS metadata, t.ord
  FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY AS t(id, type, data, metadata, ord)
), existing AS (
  SELECT e.version, e.transaction_id, e.position, i.ord,
         (e.stream = $1 AND e.type = i.type AND e.data::jsonb = i.data::jsonb AND e.metadata::jsonb = i.metadata::jsonb) AS same
  FROM input i JOIN keel_events e ON e.id = i.id
), head AS ()sql";

constexpr std::string_view append_upsert = R"sql(
  INSERT INTO keel_events_streams AS s (name, category, version, last_transaction_id)
  SELECT $1, $2, cardinality($5::text[]) - 1, pg_current_xact_id()::text::bigint
  WHERE NOT EXISTS (SELECT 1 FROM existing)
  ON CONFLICT (name) DO UPDATE SET version = s.version + cardinality($5::text[]), deleted = false, updated_at = now(),
    last_transaction_id = greatest(s.last_transaction_id, pg_current_xact_id()::text::bigint)
  WHERE NOT s.tombstoned)sql";

constexpr std::string_view append_tail = R"sql(
  RETURNING s.version, s.last_transaction_id
), ins AS (
  INSERT INTO keel_events (transaction_id, stream, category, version, id, type, data, metadata)
  SELECT head.last_transaction_id, $1, $2, head.version - cardinality($5::text[]) + i.ord,
         coalesce(i.id, gen_random_uuid()), i.type, i.data, i.metadata
  FROM head, input i ORDER BY i.ord
  RETURNING version, transaction_id, position
))sql";
constexpr std::string_view append_result_rows = R"sql(
SELECT false AS existed, 0::bigint AS ord, version, transaction_id, position, true AS same FROM ins
UNION ALL
SELECT true, ord, version, transaction_id, position, same FROM existing)sql";
// The same, sending NOTIFY keel_events with the category once the stream row was updated.
constexpr std::string_view append_result_rows_notify = R"sql(, woke AS (
  SELECT pg_notify('keel_events', $2) FROM head
)
SELECT false AS existed, 0::bigint AS ord, version, transaction_id, position, true AS same
FROM ins, (SELECT count(*) FROM woke) w
UNION ALL
SELECT true, ord, version, transaction_id, position, same FROM existing)sql";

std::string make_append_sql(expected_version::kind kind, bool notify) {
  std::string sql(append_head);
  switch (kind) {
    case expected_version::kind::any:
      sql += append_upsert;
      break;
    case expected_version::kind::no_stream:
      // A soft-deleted stream counts as having no events; its versions go on from where it was.
      sql += append_upsert;
      sql += " AND (s.version = -1 OR s.deleted)";
      break;
    case expected_version::kind::stream_exists:
      sql += R"sql(
  UPDATE keel_events_streams s SET version = s.version + cardinality($5::text[]), updated_at = now(),
    last_transaction_id = greatest(s.last_transaction_id, pg_current_xact_id()::text::bigint)
  WHERE s.name = $1 AND s.version >= 0 AND NOT s.deleted AND NOT s.tombstoned
    AND NOT EXISTS (SELECT 1 FROM existing))sql";
      break;
    case expected_version::kind::exact:
      sql += R"sql(
  UPDATE keel_events_streams s SET version = s.version + cardinality($5::text[]), deleted = false, updated_at = now(),
    last_transaction_id = greatest(s.last_transaction_id, pg_current_xact_id()::text::bigint)
  WHERE s.name = $1 AND s.version = $3 AND NOT s.tombstoned
    AND NOT EXISTS (SELECT 1 FROM existing))sql";
      break;
  }
  sql += append_tail;
  sql += notify ? append_result_rows_notify : append_result_rows;
  return sql;
}

const std::string& append_sql(expected_version::kind kind, bool notify) {
  static const std::array<std::string, 8> statements = [] {
    std::array<std::string, 8> all;
    for (std::size_t k = 0; k < 4; ++k) {
      for (const bool with_notify : {false, true}) {
        all[k * 2 + (with_notify ? 1 : 0)] =
            make_append_sql(static_cast<expected_version::kind>(k), with_notify);
      }
    }
    return all;
  }();
  return statements[static_cast<std::size_t>(kind) * 2 + (notify ? 1 : 0)];
}

constexpr std::string_view stream_row_sql =
    "SELECT version, deleted, tombstoned, truncate_before, max_count, max_age_seconds, custom "
    "FROM keel_events_streams WHERE name = $1";

// ---------------------------------------------------------------------------------------------
// Reading. The event columns, in the order decode_event reads them.
#define KEEL_EVENT_COLUMNS \
  "e.id, e.stream, e.type, e.data, e.metadata, e.version, e.transaction_id, e.position, e.recorded_at"
constexpr std::size_t event_column_count = 9;

// A stream's events above its truncation point: truncate_before (deletion sets it), max_count
// and max_age. $1 stream, $2 from version (-1: the end, backward), $3 limit, $4 types.
constexpr std::string_view read_stream_sql_forward = R"sql(
SELECT s.version, s.deleted, s.tombstoned, )sql" KEEL_EVENT_COLUMNS R"sql(
FROM keel_events_streams s
LEFT JOIN LATERAL (
  SELECT * FROM keel_events e
  WHERE e.stream = s.name AND NOT s.tombstoned
    AND e.version >= greatest($2, s.truncate_before, s.version - coalesce(s.max_count, s.version + 1) + 1)
    AND (s.max_age_seconds IS NULL OR e.recorded_at >= now() - s.max_age_seconds * interval '1 second')
    AND (cardinality($4::text[]) = 0 OR e.type = ANY($4::text[]))
  ORDER BY e.version LIMIT $3) e ON true
WHERE s.name = $1)sql";

constexpr std::string_view read_stream_sql_backward = R"sql(
SELECT s.version, s.deleted, s.tombstoned, )sql" KEEL_EVENT_COLUMNS R"sql(
FROM keel_events_streams s
LEFT JOIN LATERAL (
  SELECT * FROM keel_events e
  WHERE e.stream = s.name AND NOT s.tombstoned
    AND e.version <= CASE WHEN $2 < 0 THEN s.version ELSE $2 END
    AND e.version >= greatest(s.truncate_before, s.version - coalesce(s.max_count, s.version + 1) + 1)
    AND (s.max_age_seconds IS NULL OR e.recorded_at >= now() - s.max_age_seconds * interval '1 second')
    AND (cardinality($4::text[]) = 0 OR e.type = ANY($4::text[]))
  ORDER BY e.version DESC LIMIT $3) e ON true
WHERE s.name = $1)sql";

// The global order below the horizon. $1/$2 the cursor, $3 limit, $4 types, $5 category. The
// category variants are separate statements so that each has a plan on its own index.
// Each read answers with a head row carrying the horizon (the event columns null), then the
// events below it: a join of the horizon onto every event row would cost readers of $all a
// column and a projection per row, a tenth of their throughput.
#define KEEL_HORIZON "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon"
#define KEEL_HEAD_ROW                                                                            \
  "SELECT h.horizon, NULL::uuid, NULL::text, NULL::text, NULL::json, NULL::json, NULL::bigint, " \
  "NULL::bigint, NULL::bigint, NULL::timestamptz FROM h\nUNION ALL\n(SELECT NULL, " KEEL_EVENT_COLUMNS
#define KEEL_BELOW_HORIZON "e.transaction_id < (SELECT horizon FROM h)"
#define KEEL_OF_TYPES "(cardinality($4::text[]) = 0 OR e.type = ANY($4::text[]))"
constexpr std::string_view read_all_forward_sql = "WITH h AS (" KEEL_HORIZON ")\n" KEEL_HEAD_ROW R"sql(
  FROM keel_events e
  WHERE (e.transaction_id, e.position) > ($1, $2) AND )sql" KEEL_BELOW_HORIZON " AND " KEEL_OF_TYPES R"sql(
  ORDER BY e.transaction_id, e.position LIMIT $3))sql";
constexpr std::string_view read_all_backward_sql = "WITH h AS (" KEEL_HORIZON ")\n" KEEL_HEAD_ROW R"sql(
  FROM keel_events e
  WHERE (e.transaction_id, e.position) < ($1, $2) AND )sql" KEEL_BELOW_HORIZON " AND " KEEL_OF_TYPES R"sql(
  ORDER BY e.transaction_id DESC, e.position DESC LIMIT $3))sql";
constexpr std::string_view read_category_forward_sql = "WITH h AS (" KEEL_HORIZON ")\n" KEEL_HEAD_ROW R"sql(
  FROM keel_events e
  WHERE e.category = $5 AND (e.transaction_id, e.position) > ($1, $2) AND )sql" KEEL_BELOW_HORIZON
                                                       " AND " KEEL_OF_TYPES R"sql(
  ORDER BY e.transaction_id, e.position LIMIT $3))sql";
constexpr std::string_view read_category_backward_sql = "WITH h AS (" KEEL_HORIZON ")\n" KEEL_HEAD_ROW R"sql(
  FROM keel_events e
  WHERE e.category = $5 AND (e.transaction_id, e.position) < ($1, $2) AND )sql" KEEL_BELOW_HORIZON
                                                        " AND " KEEL_OF_TYPES R"sql(
  ORDER BY e.transaction_id DESC, e.position DESC LIMIT $3))sql";
// One stream in the global order: within a stream the global order is version order, so the
// read finds the last version at or before the cursor (from the stream's end, where cursors
// are) and goes on by version on the stream's own index.
constexpr std::string_view read_one_stream_forward_sql = "WITH h AS (" KEEL_HORIZON R"sql(), start AS (
  SELECT coalesce((SELECT e.version FROM keel_events e
                   WHERE e.stream = $5 AND (e.transaction_id, e.position) <= ($1, $2)
                   ORDER BY e.version DESC LIMIT 1), -1) AS version
)
)sql" KEEL_HEAD_ROW R"sql(
  FROM keel_events e
  WHERE e.stream = $5 AND e.version > (SELECT version FROM start) AND )sql" KEEL_BELOW_HORIZON
                                                         " AND " KEEL_OF_TYPES R"sql(
  ORDER BY e.version LIMIT $3))sql";
#undef KEEL_HEAD_ROW
#undef KEEL_BELOW_HORIZON
#undef KEEL_OF_TYPES

// The oldest transaction holding an id, what it holds back, and who runs it.
constexpr std::string_view horizon_sql = "WITH h AS (" KEEL_HORIZON R"sql()
SELECT h.horizon,
       (SELECT count(*) FROM (SELECT 1 FROM keel_events e WHERE e.transaction_id >= h.horizon LIMIT 1000000) w),
       coalesce(o.age, 0), coalesce(o.pid, 0)
FROM h LEFT JOIN LATERAL (
  SELECT extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS age, a.pid
  FROM pg_stat_activity a
  WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL
  ORDER BY a.xact_start LIMIT 1) o ON true)sql";
#undef KEEL_HORIZON
#undef KEEL_EVENT_COLUMNS

constexpr std::string_view set_settings_sql = R"sql(
INSERT INTO keel_events_streams AS s (name, category, max_count, max_age_seconds, truncate_before, custom)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (name) DO UPDATE SET max_count = $3, max_age_seconds = $4, truncate_before = $5, custom = $6::jsonb,
  updated_at = now())sql";

// A tombstone may be laid on a stream that never had events: the row is reserved first.
constexpr std::string_view reserve_stream_sql =
    "INSERT INTO keel_events_streams (name, category) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

// $1 stream, $2 kind (0 any, 1 no_stream, 2 stream_exists, 3 exact), $3 version, $4 tombstone.
constexpr std::string_view delete_sql = R"sql(
WITH current AS (
  SELECT version, tombstoned FROM keel_events_streams WHERE name = $1
), deleted AS (
  UPDATE keel_events_streams s SET deleted = NOT $4 OR s.deleted, tombstoned = $4,
    truncate_before = greatest(s.truncate_before, s.version + 1), updated_at = now()
  WHERE s.name = $1 AND NOT s.tombstoned AND CASE $2
      WHEN 0 THEN true
      WHEN 1 THEN s.version = -1 OR s.deleted
      WHEN 2 THEN s.version >= 0 AND NOT s.deleted
      ELSE s.version = $3 END
  RETURNING s.version
)
SELECT (SELECT count(*) FROM deleted) > 0, coalesce(c.version, -1), coalesce(c.tombstoned, false)
FROM (SELECT 1) one LEFT JOIN current c ON true)sql";

constexpr std::string_view scavenge_sql = R"sql(
WITH doomed AS (
  SELECT e.transaction_id, e.position
  FROM keel_events_streams s JOIN keel_events e ON e.stream = s.name
  WHERE (s.truncate_before > 0 OR s.max_count IS NOT NULL OR s.max_age_seconds IS NOT NULL)
    AND (e.version < greatest(s.truncate_before, s.version - coalesce(s.max_count, s.version + 1) + 1)
         OR (s.max_age_seconds IS NOT NULL AND e.recorded_at < now() - s.max_age_seconds * interval '1 second'))
  LIMIT $1
)
DELETE FROM keel_events e USING doomed d WHERE e.transaction_id = d.transaction_id AND e.position = d.position)sql";

// ---------------------------------------------------------------------------------------------

bool valid_label(std::string_view text, std::size_t max_bytes, bool allow_space) noexcept {
  if (text.empty() || text.size() > max_bytes) return false;
  return std::none_of(text.begin(), text.end(), [allow_space](char ch) {
    const auto u = static_cast<unsigned char>(ch);
    return u < 0x20 || u == 0x7f || (!allow_space && u == ' ');
  });
}

bool valid_json(std::string_view text, bool object_only) {
  boost::system::error_code ec;
  const auto value = boost::json::parse(text, ec);
  return !ec && (!object_only || value.is_object());
}

int expected_kind_code(expected_version e) noexcept {
  return static_cast<int>(e.expect);
}

stream_status status_of(std::int64_t version, bool deleted, bool tombstoned) noexcept {
  if (tombstoned) return stream_status::tombstoned;
  if (deleted) return stream_status::deleted;
  return version < 0 ? stream_status::not_found : stream_status::active;
}

// Reads the event columns starting at `first`.
result<recorded_event> decode_event(const pg::row& r, std::size_t first) {
  auto fields = r.as<pg::uuid, std::string, std::string, pg::jsonb, pg::jsonb, std::int64_t, std::int64_t,
                     std::int64_t, timestamp>(first);
  if (!fields) return fields.error();
  auto& [id, stream, type, data, metadata, version, transaction, position, recorded_at] = *fields;
  return recorded_event{.id = id,
                        .stream = std::move(stream),
                        .type = std::move(type),
                        .data = std::move(data.text),
                        .metadata = std::move(metadata.text),
                        .version = version,
                        .position = {transaction, position},
                        .recorded_at = recorded_at};
}

// decode_event without allocating: the strings of `into` keep their capacity from call to call.
result<void> decode_event_into(const pg::row& r, std::size_t first, recorded_event& into) {
  auto fields = r.as<pg::uuid, std::string_view, std::string_view, std::string_view, std::string_view,
                     std::int64_t, std::int64_t, std::int64_t, timestamp>(first);
  if (!fields) return fields.error();
  const auto& [id, stream, type, data, metadata, version, transaction, position, recorded_at] = *fields;
  into.id = id;
  into.stream.assign(stream);
  into.type.assign(type);
  into.data.assign(data);
  into.metadata.assign(metadata);
  into.version = version;
  into.position = {transaction, position};
  into.recorded_at = recorded_at;
  return {};
}

bool is_id_collision(pg::connection& c, const error_code& ec) {
  return ec == pg::errc::unique_violation && c.last_error().constraint == "keel_events_id";
}

// One stream's append, as one statement (and a second one only when nothing was written, to say
// why). Runs in whatever transaction `c` is in.
result<append_result> append_one(pg::connection& c, std::string_view stream, expected_version expected,
                                 std::span<const new_event> events, bool notify) {
  std::vector<std::string> ids, types, data, metadata;
  ids.reserve(events.size());
  types.reserve(events.size());
  data.reserve(events.size());
  metadata.reserve(events.size());
  for (const auto& e : events) {
    ids.push_back(e.id ? e.id->to_string() : std::string());
    types.push_back(e.type);
    data.push_back(e.data);
    metadata.push_back(e.metadata);
  }
  const auto count = static_cast<std::int64_t>(events.size());
  auto rows = c.query(append_sql(expected.expect, notify), stream, category_of(stream), expected.version, ids,
                      types, data, metadata);
  if (!rows) return rows.error();

  append_result out{.stream = std::string(stream)};
  if (rows->empty()) {
    // Nothing written: the stream was not as expected, or it is tombstoned.
    auto state = c.query(stream_row_sql, stream);
    if (!state) return state.error();
    if (!state->empty()) {
      auto fields = (*state)[0].as<std::int64_t, bool, bool>();
      if (!fields) return fields.error();
      if (std::get<2>(*fields)) return errc::stream_deleted;
      out.version = std::get<0>(*fields);
    }
    out.status = append_status::wrong_expected_version;
    return out;
  }

  struct written {
    bool existed;
    std::int64_t ord, version, transaction, position;
    bool same;
  };
  std::vector<written> got;
  got.reserve(rows->size());
  for (const auto r : *rows) {
    auto f = r.as<bool, std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool>();
    if (!f) return f.error();
    auto [existed, ord, version, transaction, position, same] = *f;
    got.push_back({existed, ord, version, transaction, position, same});
  }
  if (got.front().existed) {
    // Some ids were stored already. A retry of the same batch gets the original result; anything
    // else (other content, another stream, part of the batch) is refused.
    if (static_cast<std::int64_t>(got.size()) != count) return errc::duplicate_event_id;
    std::sort(got.begin(), got.end(), [](const written& a, const written& b) { return a.ord < b.ord; });
    for (std::size_t k = 0; k < got.size(); ++k) {
      const bool consecutive = k == 0 || got[k].version == got[k - 1].version + 1;
      if (!got[k].existed || !got[k].same || !consecutive) return errc::duplicate_event_id;
    }
    out.status = append_status::already_appended;
  } else {
    std::sort(got.begin(), got.end(),
              [](const written& a, const written& b) { return a.version < b.version; });
    out.status = append_status::appended;
  }
  KEEL_ASSERT(static_cast<std::int64_t>(got.size()) == count);
  out.versions.reserve(got.size());
  out.positions.reserve(got.size());
  for (const auto& w : got) {
    KEEL_ASSERT(out.versions.empty() || w.version == out.versions.back() + 1);
    out.versions.push_back(w.version);
    out.positions.push_back({w.transaction, w.position});
  }
  out.version = out.versions.back();
  KEEL_ASSERT(out.status != append_status::appended || expected.expect != expected_version::kind::exact ||
              out.versions.front() == expected.version + 1);
  return out;
}

// The events an append just wrote to a stream. $1 stream, $2/$3 the first and last version.
constexpr std::string_view written_events_sql =
    "SELECT e.id, e.stream, e.type, e.data, e.metadata, e.version, e.transaction_id, e.position, "
    "e.recorded_at "
    "FROM keel_events e WHERE e.stream = $1 AND e.version BETWEEN $2 AND $3 ORDER BY e.version";

// Runs `body` in a transaction of its own, or in a savepoint of the caller's transaction; an
// error or an exception undoes what it did.
template <class T, class Body>
result<T> atomically(pg::connection& c, const Body& body) {
  const bool own = !c.in_transaction();
  const auto undo = [&] {
    (void)c.execute(own ? "ROLLBACK" : "ROLLBACK TO SAVEPOINT keel_events_append");
    if (!own) (void)c.execute("RELEASE SAVEPOINT keel_events_append");
  };
  if (auto begun = c.execute(own ? "BEGIN" : "SAVEPOINT keel_events_append"); !begun) return begun.error();
  const auto run = [&]() -> result<T> {
    try {
      return body();
    } catch (...) {
      undo();
      throw;
    }
  };
  auto out = run();
  if (!out) {
    undo();
    return out;
  }
  if (auto done = c.execute(own ? "COMMIT" : "RELEASE SAVEPOINT keel_events_append"); !done)
    return done.error();
  return out;
}

result<void> check_read_size(std::size_t max_count, const store_options& options) {
  if (max_count == 0 || max_count > options.max_page_events) return errc::invalid_read;
  return {};
}

}  // namespace

std::span<const pg::migration> migrations() noexcept {
  return events_migrations;
}

result<pg::migration_report> migrate(pg::connection& c) {
  return pg::migrate(c, "events", events_migrations);
}

result<void> validate_stream_name(std::string_view stream) noexcept {
  if (!valid_label(stream, max_stream_name_bytes, false) || stream.front() == '$')
    return errc::invalid_stream_name;
  return {};
}

result<void> validate_checkpoint_name(std::string_view name) noexcept {
  if (!valid_label(name, max_stream_name_bytes, true)) return errc::invalid_checkpoint_name;
  return {};
}

std::string_view category_of(std::string_view stream) noexcept {
  return stream.substr(0, stream.find('-'));
}

std::string all_position::to_string() const {
  return std::to_string(transaction) + "/" + std::to_string(position);
}

result<all_position> all_position::parse(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return errc::invalid_position;
  all_position p;
  const auto read = [](std::string_view part, std::int64_t& value) {
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    return ec == std::errc() && end == part.data() + part.size() && !part.empty() && value >= 0;
  };
  if (!read(text.substr(0, slash), p.transaction) || !read(text.substr(slash + 1), p.position)) {
    return errc::invalid_position;
  }
  return p;
}

std::string to_string(expected_version e) {
  switch (e.expect) {
    case expected_version::kind::any:
      return "any";
    case expected_version::kind::no_stream:
      return "no_stream";
    case expected_version::kind::stream_exists:
      return "stream_exists";
    case expected_version::kind::exact:
      return std::to_string(e.version);
  }
  return "?";
}

result<void> store::check_batch(std::string_view stream, std::span<const new_event> events) const {
  if (auto named = validate_stream_name(stream); !named) return named;
  if (events.empty()) return errc::empty_batch;
  if (events.size() > options_.max_batch_events) return errc::batch_too_large;
  std::vector<pg::uuid> ids;
  for (const auto& e : events) {
    if (!valid_label(e.type, max_event_type_bytes, true)) return errc::invalid_event_type;
    if (e.data.size() + e.metadata.size() > options_.max_event_bytes) return errc::event_too_large;
    if (!valid_json(e.data, false) || !valid_json(e.metadata, true)) return errc::invalid_json;
    if (e.id) ids.push_back(*e.id);
  }
  std::sort(ids.begin(), ids.end(), [](const pg::uuid& a, const pg::uuid& b) { return a.bytes < b.bytes; });
  if (std::adjacent_find(ids.begin(), ids.end()) != ids.end()) return errc::duplicate_event_id;
  return {};
}

bool store::projects_inline(std::string_view stream) const noexcept {
  const auto category = category_of(stream);
  return std::any_of(
      options_.inline_projections.begin(), options_.inline_projections.end(),
      [&](const inline_projection& p) { return p.category.empty() || p.category == category; });
}

// Reads back what the append wrote (ids, recorded time, data as stored) and runs each inline
// projection of the stream's category on its types, in the append's transaction.
result<void> store::project_inline(pg::connection& c, const append_result& written) const {
  if (written.status != append_status::appended || !projects_inline(written.stream)) return {};
  auto rows = c.query(written_events_sql, written.stream, written.versions.front(), written.versions.back());
  if (!rows) return rows.error();
  std::vector<recorded_event> stored;
  stored.reserve(rows->size());
  for (const auto r : *rows) {
    auto e = decode_event(r, 0);
    if (!e) return e.error();
    if (options_.upcast != nullptr) {
      if (auto up = options_.upcast->apply(*e); !up) return up.error();
    }
    stored.push_back(std::move(*e));
  }
  KEEL_ASSERT(stored.size() == written.versions.size());
  const auto category = category_of(written.stream);
  std::vector<recorded_event> selected;
  for (const auto& p : options_.inline_projections) {
    if (!p.category.empty() && p.category != category) continue;
    std::span<const recorded_event> events = stored;
    if (!p.types.empty()) {
      selected.clear();
      std::copy_if(stored.begin(), stored.end(), std::back_inserter(selected), [&](const recorded_event& e) {
        return std::find(p.types.begin(), p.types.end(), e.type) != p.types.end();
      });
      if (selected.empty()) continue;
      events = selected;
    }
    auto applied = p.apply(c, events);
    if (applied && c.in_failed_transaction()) applied = pg::errc::transaction_aborted;
    if (!applied) {
      log::warn("events inline projection failed: the append is undone",
                {{"projection", p.name}, {"stream", written.stream}, {"error", applied.error().message()}});
      return applied;
    }
  }
  return {};
}

result<append_result> store::append(pg::connection& c, std::string_view stream, expected_version expected,
                                    std::span<const new_event> events) const {
  if (auto checked = check_batch(stream, events); !checked) return checked.error();
  if (expected.expect == expected_version::kind::exact && expected.version < 0)
    return errc::invalid_expected_version;
  const bool own_transaction = !c.in_transaction();
  bool id_collision = false;
  const auto attempt = [&]() -> result<append_result> {
    if (!projects_inline(stream)) {
      auto one = append_one(c, stream, expected, events, options_.notify);
      if (!one) id_collision = is_id_collision(c, one.error());
      return one;
    }
    // The events and the inline projections' writes in one transaction (a savepoint in the
    // caller's).
    return atomically<append_result>(c, [&]() -> result<append_result> {
      auto one = append_one(c, stream, expected, events, options_.notify);
      if (!one) {
        id_collision = is_id_collision(c, one.error());
        return one;
      }
      if (auto projected = project_inline(c, *one); !projected) return projected.error();
      return one;
    });
  };
  auto outcome = attempt();
  // The same ids sent twice at once: both statements saw none of them stored, and the one that
  // committed second hit the id constraint. Outside a transaction it can look again and find the
  // first one's result (inside the caller's, the failed statement has aborted it).
  if (!outcome && own_transaction && id_collision) outcome = attempt();
  if (outcome && options_.metrics != nullptr) {
    if (outcome->status == append_status::appended) options_.metrics->appended(outcome->versions.size());
    if (outcome->status == append_status::wrong_expected_version) options_.metrics->conflict();
  }
  return outcome;
}

result<multi_append_result> store::append_many(pg::connection& c,
                                               std::span<const stream_append> appends) const {
  for (const auto& a : appends) {
    if (auto checked = check_batch(a.stream, a.events); !checked) return checked.error();
    if (a.expected.expect == expected_version::kind::exact && a.expected.version < 0) {
      return errc::invalid_expected_version;
    }
  }
  // Streams are locked in name order, so two multi-stream appends never wait for each other in
  // a cycle.
  std::vector<std::size_t> order(appends.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return appends[a].stream < appends[b].stream; });

  const bool own_transaction = !c.in_transaction();
  const std::string_view begin_sql = own_transaction ? "BEGIN" : "SAVEPOINT keel_events_append";
  const std::string_view undo_sql = own_transaction ? "ROLLBACK" : "ROLLBACK TO SAVEPOINT keel_events_append";
  const std::string_view done_sql = own_transaction ? "COMMIT" : "RELEASE SAVEPOINT keel_events_append";
  if (auto begun = c.execute(begin_sql); !begun) return begun.error();

  multi_append_result out;
  out.streams.resize(appends.size());
  bool conflict = false;
  for (const auto k : order) {
    auto one = append_one(c, appends[k].stream, appends[k].expected, appends[k].events, options_.notify);
    if (!one) {
      const auto failure = one.error();
      (void)c.execute(undo_sql);
      if (!own_transaction) (void)c.execute("RELEASE SAVEPOINT keel_events_append");
      return failure;
    }
    conflict = conflict || !*one;
    out.streams[k] = std::move(*one);
  }
  if (conflict) {
    // Undo the streams that were written; report every conflict found, and the others as not
    // written.
    if (auto undone = c.execute(undo_sql); !undone) return undone.error();
    if (!own_transaction) (void)c.execute("RELEASE SAVEPOINT keel_events_append");
    for (auto& s : out.streams) {
      if (s.status == append_status::wrong_expected_version) continue;
      s.status = append_status::not_written;
      s.versions.clear();
      s.positions.clear();
    }
    return out;
  }
  const auto undo = [&] {
    (void)c.execute(undo_sql);
    if (!own_transaction) (void)c.execute("RELEASE SAVEPOINT keel_events_append");
  };
  for (const auto& one : out.streams) {
    result<void> projected;
    try {
      projected = project_inline(c, one);
    } catch (...) {
      undo();
      throw;
    }
    if (!projected) {
      undo();
      return projected.error();
    }
  }
  if (auto done = c.execute(done_sql); !done) return done.error();
  if (options_.metrics != nullptr) {
    for (const auto& one : out.streams) {
      if (one.status == append_status::appended) options_.metrics->appended(one.versions.size());
    }
  }
  return out;
}

result<stream_page> store::read_stream(pg::connection& c, std::string_view stream,
                                       const stream_read& read) const {
  if (auto named = validate_stream_name(stream); !named) return named.error();
  if (auto sized = check_read_size(read.max_count, options_); !sized) return sized.error();
  const bool forward = read.dir == direction::forward;
  if (forward && read.from_version < 0) return errc::invalid_read;
  auto rows = c.query(forward ? read_stream_sql_forward : read_stream_sql_backward, stream, read.from_version,
                      static_cast<std::int64_t>(read.max_count), read.types);
  if (!rows) return rows.error();
  stream_page page;
  if (rows->empty()) return page;  // no such stream
  {
    auto head = (*rows)[0].as<std::int64_t, bool, bool>();
    if (!head) return head.error();
    const auto [version, deleted, tombstoned] = *head;
    page.status = status_of(version, deleted, tombstoned);
    page.last_version = version;
  }
  page.events.reserve(rows->size());
  for (const auto r : *rows) {
    if (r.is_null(3)) break;  // the stream row alone: no events in range
    auto e = decode_event(r, 3);
    if (!e) return e.error();
    if (options_.upcast != nullptr) {
      if (auto up = options_.upcast->apply(*e); !up) return up.error();
    }
    KEEL_ASSERT(page.events.empty() || (forward ? e->version > page.events.back().version
                                                : e->version < page.events.back().version));
    page.events.push_back(std::move(*e));
  }
  page.end_of_stream = page.events.size() < read.max_count;
  if (!page.events.empty()) {
    page.next_version = forward ? page.events.back().version + 1 : page.events.back().version - 1;
  } else {
    page.next_version = read.from_version;
  }
  if (!forward && page.next_version < 0) page.end_of_stream = true;
  if (options_.metrics != nullptr) options_.metrics->read(page.events.size());
  return page;
}

namespace {

// The statement and parameters of one page of the global order after (or before) `from`.
result<std::pair<std::string_view, pg::params>> all_statement(const all_read& read, all_position from) {
  const bool forward = read.dir == direction::forward;
  std::string_view sql;
  if (!read.stream.empty()) {
    if (!read.category.empty() || !forward) return errc::invalid_read;  // backward: use read_stream
    if (auto named = validate_stream_name(read.stream); !named) return named.error();
    sql = read_one_stream_forward_sql;
  } else if (read.category.empty()) {
    sql = forward ? read_all_forward_sql : read_all_backward_sql;
  } else {
    if (auto named = validate_stream_name(read.category);
        !named || read.category.find('-') != std::string::npos) {
      return errc::invalid_stream_name;
    }
    sql = forward ? read_category_forward_sql : read_category_backward_sql;
  }
  pg::params values(from.transaction, from.position, static_cast<std::int64_t>(read.max_count), read.types);
  if (!read.stream.empty()) {
    values.add(read.stream);
  } else if (!read.category.empty()) {
    values.add(read.category);
  }
  return std::pair{sql, std::move(values)};
}

// The horizon from a read's head row (see KEEL_HEAD_ROW), which comes before the events.
result<std::int64_t> horizon_of(const pg::rows& rows) {
  if (rows.empty() || rows[0].is_null(0) || !rows[0].is_null(1)) return pg::errc::out_of_range;
  return rows[0].get<std::int64_t>(0);
}

}  // namespace

result<all_page> store::read_all(pg::connection& c, const all_read& read) const {
  if (auto sized = check_read_size(read.max_count, options_); !sized) return sized.error();
  const bool forward = read.dir == direction::forward;
  auto statement = all_statement(read, read.after);
  if (!statement) return statement.error();
  auto rows = c.query_params(statement->first, statement->second);
  if (!rows) return rows.error();
  all_page page;
  auto horizon = horizon_of(*rows);
  if (!horizon) return horizon.error();
  page.horizon = *horizon;
  page.events.reserve(rows->size() - 1);
  for (std::size_t i = 1; i < rows->size(); ++i) {
    auto e = decode_event((*rows)[i], 1);
    if (!e) return e.error();
    if (options_.upcast != nullptr) {
      if (auto up = options_.upcast->apply(*e); !up) return up.error();
    }
    KEEL_ASSERT(e->position.transaction < page.horizon);
    KEEL_ASSERT(forward ? e->position > read.after : e->position < read.after);
    KEEL_ASSERT(page.events.empty() || (forward ? e->position > page.events.back().position
                                                : e->position < page.events.back().position));
    page.events.push_back(std::move(*e));
  }
  page.next = page.events.empty() ? read.after : page.events.back().position;
  if (forward && page.events.size() < read.max_count) {
    // Everything below the horizon was scanned: continue from there, not from the last match.
    page.caught_up = true;
    page.next = std::max(page.next, all_position{page.horizon, 0});
  }
  static_assert(event_column_count == 9);
  if (options_.metrics != nullptr) options_.metrics->read(page.events.size());
  return page;
}

// Rows handled between reads of the next page from the socket: a page of a few hundred rows
// fits the socket's buffer, and each read is one non-blocking recv.
constexpr std::size_t read_ahead_every = 256;

result<all_position> store::for_each(pg::connection& c, const all_read& read,
                                     const std::function<bool(const recorded_event&)>& handle) const {
  if (auto sized = check_read_size(read.max_count, options_); !sized) return sized.error();
  if (read.dir != direction::forward) return errc::invalid_read;
  auto first = all_statement(read, read.after);
  if (!first) return first.error();
  if (auto sent = c.send_params(first->first, first->second); !sent) return sent.error();
  all_position at = read.after;
  recorded_event event;
  for (;;) {
    auto rows = c.receive();
    if (!rows) return rows.error();
    auto horizon = horizon_of(*rows);
    if (!horizon) return horizon.error();
    const std::size_t events = rows->size() - 1;
    const bool full = events == read.max_count;
    if (full) {
      // Ask for the next page now, from this page's last event, and decode this one meanwhile.
      auto last = (*rows)[rows->size() - 1].as<std::int64_t, std::int64_t>(7);
      if (!last) return last.error();
      auto next = all_statement(read, {std::get<0>(*last), std::get<1>(*last)});
      if (!next) return next.error();
      if (auto sent = c.send_params(next->first, next->second); !sent) return sent.error();
    }
    for (std::size_t i = 1; i <= events; ++i) {
      // Take the next page from the socket as it arrives, or the server waits on a full socket
      // while this page is handled (a tenth or more of the read rate on one connection).
      if (full && i % read_ahead_every == 0) c.read_ahead();
      auto decoded = decode_event_into((*rows)[i], 1, event);
      if (decoded && options_.upcast != nullptr) decoded = options_.upcast->apply(event);
      if (!decoded) {
        if (c.awaiting_answer()) (void)c.receive();
        return decoded.error();
      }
      KEEL_ASSERT(event.position > at && event.position.transaction < *horizon);
      at = event.position;
      if (options_.metrics != nullptr) options_.metrics->read(1);
      if (!handle(event)) {
        if (c.awaiting_answer()) (void)c.receive();  // the page asked for ahead is not needed
        return at;
      }
    }
    if (!full) return std::max(at, all_position{*horizon, 0});
  }
}

result<horizon_status> store::horizon(pg::connection& c) const {
  auto rows = c.query(horizon_sql);
  if (!rows) return rows.error();
  auto f = (*rows)[0].as<std::int64_t, std::int64_t, double, std::int32_t>();
  if (!f) return f.error();
  const auto [horizon, waiting, age, pid] = *f;
  return horizon_status{.horizon = horizon,
                        .events_waiting = waiting,
                        .oldest_transaction_seconds = age,
                        .oldest_transaction_pid = pid};
}

result<stream_info> store::stream(pg::connection& c, std::string_view stream) const {
  if (auto named = validate_stream_name(stream); !named) return named.error();
  auto rows = c.query(stream_row_sql, stream);
  if (!rows) return rows.error();
  stream_info info;
  if (rows->empty()) return info;
  auto f = (*rows)[0]
               .as<std::int64_t, bool, bool, std::int64_t, std::optional<std::int64_t>,
                   std::optional<std::int64_t>, pg::jsonb>();
  if (!f) return f.error();
  auto& [version, deleted, tombstoned, truncate_before, max_count, max_age, custom] = *f;
  info.status = status_of(version, deleted, tombstoned);
  info.last_version = version;
  info.settings.truncate_before = truncate_before;
  info.settings.max_count = max_count;
  if (max_age) info.settings.max_age = std::chrono::seconds(*max_age);
  info.settings.custom = std::move(custom.text);
  return info;
}

result<void> store::set_stream_settings(pg::connection& c, std::string_view stream,
                                        const stream_settings& settings) const {
  if (auto named = validate_stream_name(stream); !named) return named;
  if ((settings.max_count && *settings.max_count < 0) ||
      (settings.max_age && settings.max_age->count() < 0) || settings.truncate_before < 0 ||
      !valid_json(settings.custom, true)) {
    return errc::invalid_metadata;
  }
  std::optional<std::int64_t> max_age;
  if (settings.max_age) max_age = settings.max_age->count();
  auto done = c.query(set_settings_sql, stream, category_of(stream), settings.max_count, max_age,
                      settings.truncate_before, settings.custom);
  if (!done) return done.error();
  return {};
}

result<delete_result> store::delete_stream(pg::connection& c, std::string_view stream,
                                           expected_version expected, delete_mode mode) const {
  if (auto named = validate_stream_name(stream); !named) return named.error();
  if (expected.expect == expected_version::kind::exact && expected.version < 0)
    return errc::invalid_expected_version;
  const bool tombstone = mode == delete_mode::tombstone;
  if (tombstone && (expected.expect == expected_version::kind::any ||
                    expected.expect == expected_version::kind::no_stream)) {
    if (auto reserved = c.query(reserve_stream_sql, stream, category_of(stream)); !reserved)
      return reserved.error();
  }
  auto rows = c.query(delete_sql, stream, expected_kind_code(expected), expected.version, tombstone);
  if (!rows) return rows.error();
  auto f = (*rows)[0].as<bool, std::int64_t, bool>();
  if (!f) return f.error();
  const auto [deleted, version, tombstoned] = *f;
  if (!deleted && tombstoned) return errc::stream_deleted;
  return delete_result{.deleted = deleted, .version = version};
}

result<std::optional<all_position>> store::checkpoint(pg::connection& c, std::string_view name) const {
  if (auto named = validate_checkpoint_name(name); !named) return named.error();
  auto rows = c.query("SELECT transaction_id, position FROM keel_events_checkpoints WHERE name = $1", name);
  if (!rows) return rows.error();
  if (rows->empty()) return std::optional<all_position>{};
  auto f = (*rows)[0].as<std::int64_t, std::int64_t>();
  if (!f) return f.error();
  return std::optional<all_position>{all_position{std::get<0>(*f), std::get<1>(*f)}};
}

result<void> store::save_checkpoint(pg::connection& c, std::string_view name, all_position position) const {
  if (auto named = validate_checkpoint_name(name); !named) return named;
  auto saved = c.query(
      "INSERT INTO keel_events_checkpoints AS k (name, transaction_id, position) VALUES ($1, $2, $3) "
      "ON CONFLICT (name) DO UPDATE SET transaction_id = $2, position = $3, updated_at = now()",
      name, position.transaction, position.position);
  if (!saved) return saved.error();
  return {};
}

result<std::vector<checkpoint_info>> store::checkpoints(pg::connection& c) const {
  auto rows = c.query(
      "SELECT name, transaction_id, position, updated_at FROM keel_events_checkpoints ORDER BY name LIMIT "
      "1000");
  if (!rows) return rows.error();
  std::vector<checkpoint_info> out;
  for (const auto r : *rows) {
    auto f = r.as<std::string, std::int64_t, std::int64_t, timestamp>();
    if (!f) return f.error();
    auto& [name, transaction, position, updated_at] = *f;
    out.push_back({.name = std::move(name), .position = {transaction, position}, .updated_at = updated_at});
  }
  return out;
}

result<std::vector<stream_summary>> store::list_streams(pg::connection& c, std::string_view category,
                                                        std::string_view after, std::size_t limit) const {
  if (auto sized = check_read_size(limit, options_); !sized) return sized.error();
  if (!category.empty() &&
      (!validate_stream_name(category) || category.find('-') != std::string_view::npos)) {
    return errc::invalid_stream_name;
  }
  auto rows = c.query(
      "SELECT name, version, deleted, tombstoned, updated_at FROM keel_events_streams "
      "WHERE name > $1 AND ($2 = '' OR category = $2) AND (version >= 0 OR tombstoned) ORDER BY name LIMIT "
      "$3",
      after, category, static_cast<std::int64_t>(limit));
  if (!rows) return rows.error();
  std::vector<stream_summary> out;
  for (const auto r : *rows) {
    auto f = r.as<std::string, std::int64_t, bool, bool, timestamp>();
    if (!f) return f.error();
    auto& [name, version, deleted, tombstoned, updated_at] = *f;
    out.push_back({.name = std::move(name),
                   .status = status_of(version, deleted, tombstoned),
                   .last_version = version,
                   .updated_at = updated_at});
  }
  return out;
}

namespace {

// Under the sequencer row's lock: the next events after its cursor, below the horizon, get the
// next numbers, and the cursor moves to the last of them. The horizon is read in the statement's
// snapshot, taken before the lock gave this transaction an id, so it is not held back by it.
constexpr std::string_view assign_sequence_sql = R"sql(
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon),
cur AS (
  SELECT last_sequence, transaction_id, position FROM keel_events_sequencer WHERE id = 1 FOR UPDATE
), next AS (
  SELECT e.transaction_id, e.position,
         c.last_sequence + row_number() OVER (ORDER BY e.transaction_id, e.position) AS sequence
  FROM cur c, h, LATERAL (
    SELECT e.transaction_id, e.position FROM keel_events e
    WHERE (e.transaction_id, e.position) > (c.transaction_id, c.position) AND e.transaction_id < h.horizon
    ORDER BY e.transaction_id, e.position LIMIT $1) e
), numbered AS (
  INSERT INTO keel_events_sequence (sequence, transaction_id, position)
  SELECT sequence, transaction_id, position FROM next
  RETURNING sequence, transaction_id, position
), moved AS (
  UPDATE keel_events_sequencer s SET last_sequence = l.sequence, transaction_id = l.transaction_id,
    position = l.position
  FROM (SELECT * FROM numbered ORDER BY sequence DESC LIMIT 1) l
  WHERE s.id = 1
  RETURNING s.last_sequence
)
SELECT (SELECT count(*) FROM numbered), coalesce((SELECT last_sequence FROM moved), (SELECT last_sequence FROM cur)))sql";

constexpr std::string_view read_sequenced_sql = R"sql(
SELECT s.sequence, )sql"
                                                "e.id, e.stream, e.type, e.data, e.metadata, e.version, "
                                                "e.transaction_id, e.position, e.recorded_at"
                                                R"sql(
FROM keel_events_sequence s JOIN keel_events e ON e.transaction_id = s.transaction_id AND e.position = s.position
WHERE s.sequence > $1 ORDER BY s.sequence LIMIT $2)sql";

}  // namespace

result<sequence_report> store::assign_sequence(pg::connection& c, std::size_t limit) const {
  if (auto sized = check_read_size(limit, options_); !sized) return sized.error();
  auto rows = c.query(assign_sequence_sql, static_cast<std::int64_t>(limit));
  if (!rows) return rows.error();
  auto f = (*rows)[0].as<std::int64_t, std::int64_t>();
  if (!f) return f.error();
  const auto [numbered, last] = *f;
  return sequence_report{.assigned = static_cast<std::uint64_t>(numbered),
                         .last_sequence = last,
                         .more = static_cast<std::size_t>(numbered) >= limit};
}

result<sequenced_page> store::read_sequenced(pg::connection& c, std::int64_t after,
                                             std::size_t max_count) const {
  if (auto sized = check_read_size(max_count, options_); !sized) return sized.error();
  auto rows = c.query(read_sequenced_sql, after, static_cast<std::int64_t>(max_count));
  if (!rows) return rows.error();
  sequenced_page page;
  page.next = after;
  page.events.reserve(rows->size());
  for (const auto r : *rows) {
    auto sequence = r.get<std::int64_t>(0);
    if (!sequence) return sequence.error();
    auto e = decode_event(r, 1);
    if (!e) return e.error();
    if (options_.upcast != nullptr) {
      if (auto up = options_.upcast->apply(*e); !up) return up.error();
    }
    // Dense: each number follows the last (scavenging is the one thing that removes rows).
    KEEL_ASSERT(*sequence > page.next);
    page.next = *sequence;
    page.events.push_back({*sequence, std::move(*e)});
  }
  page.caught_up = page.events.size() < max_count;
  if (options_.metrics != nullptr) options_.metrics->read(page.events.size());
  return page;
}

result<std::int64_t> store::last_position(pg::connection& c) const {
  // The identity column's sequence: last_value is the highest drawn (is_called false: none yet).
  auto rows = c.query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM keel_events_position_seq");
  if (!rows) return rows.error();
  return rows->value<std::int64_t>();
}

result<std::optional<snapshot>> store::load_snapshot(pg::connection& c, std::string_view stream) const {
  if (auto named = validate_stream_name(stream); !named) return named.error();
  auto rows =
      c.query("SELECT version, schema_version, state FROM keel_events_snapshots WHERE stream = $1", stream);
  if (!rows) return rows.error();
  if (rows->empty()) return std::optional<snapshot>{};
  auto f = (*rows)[0].as<std::int64_t, std::int32_t, std::string>();
  if (!f) return f.error();
  return std::optional<snapshot>{snapshot{
      .version = std::get<0>(*f), .schema_version = std::get<1>(*f), .state = std::move(std::get<2>(*f))}};
}

result<void> store::save_snapshot(pg::connection& c, std::string_view stream, const snapshot& s) const {
  if (auto named = validate_stream_name(stream); !named) return named;
  if (s.version < 0) return errc::invalid_expected_version;
  if (!valid_json(s.state, false)) return errc::invalid_json;
  auto saved = c.query(
      "INSERT INTO keel_events_snapshots AS k (stream, version, schema_version, state) VALUES ($1, $2, $3, "
      "$4::json) "
      "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, schema_version = "
      "excluded.schema_version, "
      "state = excluded.state, taken_at = now() WHERE excluded.version >= k.version",
      stream, s.version, s.schema_version, s.state);
  if (!saved) return saved.error();
  return {};
}

result<scavenge_report> store::scavenge(pg::connection& c, std::size_t limit) const {
  auto rows = c.query(scavenge_sql, static_cast<std::int64_t>(limit));
  if (!rows) return rows.error();
  return scavenge_report{.events_removed = rows->affected(), .more = rows->affected() >= limit};
}

}  // namespace keel::events
