// Rollup segments: append-only rows of bucket records per seal, series and resolution, merged on
// read and folded by compaction.
#include <keel/core/byte_io.hpp>
#include <keel/pg/copy.hpp>

#include "store_state.hpp"

#include <zstd.h>

#include <algorithm>
#include <bit>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <utility>

namespace keel::tsdb::detail {

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

void put_record(bytes& out, const bucket& b) {
  byte_writer w(out);
  w.be(b.start);
  w.be(b.count);
  for (const double d : {b.sum, b.sum_squares, b.min, b.max, b.first, b.last})
    w.be(std::bit_cast<std::uint64_t>(d));
  w.be(b.first_time);
  w.be(b.last_time);
}

result<bucket> read_record(byte_reader& in) noexcept {
  // Checked as a whole first, so a partial record consumes nothing and every read below succeeds.
  if (in.remaining() < segment_record_size) return errc::block_truncated;
  bucket b;
  b.start = in.be<std::int64_t>().value();
  b.count = in.be<std::uint64_t>().value();
  for (double* field : {&b.sum, &b.sum_squares, &b.min, &b.max, &b.first, &b.last})
    *field = std::bit_cast<double>(in.be<std::uint64_t>().value());
  b.first_time = in.be<std::int64_t>().value();
  b.last_time = in.be<std::int64_t>().value();
  return b;
}

// A stored segment is one format byte and its records: 0 = the records as they are (what the
// migration from version 1 writes), 1 = one zstd frame of them (what seals write: a day of
// 1-minute buckets shrinks several times, and Postgres stores and logs that much less).
inline constexpr std::size_t max_segment_bytes = std::size_t{1} << 31;

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

result<bytes> segment_records(bytes_view stored) {
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

namespace {

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

}  // namespace

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
      pg::copy_writer::start(c, "keel_tsdb_rollup_segments",
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

// NaN-only buckets are kept so that a replacing segment also empties a bucket whose values were
// all overwritten by NaN.
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
      "SELECT id, resolution, first_bucket, last_bucket FROM keel_tsdb_rollup_segments WHERE series_id = $1",
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
      "SELECT resolution, replaces, data FROM keel_tsdb_rollup_segments WHERE id = ANY($1) ORDER BY id",
      folding);
  if (!rows) return rows.error();
  std::map<std::int64_t, std::map<std::int64_t, bucket>> by_resolution;
  for (const auto row : *rows) {
    const auto resolution = row.get<std::int64_t>(0).value();
    const bool replaces = row.get<bool>(1).value();
    const auto records = segment_records(row.get<bytes>(2).value());
    if (!records) return records.error();
    auto& buckets = by_resolution[resolution];
    for (byte_reader in(*records); !in.empty();) {
      const auto record = read_record(in);
      if (!record) return record.error();
      const bucket& b = *record;
      auto [it, fresh] = buckets.try_emplace(b.start, b);
      if (fresh) continue;
      if (replaces) {
        it->second = b;
      } else {
        it->second.merge(b);
      }
    }
  }
  if (auto d = c.query("DELETE FROM keel_tsdb_rollup_segments WHERE id = ANY($1)", folding); !d)
    return d.error();
  std::vector<rollup_row> folded;
  for (const auto& [resolution, buckets] : by_resolution) {
    for (const auto& [start, b] : buckets)
      if (b.count > 0) folded.push_back({series, resolution, b});
  }
  std::vector<segment> segments;
  to_segments(folded, false, segments);
  return copy_segments(c, segments);
}

}  // namespace keel::tsdb::detail
