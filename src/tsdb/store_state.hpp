#pragma once
// Internals shared by the store's translation units (schema.cpp, series_index.cpp, ingest.cpp,
// rollups.cpp, read.cpp, maintenance.cpp): the store's state, the in-memory heads, what a seal
// produces, and the rollup segment format. Not installed; nothing outside src/tsdb includes it.
#include <keel/core/byte_io.hpp>
#include <keel/pg/connection.hpp>
#include <keel/tsdb/store.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace keel::tsdb {

namespace detail {

// Empty until the series has a point: every int64, INT64_MIN included, is a time.
using optional_time = std::optional<std::int64_t>;

inline void raise_to(optional_time& newest, std::int64_t t) noexcept {
  if (!newest || *newest < t) newest = t;
}

/// later - earlier for later >= earlier, exact even when the difference exceeds INT64_MAX.
[[nodiscard]] inline std::uint64_t distance(std::int64_t earlier, std::int64_t later) noexcept {
  return static_cast<std::uint64_t>(later) - static_cast<std::uint64_t>(earlier);
}

/// The last time in the bucket of `resolution` holding `t` (INT64_MAX when the bucket reaches past it).
[[nodiscard]] std::int64_t bucket_last(std::int64_t t, std::int64_t resolution) noexcept;

/// Whether the bucket starting at `start` ends at or before `cutoff` (start + resolution <= cutoff).
[[nodiscard]] bool bucket_ends_by(std::int64_t start, std::int64_t resolution, std::int64_t cutoff) noexcept;

/// Sorts by time (stably, so later writes stay later) and applies the policy to equal times.
void normalize(std::vector<std::int64_t>& times, std::vector<double>& values, ordering policy);

struct head {
  std::vector<std::int64_t> times;
  std::vector<double> values;
};

struct series_state {
  ordering policy = ordering::reject;
  optional_time newest;         ///< newest time stored (as last seen) or in the head
  optional_time sealed_newest;  ///< newest stored time as last seen
  head points;
};

struct sealed_block {
  std::int64_t series;
  block_summary summary;
  double sum_squares;
  std::int32_t value_count;  ///< points whose value is not NaN (what aggregates count)
  bytes data;
};

/// A stored block as a scan reads it.
struct stored_block {
  std::int64_t id;
  std::int64_t first_time;
  std::int64_t last_time;
  bytes data;
};

struct rollup_row {
  std::int64_t series;
  std::int64_t resolution;
  bucket b;
};

// ---- ingest (ingest.cpp) -------------------------------------------------------------------

/// Blocks and rollup rows for a run of sorted points, cut by count and span.
void seal_points(std::int64_t series, const std::vector<std::int64_t>& times,
                 const std::vector<double>& values, const store_options& options,
                 std::span<const std::int64_t> resolutions, std::vector<sealed_block>& blocks,
                 std::vector<rollup_row>& rollups);

/// Sealed blocks and their summaries into the blocks table, by binary COPY (inside the caller's
/// transaction).
[[nodiscard]] result<void> copy_blocks(pg::connection& c, const std::vector<sealed_block>& blocks);

// ---- rollup segments (rollups.cpp) -----------------------------------------------------------

/// A stored segment's buckets as fixed-size big-endian records (bucket, count, sum, sum_squares,
/// min, max, first, last, first_time, last_time).
inline constexpr std::size_t segment_record_size = 80;

/// Appends one record.
void put_record(bytes& out, const bucket& b);

/// Reads one record. @returns errc::block_truncated when `in` ends inside it.
[[nodiscard]] result<bucket> read_record(byte_reader& in) noexcept;

/// A stored segment from its records: one format byte, then the records as they are (0) or one
/// zstd frame of them (1).
[[nodiscard]] bytes pack_segment(const bytes& records);

/// The records of a stored segment. @returns errc::block_corrupt for an unknown format, a bad
/// zstd frame or records of the wrong size.
[[nodiscard]] result<bytes> segment_records(bytes_view stored);

struct segment {
  std::int64_t series;
  std::int64_t resolution;
  bool replaces;
  std::int64_t first_bucket;
  std::int64_t last_bucket;
  bytes data;
};

/// One segment per run of rows with the same series, resolution and window (rows sorted by key).
void to_segments(const std::vector<rollup_row>& rows, bool replaces, std::vector<segment>& out);

/// Merges rollup rows with the same (series, resolution, bucket) and orders them by key.
void merge_rollups(std::vector<rollup_row>& rollups);

/// Segments into the segments table, by binary COPY (inside the caller's transaction).
[[nodiscard]] result<void> copy_segments(pg::connection& c, const std::vector<segment>& segments);

/// Every bucket of `resolution` that holds one of the sorted points in [from, last], NaN-only
/// ones included (count 0).
void buckets_of(std::int64_t series, std::int64_t resolution, const std::vector<std::int64_t>& times,
                const std::vector<double>& values, std::int64_t from, std::int64_t last,
                std::vector<rollup_row>& out);

/// Folds a series' rollup segments so that each window of each resolution holds one (inside the
/// caller's transaction, with the series row locked).
[[nodiscard]] result<void> fold_segments(pg::connection& c, std::int64_t series);

struct store_state {
  pg::connection conn;
  store_options options;
  std::unordered_map<std::string, std::int64_t> ids;
  std::map<std::int64_t, series_state> series;
  std::vector<rejected_points> rejected;
};

/// Seals the heads of `ids` in one transaction (see ingest.cpp).
[[nodiscard]] result<void> seal_heads(store_state& st, const std::vector<std::int64_t>& ids);

}  // namespace detail

struct range_scan::impl {
  impl(std::vector<detail::stored_block> blocks, std::vector<std::int64_t> head_times,
       std::vector<double> head_values, std::int64_t from, std::int64_t to, ordering policy);
  bool next(std::int64_t& time, double& value);
  bool load_next_block();

  std::vector<detail::stored_block> blocks;
  std::size_t next_block = 0;
  std::vector<std::int64_t> times;
  std::vector<double> values;
  std::size_t at = 0;
  std::vector<std::int64_t> head_times;
  std::vector<double> head_values;
  std::int64_t from;
  std::int64_t to;
  ordering policy;
  error_code error;
};

}  // namespace keel::tsdb
