// Ingest: points buffered in per-series heads, sealed into blocks with their rollup segments,
// checked under the series rows' locks against what every writer has sealed.
#include <keel/core/assert.hpp>
#include <keel/pg/copy.hpp>
#include <keel/pg/transaction.hpp>

#include "store_state.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace keel::tsdb {
namespace detail {

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

result<void> copy_blocks(pg::connection& c, const std::vector<sealed_block>& blocks) {
  auto copy = pg::copy_writer::start(c, "keel_tsdb_blocks",
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

/// Seals the heads of `ids` in one transaction. Under the series rows' locks (taken in id order,
/// so concurrent writers never deadlock) it checks each head against the newest time any writer
/// sealed: a `reject` head with a point at or before it is refused whole (kept in
/// state.rejected); a `last_write_wins` head that reaches back into stored time gets its rollup
/// buckets recomputed from the stored points merged with it (a replacing segment); every other
/// head adds its buckets as a delta segment.
result<void> seal_heads(store_state& st, const std::vector<std::int64_t>& ids) {
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
      "SELECT id, newest_time FROM keel_tsdb_series WHERE id = ANY($1) ORDER BY id FOR UPDATE", sealing);
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
          "SELECT data FROM keel_tsdb_blocks WHERE series_id = $1 AND last_time >= $2 AND first_time <= $3 "
          "ORDER "
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
      for (const auto r : st.options.rollups) {
        buckets_of(id, r, all_t, all_v, bucket_start(h.times.front(), r), bucket_last(h.times.back(), r),
                   replacements);
      }
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
        "UPDATE keel_tsdb_series s SET newest_time = greatest(s.newest_time, v.newest) "
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

}  // namespace detail

result<void> store::buffer(std::int64_t id, std::span<const std::int64_t> times,
                           std::span<const double> values) {
  if (times.size() != values.size()) return errc::invalid_argument;
  auto it = state_->series.find(id);
  if (it == state_->series.end()) {
    auto r = state_->conn.query("SELECT key FROM keel_tsdb_series WHERE id = $1", id);
    if (!r) return r.error();
    if (r->empty()) return errc::unknown_series;
    // Loads the policy and newest time through series().
    auto info = state_->conn.query(
        "SELECT metric, label_names, label_values, policy FROM keel_tsdb_series WHERE id = $1", id);
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
    detail::optional_time newest = s.newest;
    for (const auto t : times) {
      if (newest && t < *newest) return errc::out_of_order;
      if (newest && t == *newest) return errc::duplicate_timestamp;
      newest = t;
    }
  }
  s.points.times.insert(s.points.times.end(), times.begin(), times.end());
  s.points.values.insert(s.points.values.end(), values.begin(), values.end());
  for (const auto t : times) detail::raise_to(s.newest, t);
  const auto& h = s.points;
  if (h.times.size() >= state_->options.seal_count ||
      (!h.times.empty() && h.times.back() > h.times.front() &&
       detail::distance(h.times.front(), h.times.back()) >=
           static_cast<std::uint64_t>(state_->options.seal_span))) {
    return detail::seal_heads(*state_, {id});
  }
  return {};
}

result<void> store::flush() {
  std::vector<std::int64_t> ids;
  for (const auto& [id, s] : state_->series)
    if (!s.points.times.empty()) ids.push_back(id);
  return detail::seal_heads(*state_, ids);
}

std::vector<rejected_points> store::take_rejected() {
  return std::exchange(state_->rejected, {});
}

}  // namespace keel::tsdb
