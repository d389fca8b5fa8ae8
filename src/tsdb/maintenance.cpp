// Retention and compaction of the store, and the elected scheduler that runs them.
#include <keel/pg/advisory_lock.hpp>
#include <keel/pg/transaction.hpp>
#include <keel/tsdb/maintenance.hpp>

#include "store_state.hpp"

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace keel::tsdb {

// ---- retention and compaction (run by the scheduler below, or by the application) ------------

result<void> store::set_retention(std::string_view metric, std::int64_t max_age) {
  if (max_age < 0) return errc::invalid_argument;
  if (max_age == 0) {
    auto r = state_->conn.query("DELETE FROM keel_tsdb_retention WHERE metric = $1", metric);
    if (!r) return r.error();
    return {};
  }
  auto r = state_->conn.query(
      "INSERT INTO keel_tsdb_retention (metric, max_age) VALUES ($1, $2) ON CONFLICT (metric) DO UPDATE SET "
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
      "SELECT s.id, c.cutoff FROM keel_tsdb_series s JOIN keel_tsdb_retention r ON s.metric = r.metric, "
      "LATERAL (SELECT greatest($1::numeric - r.max_age, -9223372036854775808)::int8 AS cutoff) c "
      "WHERE EXISTS (SELECT 1 FROM keel_tsdb_blocks b WHERE b.series_id = s.id AND b.last_time < c.cutoff) "
      "OR EXISTS (SELECT 1 FROM keel_tsdb_rollup_segments u WHERE u.series_id = s.id AND "
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
    if (auto locked = tx->query("SELECT id FROM keel_tsdb_series WHERE id = $1 FOR UPDATE", id); !locked)
      return locked.error();
    auto blocks =
        tx->query("DELETE FROM keel_tsdb_blocks WHERE series_id = $1 AND last_time < $2", id, cutoff);
    if (!blocks) return blocks.error();
    // Whole rollup segments past the cutoff go; a segment straddling it is rewritten without the
    // buckets that end before it.
    if (auto r =
            tx->query("DELETE FROM keel_tsdb_rollup_segments WHERE series_id = $1 AND last_bucket::numeric + "
                      "resolution <= $2",
                      id, cutoff);
        !r)
      return r.error();
    auto straddling = tx->query(
        "SELECT id, resolution, data FROM keel_tsdb_rollup_segments WHERE series_id = $1 AND "
        "first_bucket::numeric + resolution <= $2 FOR UPDATE",
        id, cutoff);
    if (!straddling) return straddling.error();
    for (const auto row : *straddling) {
      const auto resolution = row.get<std::int64_t>(1).value();
      const auto records = detail::segment_records(row.get<bytes>(2).value());
      if (!records) return records.error();
      bytes kept;
      std::int64_t first_bucket = std::numeric_limits<std::int64_t>::max();
      for (byte_reader in(*records); !in.empty();) {
        const auto record = detail::read_record(in);
        if (!record) return record.error();
        if (detail::bucket_ends_by(record->start, resolution, cutoff)) continue;
        first_bucket = std::min(first_bucket, record->start);
        detail::put_record(kept, *record);  // the same bytes: records round-trip exactly
      }
      auto r =
          kept.empty()
              ? tx->query("DELETE FROM keel_tsdb_rollup_segments WHERE id = $1",
                          row.get<std::int64_t>(0).value())
              : tx->query("UPDATE keel_tsdb_rollup_segments SET data = $2, first_bucket = $3 WHERE id = $1",
                          row.get<std::int64_t>(0).value(), bytes_view(detail::pack_segment(kept)),
                          first_bucket);
      if (!r) return r.error();
    }
    if (auto c = tx->commit(); !c) return c.error();
    dropped += blocks->affected();
  }
  return dropped;
}

result<std::uint64_t> store::compact(std::int64_t series, std::size_t below, std::size_t target) {
  auto p = state_->conn.query("SELECT policy FROM keel_tsdb_series WHERE id = $1", series);
  if (!p) return p.error();
  if (p->empty()) return errc::unknown_series;
  const auto policy = static_cast<ordering>((*p)[0].get<std::int16_t>(0).value());
  auto tx = pg::transaction::begin(state_->conn);
  if (!tx) return tx.error();
  // The series row first (as seals take it), so no seal adds segments while they are folded;
  // then blocks, then segments, the order retention takes them in.
  if (auto lock = tx->query("SELECT id FROM keel_tsdb_series WHERE id = $1 FOR UPDATE", series); !lock)
    return lock.error();
  // Under last_write_wins the rewritten block is newer than every other, so a small block that
  // overlaps a block left out would win against a later write there: leave such blocks (and, in
  // turn, the small ones overlapping them) as they are.
  std::vector<std::int64_t> chosen;
  if (policy == ordering::last_write_wins) {
    auto all =
        tx->query("SELECT id, first_time, last_time, count < $2 FROM keel_tsdb_blocks WHERE series_id = $1",
                  series, static_cast<std::int64_t>(below));
    if (!all) return all.error();
    struct span_of {
      std::int64_t id, first, last;
      bool in;
    };
    std::vector<span_of> spans;
    for (const auto row : *all) {
      spans.push_back({row.get<std::int64_t>(0).value(), row.get<std::int64_t>(1).value(),
                       row.get<std::int64_t>(2).value(), row.get<bool>(3).value()});
    }
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
      "SELECT id, data FROM keel_tsdb_blocks WHERE series_id = $1 AND count < $2 AND (NOT $3 OR id = "
      "ANY($4)) "
      "ORDER BY id FOR UPDATE",
      series, static_cast<std::int64_t>(below), policy == ordering::last_write_wins, chosen);
  if (!rows) return rows.error();
  if (rows->size() < 2) {
    if (auto folded = detail::fold_segments(state_->conn, series); !folded) return folded.error();
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
  detail::normalize(all_t, all_v,
                    policy == ordering::last_write_wins ? ordering::last_write_wins : ordering::keep_both);
  auto deleted = tx->query("DELETE FROM keel_tsdb_blocks WHERE id = ANY($1)", ids);
  if (!deleted) return deleted.error();
  std::vector<detail::sealed_block> blocks;
  std::vector<detail::rollup_row> no_rollups;  // the points are unchanged, so are their rollups
  store_options options = state_->options;
  options.rollups.clear();
  options.seal_count = std::clamp<std::size_t>(target, 1, (1U << 24) - 1);
  detail::seal_points(series, all_t, all_v, options, {}, blocks, no_rollups);
  if (auto copied = detail::copy_blocks(state_->conn, blocks); !copied) return copied.error();
  if (auto folded = detail::fold_segments(state_->conn, series); !folded) return folded.error();
  if (auto c = tx->commit(); !c) return c.error();
  return static_cast<std::uint64_t>(ids.size() - blocks.size());
}

// ---- the scheduler ---------------------------------------------------------------------------

namespace {

// One elected scheduler per schema: series tables in two schemas of a database get one each.
constexpr auto election = pg::advisory_key::named("keel.tsdb.maintenance");

}  // namespace

struct maintenance::state {
  maintenance_options options;
  std::optional<store> db;
  // Refers to db's connection: reset before db is replaced or closed.
  std::optional<pg::advisory_lock> lead;
  std::mutex mutex;
  std::condition_variable changed;
  bool stopping = false;
  bool woken = false;
  maintenance_stats stats;
  metrics::counter* runs = nullptr;
  metrics::counter* failures = nullptr;
  metrics::gauge* last_duration = nullptr;
  metrics::gauge* leader = nullptr;
  std::thread thread;

  /// Takes the lock if free; true while this scheduler holds it.
  bool elect() {
    if (lead) return true;
    auto won = pg::advisory_lock::try_acquire(db->connection(), election);
    if (won && *won) lead.emplace(std::move(**won));
    return lead.has_value();
  }

  result<void> run_once(std::uint64_t& dropped, std::uint64_t& compacted) {
    const double now_seconds =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const auto now = static_cast<std::int64_t>(now_seconds * options.store.units_per_second);
    auto retained = db->apply_retention(now);
    if (!retained) return retained.error();
    dropped = *retained;
    auto ids = db->connection().query("SELECT id FROM keel_tsdb_series ORDER BY id");
    if (!ids) return ids.error();
    std::vector<std::int64_t> series;
    for (const auto row : *ids) series.push_back(row.get<std::int64_t>(0).value());
    compacted = 0;
    for (const auto id : series) {
      auto removed = db->compact(id, options.compact_below, options.compact_target);
      if (!removed) return removed.error();
      compacted += *removed;
    }
    return {};
  }

  void loop() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      lock.unlock();
      if (!db->connection().is_open()) {
        // A lost connection lost the lock with it: reconnect and stand for election again.
        lead.reset();
        if (auto reopened = store::open(options.conninfo, options.store); reopened)
          db.emplace(std::move(*reopened));
      }
      const bool is_leader = db->connection().is_open() && elect();
      if (is_leader) {
        const auto started = std::chrono::steady_clock::now();
        std::uint64_t dropped = 0;
        std::uint64_t compacted = 0;
        const auto ran = run_once(dropped, compacted);
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        lock.lock();
        stats.leader = true;
        stats.last_duration_seconds = seconds;
        if (ran) {
          ++stats.runs;
          stats.blocks_dropped += dropped;
          stats.blocks_compacted += compacted;
          if (runs != nullptr) runs->inc();
        } else {
          ++stats.failures;
          if (failures != nullptr) failures->inc();
          if (!db->connection().is_open()) {
            stats.leader = false;  // reconnected on the next turn
            lead.reset();
          }
        }
        if (last_duration != nullptr) last_duration->set(seconds);
      } else {
        lock.lock();
        stats.leader = false;
      }
      if (leader != nullptr) leader->set(stats.leader ? 1 : 0);
      changed.notify_all();
      changed.wait_for(lock, options.interval, [&] { return stopping || woken; });
      woken = false;
    }
  }
};

result<maintenance> maintenance::start(maintenance_options options) {
  if (options.interval <= std::chrono::milliseconds::zero()) return errc::invalid_argument;
  auto opened = store::open(options.conninfo, options.store);
  if (!opened) return opened.error();
  auto s = std::make_unique<state>();
  s->options = std::move(options);
  s->db.emplace(std::move(*opened));
  if (auto* r = s->options.metrics; r != nullptr) {
    s->runs = &r->add_counter("tsdb_maintenance_runs_total", "keel::tsdb maintenance runs completed.").get();
    s->failures = &r->add_counter("tsdb_maintenance_failures_total",
                                  "keel::tsdb maintenance runs that stopped on an error.")
                       .get();
    s->last_duration =
        &r->add_gauge("tsdb_maintenance_last_duration_seconds", "Duration of the last maintenance run.")
             .get();
    s->leader =
        &r->add_gauge("tsdb_maintenance_leader", "1 while this process runs keel::tsdb maintenance.").get();
  }
  state* raw = s.get();
  s->thread = std::thread([raw] { raw->loop(); });
  return maintenance(std::move(s));
}

maintenance::maintenance(std::unique_ptr<state> s) noexcept : state_(std::move(s)) {}
maintenance::maintenance(maintenance&&) noexcept = default;
maintenance& maintenance::operator=(maintenance&& other) noexcept {
  if (this != &other) {
    stop();
    state_ = std::move(other.state_);
  }
  return *this;
}
maintenance::~maintenance() {
  stop();
}

void maintenance::wake() {
  if (!state_) return;
  std::lock_guard lock(state_->mutex);
  state_->woken = true;
  state_->changed.notify_all();
}

void maintenance::stop() {
  if (!state_) return;
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
    state_->changed.notify_all();
  }
  if (state_->thread.joinable()) state_->thread.join();
  state_->lead.reset();  // released at once, so another scheduler takes over without waiting
  state_->db.reset();
  std::lock_guard lock(state_->mutex);
  state_->stats.leader = false;
  if (state_->leader != nullptr) state_->leader->set(0);
}

maintenance_stats maintenance::stats() const {
  if (!state_) return {};
  std::lock_guard lock(state_->mutex);
  return state_->stats;
}

}  // namespace keel::tsdb
