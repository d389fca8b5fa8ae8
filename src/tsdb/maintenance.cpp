#include <keel/tsdb/maintenance.hpp>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace keel::tsdb {
namespace {

// The advisory lock's first key (the second is the schema's hash): "tsdb" in ASCII, so it does not
// collide with the keys other components take.
constexpr std::int32_t election_class = 0x74736462;

}  // namespace

struct maintenance::state {
  maintenance_options options;
  std::optional<store> db;
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

  /// Takes the lock if free (a session lock: held until this connection closes).
  result<bool> elect() {
    auto r =
        db->connection().query("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", election_class);
    if (!r) return result<bool>(boost::system::in_place_error, r.error());  // bool would take it too
    return r->value<bool>();
  }

  result<void> run_once(std::uint64_t& dropped, std::uint64_t& compacted) {
    const double now_seconds =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const auto now = static_cast<std::int64_t>(now_seconds * options.store.units_per_second);
    auto retained = db->apply_retention(now);
    if (!retained) return retained.error();
    dropped = *retained;
    auto ids = db->connection().query("SELECT id FROM tsdb_series ORDER BY id");
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
      // Once elected, not again: session advisory locks stack, and this one is held until the
      // connection closes.
      bool is_leader = stats.leader;
      lock.unlock();
      if (!db->connection().is_open()) {
        // A lost connection lost the lock with it: reconnect and stand for election again.
        is_leader = false;
        if (auto reopened = store::open(options.conninfo, options.store); reopened)
          db.emplace(std::move(*reopened));
      }
      if (!is_leader) {
        if (auto elected = elect(); elected) is_leader = *elected;
      }
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
          if (!db->connection().is_open()) stats.leader = false;  // reconnected on the next turn
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
  state_->db.reset();  // closing the connection releases the lock
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
