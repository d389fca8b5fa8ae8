// Reading: range scans over blocks and the head, and bucketed aggregates answered from rollups,
// block summaries or decoded points.
#include "store_state.hpp"

#include <algorithm>
#include <limits>
#include <utility>

namespace keel::tsdb {

range_scan::impl::impl(std::vector<detail::stored_block> stored, std::vector<std::int64_t> head_t,
                       std::vector<double> head_v, std::int64_t from_time, std::int64_t to_time,
                       ordering series_policy)
    : blocks(std::move(stored)), from(from_time), to(to_time), policy(series_policy) {
  // Blocks arrive ordered by first_time. When none overlap (and the head starts after them), the
  // scan decodes lazily; otherwise everything in range is merged up front: stably by time, blocks
  // in write order (id) and the head last, so "later" means written later.
  bool overlapping = false;
  for (std::size_t i = 1; i < blocks.size(); ++i)
    if (blocks[i].first_time <= blocks[i - 1].last_time) overlapping = true;
  if (!head_t.empty() && !blocks.empty() &&
      *std::min_element(head_t.begin(), head_t.end()) <= blocks.back().last_time)
    overlapping = true;
  if (!overlapping) {
    if (!head_t.empty()) {
      detail::stored_block h{std::numeric_limits<std::int64_t>::max(), head_t.front(), head_t.back(), {}};
      blocks.push_back(std::move(h));
      head_times = std::move(head_t);
      head_values = std::move(head_v);
    }
    return;
  }
  std::sort(blocks.begin(), blocks.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  std::vector<std::int64_t> all_t;
  std::vector<double> all_v;
  std::vector<std::int64_t> t;
  std::vector<double> v;
  for (const auto& b : blocks) {
    if (auto r = decode_block(b.data, t, v); !r) {
      error = r.error();
      break;
    }
    all_t.insert(all_t.end(), t.begin(), t.end());
    all_v.insert(all_v.end(), v.begin(), v.end());
  }
  all_t.insert(all_t.end(), head_t.begin(), head_t.end());
  all_v.insert(all_v.end(), head_v.begin(), head_v.end());
  detail::normalize(all_t, all_v, policy);
  blocks.clear();
  times = std::move(all_t);
  values = std::move(all_v);
  at = static_cast<std::size_t>(std::lower_bound(times.begin(), times.end(), from) - times.begin());
}

bool range_scan::impl::load_next_block() {
  while (next_block < blocks.size()) {
    auto& b = blocks[next_block++];
    if (b.id == std::numeric_limits<std::int64_t>::max()) {
      std::vector<std::int64_t> t = std::move(head_times);
      std::vector<double> v = std::move(head_values);
      detail::normalize(t, v, policy);  // a head may hold rewrites (last_write_wins) and be unsorted
      times = std::move(t);
      values = std::move(v);
    } else if (auto r = decode_block(b.data, times, values); !r) {
      error = r.error();
      times.clear();
      values.clear();
      blocks.clear();
      return false;
    }
    b.data = {};
    at = static_cast<std::size_t>(std::lower_bound(times.begin(), times.end(), from) - times.begin());
    if (at < times.size()) return true;
  }
  return false;
}

bool range_scan::impl::next(std::int64_t& time, double& value) {
  while (at >= times.size()) {
    if (!load_next_block()) return false;
  }
  if (times[at] >= to) {
    at = times.size();
    next_block = blocks.size();
    return false;
  }
  time = times[at];
  value = values[at];
  ++at;
  return true;
}

range_scan::range_scan(std::unique_ptr<impl> i) noexcept : impl_(std::move(i)) {}
range_scan::range_scan(range_scan&&) noexcept = default;
range_scan& range_scan::operator=(range_scan&&) noexcept = default;
range_scan::~range_scan() = default;

bool range_scan::next(std::int64_t& time, double& value) {
  return impl_->next(time, value);
}

void range_scan::drain(std::vector<std::int64_t>& times, std::vector<double>& values) {
  std::int64_t t;
  double v;
  while (impl_->next(t, v)) {
    times.push_back(t);
    values.push_back(v);
  }
}

error_code range_scan::error() const noexcept {
  return impl_->error;
}

result<range_scan> store::scan(std::int64_t series, std::int64_t from, std::int64_t to) {
  auto r = state_->conn.query(
      "SELECT id, first_time, last_time, data FROM keel_tsdb_blocks WHERE series_id = $1 AND last_time >= $2 "
      "AND "
      "first_time < $3 ORDER BY first_time, id",
      series, from, to);
  if (!r) return r.error();
  std::vector<detail::stored_block> blocks;
  for (const auto row : *r) {
    blocks.push_back({row.get<std::int64_t>(0).value(), row.get<std::int64_t>(1).value(),
                      row.get<std::int64_t>(2).value(), row.get<bytes>(3).value()});
  }
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
    auto p = state_->conn.query("SELECT policy FROM keel_tsdb_series WHERE id = $1", series);
    if (!p) return p.error();
    if (p->empty()) return errc::unknown_series;
    policy = static_cast<ordering>((*p)[0].get<std::int16_t>(0).value());
  }
  return range_scan(std::make_unique<range_scan::impl>(std::move(blocks), std::move(head_t),
                                                       std::move(head_v), from, to, policy));
}

result<std::vector<bucket>> store::aggregate(std::int64_t series, const aggregate_options& query,
                                             query_plan* plan) {
  const std::int64_t from = query.from;
  const std::int64_t to = query.to;
  const std::int64_t width = query.width;
  const bool percentiles = query.percentiles;
  const auto buckets = buckets_for(from, to, width);
  if (!buckets) return buckets.error();
  query_plan local;
  query_plan& used = plan != nullptr ? *plan : local;
  used = {};
  auto p = state_->conn.query(
      "SELECT policy, newest_time, rollups_exact_after FROM keel_tsdb_series WHERE id = $1", series);
  if (!p) return p.error();
  if (p->empty()) return errc::unknown_series;
  const auto policy = static_cast<ordering>((*p)[0].get<std::int16_t>(0).value());
  const auto stored_newest = (*p)[0].get<std::optional<std::int64_t>>(1).value();
  const auto rollups_exact_after = (*p)[0].get<std::optional<std::int64_t>>(2).value();
  std::vector<bucket> out = tsdb::aggregate({}, {}, from, to, width, percentiles);
  const std::int64_t first = buckets->first;
  auto slot = [&](std::int64_t t) -> bucket& { return out[buckets->index(t)]; };

  const detail::head* h = nullptr;
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
    detail::normalize(t, v, policy);  // under last_write_wins the head may rewrite its own points
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
        "SELECT coalesce(sum(count), 0)::int8 FROM keel_tsdb_blocks WHERE series_id = $1 AND last_time >= $2 "
        "AND "
        "first_time < $3",
        series, from, to);
    if (!stored) return stored.error();
    auto counted = stored->value<std::int64_t>();
    const auto points = static_cast<double>(counted ? *counted : 0);
    const auto rows = static_cast<double>(rollup_buckets->count);
    if (rows * static_cast<double>(state_->options.points_per_rollup_row) > points) resolution = 0;
  }
  if (resolution != 0) {
    auto rows = state_->conn.query(
        "SELECT replaces, data FROM keel_tsdb_rollup_segments WHERE series_id = $1 AND resolution = $2 AND "
        "last_bucket >= $3 AND first_bucket < $4 ORDER BY id",
        series, resolution, from, to);
    if (!rows) return rows.error();
    // Segments in write order: deltas merge, replacing segments reset their buckets.
    std::vector<bucket> merged(rollup_buckets->count);
    for (std::size_t i = 0; i < merged.size(); ++i) merged[i].start = rollup_buckets->start(i);
    for (const auto row : *rows) {
      const bool replaces = row.get<bool>(0).value();
      const auto records = detail::segment_records(row.get<bytes>(1).value());
      if (!records) return records.error();
      for (byte_reader in(*records); !in.empty();) {
        auto record = detail::read_record(in);
        if (!record) return record.error();
        const bucket& b = *record;
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
      "FROM keel_tsdb_blocks WHERE series_id = $1 AND last_time >= $2 AND first_time < $3",
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

}  // namespace keel::tsdb
