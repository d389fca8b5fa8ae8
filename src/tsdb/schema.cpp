#include <keel/tsdb/schema.hpp>
#include <keel/tsdb/store.hpp>

#include <array>
#include <string_view>

namespace keel::tsdb {
namespace {

// Versions 1 and 2 are the SQL as it was applied (checksummed by keel::pg::migrate: never edit
// them); they create the tables under their first names, which version 3 renames.
constexpr std::string_view migration_1 = R"sql(
CREATE TABLE tsdb_series (
  id bigserial PRIMARY KEY,
  key text NOT NULL UNIQUE,
  metric text NOT NULL,
  label_names text[] NOT NULL,
  label_values text[] NOT NULL,
  policy smallint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tsdb_series_metric ON tsdb_series (metric);
CREATE TABLE tsdb_blocks (
  id bigserial PRIMARY KEY,
  series_id bigint NOT NULL REFERENCES tsdb_series (id) ON DELETE CASCADE,
  first_time bigint NOT NULL,
  last_time bigint NOT NULL,
  count integer NOT NULL,
  value_count integer NOT NULL,
  min float8 NOT NULL,
  max float8 NOT NULL,
  sum float8 NOT NULL,
  sum_squares float8 NOT NULL,
  first float8 NOT NULL,
  last float8 NOT NULL,
  data bytea NOT NULL
);
CREATE INDEX tsdb_blocks_range ON tsdb_blocks (series_id, first_time, last_time);
CREATE TABLE tsdb_rollups (
  series_id bigint NOT NULL REFERENCES tsdb_series (id) ON DELETE CASCADE,
  resolution bigint NOT NULL,
  bucket bigint NOT NULL,
  count bigint NOT NULL,
  sum float8 NOT NULL,
  sum_squares float8 NOT NULL,
  min float8 NOT NULL,
  max float8 NOT NULL,
  first float8 NOT NULL,
  last float8 NOT NULL,
  first_time bigint NOT NULL,
  last_time bigint NOT NULL,
  PRIMARY KEY (series_id, resolution, bucket)
);
CREATE TABLE tsdb_retention (
  metric text PRIMARY KEY,
  max_age bigint NOT NULL CHECK (max_age > 0)
);
)sql";

// Rollups become append-only segments: one row per seal, series and resolution holding a format
// byte and its buckets as 80-byte big-endian records (bucket, count, sum, sum_squares, min, max, first, last,
// first_time, last_time), merged on read; `replaces` marks a segment whose buckets replace those
// of older segments (a last_write_wins seal that overwrote stored points). The series row keeps
// the newest sealed time, so seals can check it under the row's lock. Existing rollup rows move
// into one segment per series and resolution.
constexpr std::string_view migration_2 = R"sql(
ALTER TABLE tsdb_series ADD COLUMN newest_time bigint;
UPDATE tsdb_series s SET newest_time = (SELECT max(last_time) FROM tsdb_blocks b WHERE b.series_id = s.id);
-- Version 1 added every sealed point to its rollup buckets, so a last_write_wins (policy 1)
-- series that overwrote a point counted it twice there. Its buckets up to what was stored are
-- not trusted: queries reaching back to them read the blocks.
ALTER TABLE tsdb_series ADD COLUMN rollups_exact_after bigint;
UPDATE tsdb_series s SET rollups_exact_after = s.newest_time
 WHERE s.policy = 1 AND EXISTS (SELECT 1 FROM tsdb_rollups r WHERE r.series_id = s.id);
CREATE TABLE tsdb_rollup_segments (
  id bigserial PRIMARY KEY,
  series_id bigint NOT NULL REFERENCES tsdb_series (id) ON DELETE CASCADE,
  resolution bigint NOT NULL,
  first_bucket bigint NOT NULL,
  last_bucket bigint NOT NULL,
  replaces boolean NOT NULL,
  data bytea NOT NULL
);
ALTER TABLE tsdb_rollup_segments ALTER COLUMN data SET STORAGE EXTERNAL;  -- compressed by the writer
CREATE INDEX tsdb_rollup_segments_range ON tsdb_rollup_segments (series_id, resolution, first_bucket);
INSERT INTO tsdb_rollup_segments (series_id, resolution, first_bucket, last_bucket, replaces, data)
SELECT series_id, resolution, min(bucket), max(bucket), false, '\x00'::bytea ||
       string_agg(int8send(bucket) || int8send(count) || float8send(sum) || float8send(sum_squares) ||
                  float8send(min) || float8send(max) || float8send(first) || float8send(last) ||
                  int8send(first_time) || int8send(last_time), ''::bytea ORDER BY bucket)
FROM tsdb_rollups GROUP BY series_id, resolution;
DROP TABLE tsdb_rollups;
)sql";

// The keel_<component>_* names every component uses. Renamed in place, so rows, sequences
// (their next values included), indexes and constraints carry over; column defaults, foreign keys
// and the migration's own records refer to tables by OID and follow. Nothing else names the old
// tables: keel::tsdb has no functions, triggers or views. The pg::migrate component stays "tsdb"
// and the maintenance election key stays "keel.tsdb.maintenance", so old and new processes still
// take the same locks.
constexpr std::string_view migration_3 = R"sql(
ALTER TABLE tsdb_series RENAME TO keel_tsdb_series;
ALTER SEQUENCE tsdb_series_id_seq RENAME TO keel_tsdb_series_id_seq;
ALTER TABLE keel_tsdb_series RENAME CONSTRAINT tsdb_series_pkey TO keel_tsdb_series_pkey;
ALTER TABLE keel_tsdb_series RENAME CONSTRAINT tsdb_series_key_key TO keel_tsdb_series_key_key;
ALTER INDEX tsdb_series_metric RENAME TO keel_tsdb_series_metric;
ALTER TABLE tsdb_blocks RENAME TO keel_tsdb_blocks;
ALTER SEQUENCE tsdb_blocks_id_seq RENAME TO keel_tsdb_blocks_id_seq;
ALTER TABLE keel_tsdb_blocks RENAME CONSTRAINT tsdb_blocks_pkey TO keel_tsdb_blocks_pkey;
ALTER TABLE keel_tsdb_blocks RENAME CONSTRAINT tsdb_blocks_series_id_fkey TO keel_tsdb_blocks_series_id_fkey;
ALTER INDEX tsdb_blocks_range RENAME TO keel_tsdb_blocks_range;
ALTER TABLE tsdb_rollup_segments RENAME TO keel_tsdb_rollup_segments;
ALTER SEQUENCE tsdb_rollup_segments_id_seq RENAME TO keel_tsdb_rollup_segments_id_seq;
ALTER TABLE keel_tsdb_rollup_segments RENAME CONSTRAINT tsdb_rollup_segments_pkey TO keel_tsdb_rollup_segments_pkey;
ALTER TABLE keel_tsdb_rollup_segments
  RENAME CONSTRAINT tsdb_rollup_segments_series_id_fkey TO keel_tsdb_rollup_segments_series_id_fkey;
ALTER INDEX tsdb_rollup_segments_range RENAME TO keel_tsdb_rollup_segments_range;
ALTER TABLE tsdb_retention RENAME TO keel_tsdb_retention;
ALTER TABLE keel_tsdb_retention RENAME CONSTRAINT tsdb_retention_pkey TO keel_tsdb_retention_pkey;
ALTER TABLE keel_tsdb_retention RENAME CONSTRAINT tsdb_retention_max_age_check TO keel_tsdb_retention_max_age_check;
)sql";

constexpr std::array<pg::migration, 3> all_migrations = {
    {{1, "series, blocks, rollups, retention", migration_1},
     {2, "rollup segments, newest sealed time per series", migration_2},
     {3, "tables renamed to keel_tsdb_*", migration_3}}};

}  // namespace

std::span<const pg::migration> migrations() noexcept {
  return all_migrations;
}

result<pg::migration_report> migrate(pg::connection& c) {
  return pg::migrate(c, "tsdb", all_migrations);
}

result<pg::migration_report> store::migrate(pg::connection& c) {
  return tsdb::migrate(c);
}

std::span<const pg::migration> store::migrations() noexcept {
  return tsdb::migrations();
}

}  // namespace keel::tsdb
