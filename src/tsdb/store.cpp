#include <keel/core/assert.hpp>
#include <keel/pg/copy.hpp>
#include <keel/pg/transaction.hpp>
#include <keel/tsdb/store.hpp>

#include <zstd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

namespace keel::tsdb {
namespace {

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

constexpr std::array<pg::migration, 2> all_migrations = {
    {{1, "series, blocks, rollups, retention", migration_1},
     {2, "rollup segments, newest sealed time per series", migration_2}}};

/// metric{name="value",...} with quotes and backslashes escaped: one text per series identity.
std::string series_key(std::string_view metric, const std::vector<label>& labels) {
  std::string key(metric);
  key += '{';
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (i != 0) key += ',';
    key += labels[i].name;
    key += "=\"";
    for (const char c : labels[i].value) {
      if (c == '"' || c == '\\') key += '\\';
      key += c;
    }
    key += '"';
  }
  key += '}';
  return key;
}

struct head {
  std::vector<std::int64_t> times;
  std::vector<double> values;
};

/// later - earlier for later >= earlier, exact even when the difference exceeds INT64_MAX.
std::uint64_t distance(std::int64_t earlier, std::int64_t later) noexcept {
  return static_cast<std::uint64_t>(later) - static_cast<std::uint64_t>(earlier);
}

/// The last time in the bucket of `resolution` holding `t` (INT64_MAX when the bucket reaches past it).
std::int64_t bucket_last(std::int64_t t, std::int64_t resolution) noexcept {
  const std::int64_t start = bucket_start(t, resolution);
  const std::uint64_t room = distance(start, std::numeric_limits<std::int64_t>::max());
  if (room < static_cast<std::uint64_t>(resolution - 1)) return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(start) +
                                   static_cast<std::uint64_t>(resolution - 1));
}

/// Whether the bucket starting at `start` ends at or before `cutoff` (start + resolution <= cutoff).
bool bucket_ends_by(std::int64_t start, std::int64_t resolution, std::int64_t cutoff) noexcept {
  return start < cutoff && distance(start, cutoff) >= static_cast<std::uint64_t>(resolution);
}

// Empty until the series has a point: every int64, INT64_MIN included, is a time.
using optional_time = std::optional<std::int64_t>;

void raise_to(optional_time& newest, std::int64_t t) noexcept {
  if (!newest || *newest < t) newest = t;
}

struct series_state {
  ordering policy = ordering::reject;
  optional_time newest;         ///< newest time stored (as last seen) or in the head
  optional_time sealed_newest;  ///< newest stored time as last seen
  head points;
};

/// Sorts by time (stably, so later writes stay later) and applies the policy to equal times.
void normalize(std::vector<std::int64_t>& times, std::vector<double>& values, ordering policy) {
  if (std::is_sorted(times.begin(), times.end()) && policy != ordering::last_write_wins) return;
  std::vector<std::size_t> order(times.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return times[a] < times[b]; });
  std::vector<std::int64_t> t;
  std::vector<double> v;
  t.reserve(times.size());
  v.reserve(times.size());
  for (const auto i : order) {
    if (policy == ordering::last_write_wins && !t.empty() && t.back() == times[i]) {
      v.back() = values[i];
      continue;
    }
    t.push_back(times[i]);
    v.push_back(values[i]);
  }
  times = std::move(t);
  values = std::move(v);
}

struct sealed_block {
  std::int64_t series;
  block_summary summary;
  double sum_squares;
  std::int32_t value_count;  ///< points whose value is not NaN (what aggregates count)
  bytes data;
};

struct rollup_row {
  std::int64_t series;
  std::int64_t resolution;
  bucket b;
};

}  // namespace

struct store::state {
  pg::connection conn;
  store_options options;
  std::unordered_map<std::string, std::int64_t> ids;
  std::map<std::int64_t, series_state> series;
  std::vector<rejected_points> rejected;
};

store::store(std::unique_ptr<state> s) noexcept : state_(std::move(s)) {}
store::store(store&&) noexcept = default;
store& store::operator=(store&&) noexcept = default;
store::~store() = default;

const store_options& store::options() const noexcept {
  return state_->options;
}
pg::connection& store::connection() noexcept {
  return state_->conn;
}

result<pg::migration_report> store::migrate(pg::connection& c) {
  return pg::migrate(c, "tsdb", all_migrations);
}

std::span<const pg::migration> store::migrations() noexcept {
  return all_migrations;
}

result<store> store::open(std::string_view conninfo, store_options options) {
  if (options.seal_count == 0 || options.seal_count > (1U << 24) - 1 || options.seal_span <= 0)
    return errc::invalid_argument;
  for (const auto r : options.rollups)
    if (r <= 0) return errc::invalid_argument;
  std::sort(options.rollups.begin(), options.rollups.end());
  auto c = pg::connection::connect(conninfo);
  if (!c) return c.error();
  return store(std::make_unique<state>(state{std::move(*c), std::move(options), {}, {}, {}}));
}

result<std::int64_t> store::series(std::string_view metric, std::vector<label> labels, ordering policy) {
  if (metric.empty()) return errc::invalid_argument;
  std::sort(labels.begin(), labels.end(), [](const label& a, const label& b) { return a.name < b.name; });
  std::vector<std::string> names;
  std::vector<std::string> values;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i].name.empty() || (i > 0 && labels[i].name == labels[i - 1].name))
      return errc::invalid_argument;
    names.push_back(labels[i].name);
    values.push_back(labels[i].value);
  }
  const std::string key = series_key(metric, labels);
  if (auto it = state_->ids.find(key); it != state_->ids.end()) return it->second;
  // Race-safe across processes: the unique key decides, and the loser reads the winner's row.
  auto r = state_->conn.query(
      "INSERT INTO tsdb_series (key, metric, label_names, label_values, policy) VALUES ($1, $2, $3, $4, $5) "
      "ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING id, policy",
      key, metric, names, values, static_cast<std::int16_t>(policy));
  if (!r) return r.error();
  const auto id = (*r)[0].get<std::int64_t>(0);
  const auto stored_policy = (*r)[0].get<std::int16_t>(1);
  if (!id || !stored_policy) return errc::invalid_argument;
  state_->ids.emplace(key, *id);
  auto& s = state_->series[*id];
  s.policy = static_cast<ordering>(*stored_policy);
  auto newest = state_->conn.query("SELECT newest_time FROM tsdb_series WHERE id = $1", *id);
  if (!newest) return newest.error();
  if (auto v = (*newest)[0].get<std::optional<std::int64_t>>(0); v && *v) {
    raise_to(s.newest, **v);
    raise_to(s.sealed_newest, **v);
  }
  return *id;
}

result<std::vector<series_info>> store::select(std::string_view metric, std::span<const matcher> matchers) {
  // The SQL text is fixed per operator; names, values and patterns travel only as parameters.
  std::string sql = "SELECT id, metric, label_names, label_values, policy FROM tsdb_series WHERE metric = $1";
  pg::params p;
  p.add(metric);
  int n = 1;
  for (const auto& m : matchers) {
    if (m.name.empty()) return errc::invalid_label_matcher;
    // Built with append: GCC 12 warns falsely (-Wrestrict) on "$" + std::to_string(...).
    std::string name(1, '$');
    name.append(std::to_string(++n));
    std::string value(1, '$');
    value.append(std::to_string(++n));
    const std::string label = "coalesce(label_values[array_position(label_names, " + name + "::text)], '')";
    switch (m.op) {
      case match::equal:
        sql += " AND " + label + " = " + value + "::text";
        break;
      case match::not_equal:
        sql += " AND " + label + " <> " + value + "::text";
        break;
      case match::regex:
        sql += " AND " + label + " ~ ('^(?:' || " + value + "::text || ')$')";
        break;
      case match::not_regex:
        sql += " AND " + label + " !~ ('^(?:' || " + value + "::text || ')$')";
        break;
    }
    p.add(m.name);
    p.add(m.value);
  }
  sql += " ORDER BY id";
  auto r = state_->conn.query_params(sql, p);
  if (!r) {
    if (state_->conn.last_error().sqlstate == "2201B") return errc::invalid_label_matcher;
    return r.error();
  }
  std::vector<series_info> out;
  for (const auto row : *r) {
    series_info s;
    s.id = row.get<std::int64_t>(0).value();
    s.metric = row.get<std::string>(1).value();
    const auto names = row.get<std::vector<std::string>>(2).value();
    const auto values = row.get<std::vector<std::string>>(3).value();
    for (std::size_t i = 0; i < names.size() && i < values.size(); ++i)
      s.labels.push_back({names[i], values[i]});
    s.policy = static_cast<ordering>(row.get<std::int16_t>(4).value());
    out.push_back(std::move(s));
  }
  return out;
}

namespace {

/// Blocks and rollup rows for a run of sorted points, cut by count and span.
void seal_points(std::int64_t series, const std::vector<std::int64_t>& times,
                 const std::vector<double>& values, const store_options& options,
                 std::span<const std::int64_t> resolutions, std::vector<sealed_block>& blocks,
                 std::vector<rollup_row>& rollups) {
  KEEL_ASSERT(times.size() == values.size(), "a head holds one value per time");
  KEEL_ASSERT(std::is_sorted(times.begin(), times.end()), "a head is sorted before it is sealed");
  std::size_t at = 0;
  while (at < times.size()) {
    std::size_t end = at + 1;
    while (end < times.size() && end - at < options.seal_count &&
           distance(times[at], times[end]) < static_cast<std::uint64_t>(options.seal_span))
      ++end;
    KEEL_ASSERT(end - at <= options.seal_count, "a block never holds more than seal_count points");
    const std::span<const std::int64_t> t(times.data() + at, end - at);
    const std::span<const double> v(values.data() + at, end - at);
    sealed_block b{series, summarize(t, v), 0, 0, encode_block(t, v, options.encoding).value()};
    for (const double x : v) {
      if (std::isnan(x)) continue;
      b.sum_squares += x * x;
      ++b.value_count;
    }
    blocks.push_back(std::move(b));
    for (const auto resolution : resolutions) {
      bucket current;
      bool open = false;
      for (std::size_t i = 0; i < t.size(); ++i) {
        const std::int64_t start = bucket_start(t[i], resolution);
        if (open && start != current.start) {
          if (current.count > 0) rollups.push_back({series, resolution, current});
          open = false;
        }
        if (!open) {
          current = bucket{};
          current.start = start;
          open = true;
        }
        current.add(t[i], v[i]);
      }
      if (open && current.count > 0) rollups.push_back({series, resolution, current});
    }
    at = end;
  }
}

/// Merges rollup rows with the same (series, resolution, bucket) — two blocks of one flush may
/// share a bucket — and orders them by key, so the upsert touches each row once and concurrent
/// writers lock rows in the same order.
void merge_rollups(std::vector<rollup_row>& rollups) {
  auto key_less = [](const rollup_row& a, const rollup_row& b) {
    return std::tie(a.series, a.resolution, a.b.start) < std::tie(b.series, b.resolution, b.b.start);
  };
  std::stable_sort(rollups.begin(), rollups.end(), key_less);
  std::size_t out = 0;
  for (std::size_t i = 0; i < rollups.size(); ++i) {
    if (out > 0 && !key_less(rollups[out - 1], rollups[i])) {
      rollups[out - 1].b.merge(rollups[i].b);
    } else {
      rollups[out++] = std::move(rollups[i]);
    }
  }
  rollups.resize(out);
}

// Sealed blocks and their summaries into tsdb_blocks, by binary COPY (inside the caller's
// transaction).
result<void> copy_blocks(pg::connection& c, const std::vector<sealed_block>& blocks) {
  auto copy = pg::copy_writer::start(c, "tsdb_blocks",
                                     {"series_id", "first_time", "last_time", "count", "value_count", "min",
                                      "max", "sum", "sum_squares", "first", "last", "data"});
  if (!copy) return copy.error();
  for (const auto& b : blocks) {
    const auto& s = b.summary;
    // All-NaN blocks have no min/max; store the NaNs, queries skip them via count checks.
    if (auto r = copy->write_row(b.series, s.first_time, s.last_time, static_cast<std::int32_t>(s.count),
                                 b.value_count, s.min, s.max, s.sum, b.sum_squares, s.first, s.last,
                                 bytes_view(b.data));
        !r)
      return r.error();
  }
  if (auto r = copy->finish(); !r) return r.error();
  return {};
}

// ---- rollup segments ---------------------------------------------------------------------------

constexpr std::size_t segment_record_size = 80;

void put_be(bytes& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}
std::uint64_t get_be(const std::uint8_t* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

void put_record(bytes& out, const bucket& b) {
  put_be(out, static_cast<std::uint64_t>(b.start));
  put_be(out, b.count);
  for (const double d : {b.sum, b.sum_squares, b.min, b.max, b.first, b.last})
    put_be(out, std::bit_cast<std::uint64_t>(d));
  put_be(out, static_cast<std::uint64_t>(b.first_time));
  put_be(out, static_cast<std::uint64_t>(b.last_time));
}

bucket get_record(const std::uint8_t* p) noexcept {
  bucket b;
  b.start = static_cast<std::int64_t>(get_be(p));
  b.count = get_be(p + 8);
  double* fields[] = {&b.sum, &b.sum_squares, &b.min, &b.max, &b.first, &b.last};
  for (std::size_t i = 0; i < 6; ++i) *fields[i] = std::bit_cast<double>(get_be(p + 16 + 8 * i));
  b.first_time = static_cast<std::int64_t>(get_be(p + 64));
  b.last_time = static_cast<std::int64_t>(get_be(p + 72));
  return b;
}

// A stored segment is one format byte and its records: 0 = the records as they are (what the
// migration from version 1 writes), 1 = one zstd frame of them (what seals write: a day of
// 1-minute buckets shrinks several times, and Postgres stores and logs that much less).
constexpr std::size_t max_segment_bytes = std::size_t{1} << 31;

bytes pack_segment(const bytes& records) {
  bytes out(1 + ZSTD_compressBound(records.size()));
  const std::size_t packed = ZSTD_compress(out.data() + 1, out.size() - 1, records.data(), records.size(), 1);
  if (ZSTD_isError(packed) || packed >= records.size()) {
    out.assign(1, 0);
    out.insert(out.end(), records.begin(), records.end());
    return out;
  }
  out[0] = 1;
  out.resize(1 + packed);
  return out;
}

result<bytes> segment_records(const bytes& stored) {
  if (stored.empty() || stored[0] > 1) return errc::block_corrupt;
  bytes records;
  if (stored[0] == 0) {
    records.assign(stored.begin() + 1, stored.end());
  } else {
    const unsigned long long declared = ZSTD_getFrameContentSize(stored.data() + 1, stored.size() - 1);
    if (declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN ||
        declared > max_segment_bytes)
      return errc::block_corrupt;
    records.resize(static_cast<std::size_t>(declared));
    const std::size_t got =
        ZSTD_decompress(records.data(), records.size(), stored.data() + 1, stored.size() - 1);
    if (ZSTD_isError(got) || got != records.size()) return errc::block_corrupt;
  }
  if (records.size() % segment_record_size != 0) return errc::block_corrupt;
  return records;
}

struct segment {
  std::int64_t series;
  std::int64_t resolution;
  bool replaces;
  std::int64_t first_bucket;
  std::int64_t last_bucket;
  bytes data;
};

/// Segments hold buckets of one aligned window of this many buckets at most: a query reads only
/// the segments its range overlaps, so a long compacted history is not decompressed whole by
/// every query.
constexpr std::int64_t buckets_per_segment = 1024;

/// The start of the aligned window holding the bucket that starts at `start`.
std::int64_t segment_window(std::int64_t start, std::int64_t resolution) noexcept {
  constexpr std::int64_t widest = std::numeric_limits<std::int64_t>::max() / buckets_per_segment;
  return bucket_start(start, resolution > widest ? std::numeric_limits<std::int64_t>::max()
                                                 : resolution * buckets_per_segment);
}

/// One segment per run of rows with the same series, resolution and window (rows sorted by key).
void to_segments(const std::vector<rollup_row>& rows, bool replaces, std::vector<segment>& out) {
  for (std::size_t i = 0; i < rows.size();) {
    std::size_t j = i;
    segment seg{rows[i].series, rows[i].resolution, replaces, rows[i].b.start, rows[i].b.start, {}};
    const std::int64_t window = segment_window(rows[i].b.start, seg.resolution);
    seg.data.reserve(segment_record_size * 16);
    for (; j < rows.size() && rows[j].series == seg.series && rows[j].resolution == seg.resolution &&
           segment_window(rows[j].b.start, seg.resolution) == window;
         ++j) {
      put_record(seg.data, rows[j].b);
      seg.last_bucket = rows[j].b.start;
    }
    seg.data = pack_segment(seg.data);
    out.push_back(std::move(seg));
    i = j;
  }
}

result<void> copy_segments(pg::connection& c, const std::vector<segment>& segments) {
  if (segments.empty()) return {};
  auto copy =
      pg::copy_writer::start(c, "tsdb_rollup_segments",
                             {"series_id", "resolution", "first_bucket", "last_bucket", "replaces", "data"});
  if (!copy) return copy.error();
  for (const auto& seg : segments) {
    if (auto r = copy->write_row(seg.series, seg.resolution, seg.first_bucket, seg.last_bucket, seg.replaces,
                                 bytes_view(seg.data));
        !r)
      return r.error();
  }
  if (auto r = copy->finish(); !r) return r.error();
  return {};
}

/// Every bucket of `resolution` that holds one of the sorted points, NaN-only ones included
/// (count 0), so a replacing segment also empties a bucket whose values were all overwritten by NaN.
/// Points in [from, last].
void buckets_of(std::int64_t series, std::int64_t resolution, const std::vector<std::int64_t>& times,
                const std::vector<double>& values, std::int64_t from, std::int64_t last,
                std::vector<rollup_row>& out) {
  const auto begin = std::lower_bound(times.begin(), times.end(), from) - times.begin();
  const auto end = std::upper_bound(times.begin(), times.end(), last) - times.begin();
  for (auto i = begin; i < end; ++i) {
    const auto at = static_cast<std::size_t>(i);
    const std::int64_t start = bucket_start(times[at], resolution);
    if (out.empty() || out.back().series != series || out.back().resolution != resolution ||
        out.back().b.start != start) {
      out.push_back({series, resolution, bucket{}});
      out.back().b.start = start;
    }
    out.back().b.add(times[at], values[at]);
  }
}

/// Folds a series' rollup segments so that each window of each resolution holds one (inside the
/// caller's transaction, with the series row locked). Only windows holding several segments are
/// rewritten (and every window of a resolution that still has a segment spanning windows, as
/// older versions wrote them); replacing segments apply in write order, so the fold is exact.
result<void> fold_segments(pg::connection& c, std::int64_t series) {
  auto listed = c.query(
      "SELECT id, resolution, first_bucket, last_bucket FROM tsdb_rollup_segments WHERE series_id = $1",
      series);
  if (!listed) return listed.error();
  struct listed_segment {
    std::int64_t id;
    std::int64_t resolution;
    std::int64_t window;
  };
  std::vector<listed_segment> all;
  std::map<std::pair<std::int64_t, std::int64_t>, std::size_t> per_window;  // (resolution, window)
  std::set<std::int64_t> spanning;  // resolutions with a segment over several windows
  for (const auto row : *listed) {
    const auto resolution = row.get<std::int64_t>(1).value();
    const auto window = segment_window(row.get<std::int64_t>(2).value(), resolution);
    if (segment_window(row.get<std::int64_t>(3).value(), resolution) != window) spanning.insert(resolution);
    all.push_back({row.get<std::int64_t>(0).value(), resolution, window});
    ++per_window[{resolution, window}];
  }
  std::vector<std::int64_t> folding;
  for (const auto& seg : all) {
    if (spanning.contains(seg.resolution) || per_window[{seg.resolution, seg.window}] > 1)
      folding.push_back(seg.id);
  }
  if (folding.empty()) return {};
  auto rows = c.query(
      "SELECT resolution, replaces, data FROM tsdb_rollup_segments WHERE id = ANY($1) ORDER BY id", folding);
  if (!rows) return rows.error();
  std::map<std::int64_t, std::map<std::int64_t, bucket>> by_resolution;
  for (const auto row : *rows) {
    const auto resolution = row.get<std::int64_t>(0).value();
    const bool replaces = row.get<bool>(1).value();
    const auto records = segment_records(row.get<bytes>(2).value());
    if (!records) return records.error();
    const bytes& data = *records;
    auto& buckets = by_resolution[resolution];
    for (std::size_t at = 0; at < data.size(); at += segment_record_size) {
      const bucket b = get_record(data.data() + at);
      auto [it, fresh] = buckets.try_emplace(b.start, b);
      if (fresh) continue;
      if (replaces) {
        it->second = b;
      } else {
        it->second.merge(b);
      }
    }
  }
  if (auto d = c.query("DELETE FROM tsdb_rollup_segments WHERE id = ANY($1)", folding); !d) return d.error();
  std::vector<rollup_row> folded;
  for (const auto& [resolution, buckets] : by_resolution) {
    for (const auto& [start, b] : buckets)
      if (b.count > 0) folded.push_back({series, resolution, b});
  }
  std::vector<segment> segments;
  to_segments(folded, false, segments);
  return copy_segments(c, segments);
}

}  // namespace

/// Seals the heads of `ids` in one transaction. Under the series rows' locks (taken in id order,
/// so concurrent writers never deadlock) it checks each head against the newest time any writer
/// sealed: a `reject` head with a point at or before it is refused whole (kept in
/// state.rejected); a `last_write_wins` head that reaches back into stored time gets its rollup
/// buckets recomputed from the stored points merged with it (a replacing segment); every other
/// head adds its buckets as a delta segment.
result<void> seal_heads(store::state& st, const std::vector<std::int64_t>& ids) {
  std::vector<std::int64_t> sealing;
  for (const auto id : ids) {
    auto& s = st.series[id];
    if (s.points.times.empty()) continue;
    normalize(s.points.times, s.points.values, s.policy);
    sealing.push_back(id);
  }
  if (sealing.empty()) return {};
  std::sort(sealing.begin(), sealing.end());
  auto tx = pg::transaction::begin(st.conn);
  if (!tx) return tx.error();
  auto locked = st.conn.query(
      "SELECT id, newest_time FROM tsdb_series WHERE id = ANY($1) ORDER BY id FOR UPDATE", sealing);
  if (!locked) return locked.error();
  std::map<std::int64_t, optional_time> stored_newest;
  for (const auto row : *locked) {
    const auto newest = row.get<std::optional<std::int64_t>>(1).value();
    stored_newest[row.get<std::int64_t>(0).value()] = newest;
  }
  std::vector<sealed_block> blocks;
  std::vector<rollup_row> deltas;
  std::vector<rollup_row> replacements;
  std::vector<std::pair<std::int64_t, errc>> refused;
  std::vector<std::int64_t> written;
  std::vector<std::int64_t> written_newest;
  for (const auto id : sealing) {
    auto& s = st.series[id];
    const auto& h = s.points;
    // A found flag and a plain value rather than a copied optional: GCC 12 at -O3 warns falsely
    // (maybe-uninitialized) on the optional's copy.
    const auto stored = stored_newest.find(id);
    const bool has_newest = stored != stored_newest.end() && stored->second.has_value();
    const std::int64_t newest_time = has_newest ? *stored->second : 0;
    const optional_time newest = has_newest ? optional_time(newest_time) : std::nullopt;
    if (s.policy == ordering::reject && newest && h.times.front() <= *newest) {
      refused.emplace_back(id, h.times.front() == *newest ? errc::duplicate_timestamp : errc::out_of_order);
      continue;
    }
    if (s.policy == ordering::last_write_wins && !st.options.rollups.empty() && newest &&
        h.times.front() <= *newest) {
      // Overwrites are possible: recompute the touched buckets of every resolution from the stored
      // points and the head, merged by the policy (the head is the latest write).
      // [from, last], inclusive: a bucket may end with int64.
      std::int64_t from = h.times.front();
      std::int64_t last = h.times.back();
      for (const auto r : st.options.rollups) {
        from = std::min(from, bucket_start(h.times.front(), r));
        last = std::max(last, bucket_last(h.times.back(), r));
      }
      auto rows = st.conn.query(
          "SELECT data FROM tsdb_blocks WHERE series_id = $1 AND last_time >= $2 AND first_time <= $3 ORDER "
          "BY id",
          id, from, last);
      if (!rows) return rows.error();
      std::vector<std::int64_t> all_t;
      std::vector<double> all_v;
      std::vector<std::int64_t> t;
      std::vector<double> v;
      for (const auto row : *rows) {
        if (auto d = decode_block(row.get<bytes>(0).value(), t, v); !d) return d.error();
        all_t.insert(all_t.end(), t.begin(), t.end());
        all_v.insert(all_v.end(), v.begin(), v.end());
      }
      all_t.insert(all_t.end(), h.times.begin(), h.times.end());
      all_v.insert(all_v.end(), h.values.begin(), h.values.end());
      normalize(all_t, all_v, ordering::last_write_wins);
      for (const auto r : st.options.rollups)
        buckets_of(id, r, all_t, all_v, bucket_start(h.times.front(), r), bucket_last(h.times.back(), r),
                   replacements);
      seal_points(id, h.times, h.values, st.options, {}, blocks, deltas);
    } else {
      seal_points(id, h.times, h.values, st.options, st.options.rollups, blocks, deltas);
    }
    written.push_back(id);
    written_newest.push_back(h.times.back());
  }
  merge_rollups(deltas);
  std::vector<segment> segments;
  to_segments(deltas, false, segments);
  to_segments(replacements, true, segments);
  if (!blocks.empty()) {
    if (auto copied = copy_blocks(st.conn, blocks); !copied) return copied.error();
    if (auto copied = copy_segments(st.conn, segments); !copied) return copied.error();
    auto updated = st.conn.query(
        "UPDATE tsdb_series s SET newest_time = greatest(s.newest_time, v.newest) "
        "FROM unnest($1::int8[], $2::int8[]) AS v(id, newest) WHERE s.id = v.id",
        written, written_newest);
    if (!updated) return updated.error();
  }
  if (auto c = tx->commit(); !c) return c.error();
  // Committed: only now do the heads change, so a failed transaction loses nothing.
  for (std::size_t i = 0; i < written.size(); ++i) {
    auto& s = st.series[written[i]];
    raise_to(s.sealed_newest, written_newest[i]);
    s.points = {};
  }
  for (const auto& [id, reason] : refused) {
    auto& s = st.series[id];
    const optional_time newest = stored_newest[id];
    st.rejected.push_back({id, reason, std::move(s.points.times), std::move(s.points.values)});
    s.points = {};
    if (newest) raise_to(s.sealed_newest, *newest);
    s.newest = s.sealed_newest;
  }
  if (!refused.empty()) return refused.front().second;
  return {};
}

result<void> store::buffer(std::int64_t id, std::span<const std::int64_t> times,
                           std::span<const double> values) {
  if (times.size() != values.size()) return errc::invalid_argument;
  auto it = state_->series.find(id);
  if (it == state_->series.end()) {
    auto r = state_->conn.query("SELECT key FROM tsdb_series WHERE id = $1", id);
    if (!r) return r.error();
    if (r->empty()) return errc::unknown_series;
    // Loads the policy and newest time through series().
    auto info = state_->conn.query(
        "SELECT metric, label_names, label_values, policy FROM tsdb_series WHERE id = $1", id);
    if (!info) return info.error();
    const auto names = (*info)[0].get<std::vector<std::string>>(1).value();
    const auto vals = (*info)[0].get<std::vector<std::string>>(2).value();
    std::vector<label> labels;
    for (std::size_t i = 0; i < names.size() && i < vals.size(); ++i) labels.push_back({names[i], vals[i]});
    if (auto s = series((*info)[0].get<std::string>(0).value(), labels); !s) return s.error();
    it = state_->series.find(id);
  }
  auto& s = it->second;
  if (s.policy == ordering::reject) {
    // Check the whole batch first, so a refused batch changes nothing.
    optional_time newest = s.newest;
    for (const auto t : times) {
      if (newest && t < *newest) return errc::out_of_order;
      if (newest && t == *newest) return errc::duplicate_timestamp;
      newest = t;
    }
  }
  s.points.times.insert(s.points.times.end(), times.begin(), times.end());
  s.points.values.insert(s.points.values.end(), values.begin(), values.end());
  for (const auto t : times) raise_to(s.newest, t);
  const auto& h = s.points;
  if (h.times.size() >= state_->options.seal_count ||
      (!h.times.empty() && h.times.back() > h.times.front() &&
       distance(h.times.front(), h.times.back()) >= static_cast<std::uint64_t>(state_->options.seal_span))) {
    return seal_heads(*state_, {id});
  }
  return {};
}

result<void> store::flush() {
  std::vector<std::int64_t> ids;
  for (const auto& [id, s] : state_->series)
    if (!s.points.times.empty()) ids.push_back(id);
  return seal_heads(*state_, ids);
}

std::vector<rejected_points> store::take_rejected() {
  return std::exchange(state_->rejected, {});
}

// ---- reading ---------------------------------------------------------------------------------

range_scan::range_scan(std::vector<stored_block> blocks, std::vector<std::int64_t> head_times,
                       std::vector<double> head_values, std::int64_t from, std::int64_t to, ordering policy)
    : blocks_(std::move(blocks)), from_(from), to_(to), policy_(policy) {
  // Blocks arrive ordered by first_time. When none overlap (and the head starts after them), the
  // scan decodes lazily; otherwise everything in range is merged up front: stably by time, blocks
  // in write order (id) and the head last, so "later" means written later.
  bool overlapping = false;
  for (std::size_t i = 1; i < blocks_.size(); ++i)
    if (blocks_[i].first_time <= blocks_[i - 1].last_time) overlapping = true;
  if (!head_times.empty() && !blocks_.empty() &&
      *std::min_element(head_times.begin(), head_times.end()) <= blocks_.back().last_time)
    overlapping = true;
  if (!overlapping) {
    if (!head_times.empty()) {
      stored_block h{std::numeric_limits<std::int64_t>::max(), head_times.front(), head_times.back(), {}};
      blocks_.push_back(std::move(h));
      head_times_ = std::move(head_times);
      head_values_ = std::move(head_values);
    }
    return;
  }
  std::sort(blocks_.begin(), blocks_.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  std::vector<std::int64_t> all_t;
  std::vector<double> all_v;
  std::vector<std::int64_t> t;
  std::vector<double> v;
  for (const auto& b : blocks_) {
    if (auto r = decode_block(b.data, t, v); !r) {
      error_ = r.error();
      break;
    }
    all_t.insert(all_t.end(), t.begin(), t.end());
    all_v.insert(all_v.end(), v.begin(), v.end());
  }
  all_t.insert(all_t.end(), head_times.begin(), head_times.end());
  all_v.insert(all_v.end(), head_values.begin(), head_values.end());
  normalize(all_t, all_v, policy);
  blocks_.clear();
  times_ = std::move(all_t);
  values_ = std::move(all_v);
  at_ = static_cast<std::size_t>(std::lower_bound(times_.begin(), times_.end(), from_) - times_.begin());
}

bool range_scan::load_next_block() {
  while (next_block_ < blocks_.size()) {
    auto& b = blocks_[next_block_++];
    if (b.id == std::numeric_limits<std::int64_t>::max()) {
      std::vector<std::int64_t> t = std::move(head_times_);
      std::vector<double> v = std::move(head_values_);
      normalize(t, v, policy_);  // a head may hold rewrites (last_write_wins) and be unsorted
      times_ = std::move(t);
      values_ = std::move(v);
    } else if (auto r = decode_block(b.data, times_, values_); !r) {
      error_ = r.error();
      times_.clear();
      values_.clear();
      blocks_.clear();
      return false;
    }
    b.data = {};
    at_ = static_cast<std::size_t>(std::lower_bound(times_.begin(), times_.end(), from_) - times_.begin());
    if (at_ < times_.size()) return true;
  }
  return false;
}

bool range_scan::next(std::int64_t& time, double& value) {
  while (at_ >= times_.size()) {
    if (!load_next_block()) return false;
  }
  if (times_[at_] >= to_) {
    at_ = times_.size();
    next_block_ = blocks_.size();
    return false;
  }
  time = times_[at_];
  value = values_[at_];
  ++at_;
  return true;
}

void range_scan::drain(std::vector<std::int64_t>& times, std::vector<double>& values) {
  std::int64_t t;
  double v;
  while (next(t, v)) {
    times.push_back(t);
    values.push_back(v);
  }
}

result<range_scan> store::scan(std::int64_t series, std::int64_t from, std::int64_t to) {
  auto r = state_->conn.query(
      "SELECT id, first_time, last_time, data FROM tsdb_blocks WHERE series_id = $1 AND last_time >= $2 AND "
      "first_time < $3 ORDER BY first_time, id",
      series, from, to);
  if (!r) return r.error();
  std::vector<range_scan::stored_block> blocks;
  for (const auto row : *r)
    blocks.push_back({row.get<std::int64_t>(0).value(), row.get<std::int64_t>(1).value(),
                      row.get<std::int64_t>(2).value(), row.get<bytes>(3).value()});
  std::vector<std::int64_t> head_t;
  std::vector<double> head_v;
  ordering policy = ordering::reject;
  if (auto it = state_->series.find(series); it != state_->series.end()) {
    policy = it->second.policy;
    const auto& h = it->second.points;
    for (std::size_t i = 0; i < h.times.size(); ++i) {
      if (h.times[i] >= from && h.times[i] < to) {
        head_t.push_back(h.times[i]);
        head_v.push_back(h.values[i]);
      }
    }
  } else {
    auto p = state_->conn.query("SELECT policy FROM tsdb_series WHERE id = $1", series);
    if (!p) return p.error();
    if (p->empty()) return errc::unknown_series;
    policy = static_cast<ordering>((*p)[0].get<std::int16_t>(0).value());
  }
  return range_scan(std::move(blocks), std::move(head_t), std::move(head_v), from, to, policy);
}

result<std::vector<bucket>> store::aggregate(std::int64_t series, std::int64_t from, std::int64_t to,
                                             std::int64_t width, bool percentiles, query_plan* plan) {
  const auto buckets = buckets_for(from, to, width);
  if (!buckets) return buckets.error();
  query_plan local;
  query_plan& used = plan != nullptr ? *plan : local;
  used = {};
  auto p = state_->conn.query(
      "SELECT policy, newest_time, rollups_exact_after FROM tsdb_series WHERE id = $1", series);
  if (!p) return p.error();
  if (p->empty()) return errc::unknown_series;
  const auto policy = static_cast<ordering>((*p)[0].get<std::int16_t>(0).value());
  const auto stored_newest = (*p)[0].get<std::optional<std::int64_t>>(1).value();
  const auto rollups_exact_after = (*p)[0].get<std::optional<std::int64_t>>(2).value();
  std::vector<bucket> out = tsdb::aggregate({}, {}, from, to, width, percentiles);
  const std::int64_t first = buckets->first;
  auto slot = [&](std::int64_t t) -> bucket& { return out[buckets->index(t)]; };

  const head* h = nullptr;
  if (auto it = state_->series.find(series); it != state_->series.end()) h = &it->second.points;
  auto add_head = [&] {
    if (h == nullptr) return;
    std::vector<std::int64_t> t;
    std::vector<double> v;
    for (std::size_t i = 0; i < h->times.size(); ++i) {
      if (h->times[i] >= from && h->times[i] < to) {
        t.push_back(h->times[i]);
        v.push_back(h->values[i]);
      }
    }
    normalize(t, v, policy);  // under last_write_wins the head may rewrite its own points
    for (std::size_t i = 0; i < t.size(); ++i) slot(t[i]).add(t[i], v[i]);
  };

  // Rollups: exact when every bucket and the range boundaries are whole rollup buckets. Under
  // last_write_wins they are exact for what is sealed (seals that overwrite recompute their
  // buckets), but a head point at or before the newest sealed time may overwrite a sealed one and
  // would count twice: then the scan below merges instead.
  std::int64_t resolution = 0;
  if (!percentiles) {
    for (const auto r : state_->options.rollups)
      if (width % r == 0 && bucket_start(from, r) == from && bucket_start(to, r) == to) resolution = r;
  }
  if (resolution != 0 && policy == ordering::last_write_wins && h != nullptr && stored_newest &&
      std::any_of(h->times.begin(), h->times.end(), [&](std::int64_t t) { return t <= *stored_newest; }))
    resolution = 0;
  if (resolution != 0 && rollups_exact_after && from <= *rollups_exact_after) resolution = 0;
  // from and to are aligned to the resolution, so its buckets start at from.
  result<bucket_span> rollup_buckets = errc::invalid_range;
  if (resolution != 0) rollup_buckets = buckets_for(from, to, resolution);
  if (!rollup_buckets) resolution = 0;
  if (resolution != 0 && state_->options.points_per_rollup_row != 0) {
    // Exact is not enough: a rollup bucket costs more to fetch than a point costs to decode, so
    // a rollup only a few times coarser than the data is slower than the blocks.
    auto stored = state_->conn.query(
        "SELECT coalesce(sum(count), 0)::int8 FROM tsdb_blocks WHERE series_id = $1 AND last_time >= $2 AND "
        "first_time < $3",
        series, from, to);
    if (!stored) return stored.error();
    auto counted = stored->value<std::int64_t>();
    const auto points = static_cast<double>(counted ? *counted : 0);
    const double rows = static_cast<double>(rollup_buckets->count);
    if (rows * static_cast<double>(state_->options.points_per_rollup_row) > points) resolution = 0;
  }
  if (resolution != 0) {
    auto rows = state_->conn.query(
        "SELECT replaces, data FROM tsdb_rollup_segments WHERE series_id = $1 AND resolution = $2 AND "
        "last_bucket >= $3 AND first_bucket < $4 ORDER BY id",
        series, resolution, from, to);
    if (!rows) return rows.error();
    // Segments in write order: deltas merge, replacing segments reset their buckets.
    std::vector<bucket> merged(rollup_buckets->count);
    for (std::size_t i = 0; i < merged.size(); ++i) merged[i].start = rollup_buckets->start(i);
    for (const auto row : *rows) {
      const bool replaces = row.get<bool>(0).value();
      const auto records = segment_records(row.get<bytes>(1).value());
      if (!records) return records.error();
      const bytes& data = *records;
      for (std::size_t at = 0; at < data.size(); at += segment_record_size) {
        bucket b = get_record(data.data() + at);
        if (b.start < from || b.start >= to || bucket_start(b.start, resolution) != b.start) continue;
        auto& into = merged[rollup_buckets->index(b.start)];
        if (replaces) {
          into = b;
        } else {
          into.merge(b);
        }
        ++used.rollup_rows;
      }
    }
    for (const auto& b : merged)
      if (b.count > 0) slot(b.start).merge(b);
    used.rollup = resolution;
    add_head();
    return out;
  }

  if (policy == ordering::last_write_wins) {
    // Rewrites may span blocks: merge through the scan, which resolves them.
    auto scanned = scan(series, from, to);
    if (!scanned) return scanned.error();
    std::int64_t t;
    double v;
    while (scanned->next(t, v)) slot(t).add(t, v);
    if (scanned->error()) return scanned->error();
    return out;
  }
  // reject and keep_both: every stored point counts once, so a block inside one bucket can be
  // answered from its summary, and only blocks straddling a boundary are decoded.
  auto rows = state_->conn.query(
      "SELECT first_time, last_time, value_count, sum, sum_squares, min, max, first, last, "
      "CASE WHEN first_time >= $2 AND last_time < $3 AND NOT $4 AND "
      "     'NaN'::float8 NOT IN (min, first, last) AND "
      "     div(first_time::numeric - $5, $6) = div(last_time::numeric - $5, $6) "
      "THEN NULL ELSE data END "
      "FROM tsdb_blocks WHERE series_id = $1 AND last_time >= $2 AND first_time < $3",
      series, from, to, percentiles, first, width);
  if (!rows) return rows.error();
  std::vector<std::int64_t> t;
  std::vector<double> v;
  for (const auto row : *rows) {
    const auto data = row.get<std::optional<bytes>>(9).value();
    if (!data) {
      bucket b;
      b.first_time = row.get<std::int64_t>(0).value();
      b.last_time = row.get<std::int64_t>(1).value();
      if (b.first_time < first || buckets->index(b.first_time) != buckets->index(b.last_time)) {
        return errc::block_corrupt;  // the server's floor disagreed with ours: never merge wrongly
      }
      b.count = static_cast<std::uint64_t>(row.get<std::int32_t>(2).value());
      b.sum = row.get<double>(3).value();
      b.sum_squares = row.get<double>(4).value();
      b.min = row.get<double>(5).value();
      b.max = row.get<double>(6).value();
      b.first = row.get<double>(7).value();
      b.last = row.get<double>(8).value();
      slot(b.first_time).merge(b);
      ++used.blocks_summarized;
      continue;
    }
    if (auto d = decode_block(*data, t, v); !d) return d.error();
    ++used.blocks_decoded;
    for (std::size_t i = 0; i < t.size(); ++i)
      if (t[i] >= from && t[i] < to) slot(t[i]).add(t[i], v[i]);
  }
  add_head();
  return out;
}

// ---- retention and compaction ----------------------------------------------------------------

result<void> store::set_retention(std::string_view metric, std::int64_t max_age) {
  if (max_age < 0) return errc::invalid_argument;
  if (max_age == 0) {
    auto r = state_->conn.query("DELETE FROM tsdb_retention WHERE metric = $1", metric);
    if (!r) return r.error();
    return {};
  }
  auto r = state_->conn.query(
      "INSERT INTO tsdb_retention (metric, max_age) VALUES ($1, $2) ON CONFLICT (metric) DO UPDATE SET "
      "max_age = "
      "EXCLUDED.max_age",
      metric, max_age);
  if (!r) return r.error();
  return {};
}

result<std::uint64_t> store::apply_retention(std::int64_t now) {
  // The series with something past their metric's max age; each is then cleaned in a
  // transaction of its own, so seals and compactions of other series never wait for it.
  // In numeric, as every sum of times below: int8 arithmetic overflows near the ends of int64. A
  // cutoff before INT64_MIN keeps everything, as INT64_MIN does.
  auto due = state_->conn.query(
      "SELECT s.id, c.cutoff FROM tsdb_series s JOIN tsdb_retention r ON s.metric = r.metric, "
      "LATERAL (SELECT greatest($1::numeric - r.max_age, -9223372036854775808)::int8 AS cutoff) c "
      "WHERE EXISTS (SELECT 1 FROM tsdb_blocks b WHERE b.series_id = s.id AND b.last_time < c.cutoff) "
      "OR EXISTS (SELECT 1 FROM tsdb_rollup_segments u WHERE u.series_id = s.id AND "
      "u.first_bucket::numeric + u.resolution <= c.cutoff) ORDER BY s.id",
      now);
  if (!due) return due.error();
  std::vector<std::pair<std::int64_t, std::int64_t>> series;  // id, cutoff
  for (const auto row : *due)
    series.emplace_back(row.get<std::int64_t>(0).value(), row.get<std::int64_t>(1).value());
  std::uint64_t dropped = 0;
  for (const auto& [id, cutoff] : series) {
    auto tx = pg::transaction::begin(state_->conn);
    if (!tx) return tx.error();
    // The series row first, as seals and compaction take it: a compaction in progress that read
    // old blocks and segments commits (what it rewrote from them) before the deletes below
    // take their snapshot, so nothing old comes back.
    if (auto locked = tx->query("SELECT id FROM tsdb_series WHERE id = $1 FOR UPDATE", id); !locked)
      return locked.error();
    auto blocks = tx->query("DELETE FROM tsdb_blocks WHERE series_id = $1 AND last_time < $2", id, cutoff);
    if (!blocks) return blocks.error();
    // Whole rollup segments past the cutoff go; a segment straddling it is rewritten without the
    // buckets that end before it.
    if (auto r = tx->query("DELETE FROM tsdb_rollup_segments WHERE series_id = $1 AND last_bucket::numeric + "
                           "resolution <= $2",
                           id, cutoff);
        !r)
      return r.error();
    auto straddling = tx->query(
        "SELECT id, resolution, data FROM tsdb_rollup_segments WHERE series_id = $1 AND "
        "first_bucket::numeric + resolution <= $2 FOR UPDATE",
        id, cutoff);
    if (!straddling) return straddling.error();
    for (const auto row : *straddling) {
      const auto resolution = row.get<std::int64_t>(1).value();
      const auto records = segment_records(row.get<bytes>(2).value());
      if (!records) return records.error();
      const bytes& data = *records;
      bytes kept;
      std::int64_t first_bucket = std::numeric_limits<std::int64_t>::max();
      for (std::size_t at = 0; at < data.size(); at += segment_record_size) {
        const bucket b = get_record(data.data() + at);
        if (bucket_ends_by(b.start, resolution, cutoff)) continue;
        first_bucket = std::min(first_bucket, b.start);
        kept.insert(kept.end(), data.begin() + static_cast<std::ptrdiff_t>(at),
                    data.begin() + static_cast<std::ptrdiff_t>(at + segment_record_size));
      }
      auto r =
          kept.empty()
              ? tx->query("DELETE FROM tsdb_rollup_segments WHERE id = $1", row.get<std::int64_t>(0).value())
              : tx->query("UPDATE tsdb_rollup_segments SET data = $2, first_bucket = $3 WHERE id = $1",
                          row.get<std::int64_t>(0).value(), bytes_view(pack_segment(kept)), first_bucket);
      if (!r) return r.error();
    }
    if (auto c = tx->commit(); !c) return c.error();
    dropped += blocks->affected();
  }
  return dropped;
}

result<std::uint64_t> store::compact(std::int64_t series, std::size_t below, std::size_t target) {
  auto p = state_->conn.query("SELECT policy FROM tsdb_series WHERE id = $1", series);
  if (!p) return p.error();
  if (p->empty()) return errc::unknown_series;
  const auto policy = static_cast<ordering>((*p)[0].get<std::int16_t>(0).value());
  auto tx = pg::transaction::begin(state_->conn);
  if (!tx) return tx.error();
  // The series row first (as seals take it), so no seal adds segments while they are folded;
  // then blocks, then segments, the order retention takes them in.
  if (auto lock = tx->query("SELECT id FROM tsdb_series WHERE id = $1 FOR UPDATE", series); !lock)
    return lock.error();
  // Under last_write_wins the rewritten block is newer than every other, so a small block that
  // overlaps a block left out would win against a later write there: leave such blocks (and, in
  // turn, the small ones overlapping them) as they are.
  std::vector<std::int64_t> chosen;
  if (policy == ordering::last_write_wins) {
    auto all = tx->query("SELECT id, first_time, last_time, count < $2 FROM tsdb_blocks WHERE series_id = $1",
                         series, static_cast<std::int64_t>(below));
    if (!all) return all.error();
    struct span_of {
      std::int64_t id, first, last;
      bool in;
    };
    std::vector<span_of> spans;
    for (const auto row : *all)
      spans.push_back({row.get<std::int64_t>(0).value(), row.get<std::int64_t>(1).value(),
                       row.get<std::int64_t>(2).value(), row.get<bool>(3).value()});
    for (bool changed = true; changed;) {
      changed = false;
      for (auto& a : spans) {
        if (!a.in) continue;
        for (const auto& b : spans) {
          if (!b.in && b.first <= a.last && b.last >= a.first) {
            a.in = false;
            changed = true;
            break;
          }
        }
      }
    }
    for (const auto& a : spans)
      if (a.in) chosen.push_back(a.id);
  }
  // Locked, so two compactions (or a retention run) never both rewrite the same blocks.
  auto rows = tx->query(
      "SELECT id, data FROM tsdb_blocks WHERE series_id = $1 AND count < $2 AND (NOT $3 OR id = ANY($4)) "
      "ORDER BY id FOR UPDATE",
      series, static_cast<std::int64_t>(below), policy == ordering::last_write_wins, chosen);
  if (!rows) return rows.error();
  if (rows->size() < 2) {
    if (auto folded = fold_segments(state_->conn, series); !folded) return folded.error();
    if (auto c = tx->commit(); !c) return c.error();
    return std::uint64_t{0};
  }
  std::vector<std::int64_t> all_t;
  std::vector<double> all_v;
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> t;
  std::vector<double> v;
  for (const auto row : *rows) {
    ids.push_back(row.get<std::int64_t>(0).value());
    if (auto d = decode_block(row.get<bytes>(1).value(), t, v); !d) return d.error();
    all_t.insert(all_t.end(), t.begin(), t.end());
    all_v.insert(all_v.end(), v.begin(), v.end());
  }
  normalize(all_t, all_v,
            policy == ordering::last_write_wins ? ordering::last_write_wins : ordering::keep_both);
  auto deleted = tx->query("DELETE FROM tsdb_blocks WHERE id = ANY($1)", ids);
  if (!deleted) return deleted.error();
  std::vector<sealed_block> blocks;
  std::vector<rollup_row> no_rollups;  // the points are unchanged, so are their rollups
  store_options options = state_->options;
  options.rollups.clear();
  options.seal_count = std::clamp<std::size_t>(target, 1, (1U << 24) - 1);
  seal_points(series, all_t, all_v, options, {}, blocks, no_rollups);
  if (auto copied = copy_blocks(state_->conn, blocks); !copied) return copied.error();
  if (auto folded = fold_segments(state_->conn, series); !folded) return folded.error();
  if (auto c = tx->commit(); !c) return c.error();
  return static_cast<std::uint64_t>(ids.size() - blocks.size());
}

}  // namespace keel::tsdb
