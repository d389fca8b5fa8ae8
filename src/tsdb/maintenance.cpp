#include <keel/pg/advisory_lock.hpp>
#include <keel/tsdb/maintenance.hpp>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace keel::tsdb {
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
