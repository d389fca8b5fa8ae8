// A consumer group member's thread: heartbeat, rebalance (release what is no longer its share,
// claim what is), read from its partitions' lowest checkpoint to the horizon handing over the
// events of the partitions it owns, save their checkpoints (which also checks that it still owns
// them), wait. Ownership is a row per partition with an owner and a lease; Postgres decides
// every claim, so two members never own one partition at once.
#include <keel/core/assert.hpp>
#include <keel/core/backoff.hpp>
#include <keel/core/bytes.hpp>
#include <keel/core/log.hpp>
#include <keel/core/xxhash.hpp>
#include <keel/events/consumer_group.hpp>

#include "lag.hpp"
#include "runner.hpp"
#include "waker.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include <unistd.h>

namespace keel::events {
namespace {

constexpr std::string_view join_sql = R"sql(
WITH made AS (
  INSERT INTO keel_events_groups (name, partitions) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING
  RETURNING partitions
)
SELECT partitions FROM made UNION ALL SELECT partitions FROM keel_events_groups WHERE name = $1 LIMIT 1)sql";

constexpr std::string_view make_partitions_sql = R"sql(
INSERT INTO keel_events_group_partitions (group_name, partition)
SELECT $1, p FROM generate_series(0, $2 - 1) p ON CONFLICT DO NOTHING)sql";

// Heartbeat, and the live members in name order.
constexpr std::string_view heartbeat_sql = R"sql(
WITH beat AS (
  INSERT INTO keel_events_group_members (group_name, member) VALUES ($1, $2)
  ON CONFLICT (group_name, member) DO UPDATE SET heartbeat_at = now()
)
-- The statement does not see its own insert: this member is added by name.
SELECT member FROM keel_events_group_members
WHERE group_name = $1 AND heartbeat_at > now() - $3 * interval '1 millisecond'
UNION SELECT $2::text
ORDER BY member)sql";

// Takes (or keeps) the partitions of this member's share that are free, its own, or held under
// an expired lease; renews the lease of each. Returns what it holds among them, with checkpoints.
constexpr std::string_view claim_sql = R"sql(
UPDATE keel_events_group_partitions SET owner = $2, lease_expires_at = now() + $4 * interval '1 millisecond'
WHERE group_name = $1 AND partition = ANY($3::int8[])
  AND (owner IS NULL OR owner = $2 OR lease_expires_at < now())
RETURNING partition, transaction_id, position)sql";

// Saves checkpoints of partitions still owned; returns the ones saved.
constexpr std::string_view save_sql = R"sql(
UPDATE keel_events_group_partitions p SET transaction_id = x.t, position = x.pos,
  lease_expires_at = now() + $6 * interval '1 millisecond'
FROM unnest($3::int8[], $4::int8[], $5::int8[]) AS x(part, t, pos)
WHERE p.group_name = $1 AND p.partition = x.part AND p.owner = $2
RETURNING p.partition)sql";

constexpr std::string_view release_sql = R"sql(
UPDATE keel_events_group_partitions SET owner = NULL, lease_expires_at = NULL
WHERE group_name = $1 AND owner = $2 AND partition = ANY($3::int8[]))sql";

constexpr std::string_view leave_sql =
    "DELETE FROM keel_events_group_members WHERE group_name = $1 AND member = $2";

std::string generated_member_name() {
  std::array<char, 256> host{};
  (void)::gethostname(host.data(), host.size() - 1);
  std::random_device random;
  return std::string(host.data()) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(random() % 1'000'000);
}

}  // namespace

result<std::vector<consumer_group_info>> consumer_groups(pg::connection& c) {
  auto groups = c.query(
      "SELECT g.name, g.partitions, g.created_at, coalesce(m.member, ''), "
      "coalesce(extract(epoch FROM now() - m.heartbeat_at)::float8, 0) "
      "FROM keel_events_groups g LEFT JOIN keel_events_group_members m ON m.group_name = g.name "
      "ORDER BY g.name COLLATE \"C\", m.member COLLATE \"C\"");
  if (!groups) return groups.error();
  std::vector<consumer_group_info> out;
  for (const auto r : *groups) {
    auto f = r.as<std::string, std::int32_t, timestamp, std::string, double>();
    if (!f) return f.error();
    auto& [name, partitions, created_at, member, age] = *f;
    if (out.empty() || out.back().name != name) {
      out.push_back({.name = std::move(name),
                     .partitions = static_cast<std::uint32_t>(partitions),
                     .created_at = created_at});
    }
    if (!member.empty()) out.back().members.push_back({std::move(member), age});
  }
  auto parts = c.query(
      "SELECT group_name, partition, coalesce(owner, ''), "
      "coalesce(extract(epoch FROM lease_expires_at - now())::float8, 0), transaction_id, position "
      "FROM keel_events_group_partitions ORDER BY group_name COLLATE \"C\", partition");
  if (!parts) return parts.error();
  auto group = out.begin();
  for (const auto r : *parts) {
    auto f = r.as<std::string, std::int32_t, std::string, double, std::int64_t, std::int64_t>();
    if (!f) return f.error();
    auto& [name, partition, owner, lease, transaction, position] = *f;
    while (group != out.end() && group->name < name) ++group;
    if (group == out.end() || group->name != name) continue;  // a group deleted between the reads
    group->partition_list.push_back({.partition = static_cast<std::uint32_t>(partition),
                                     .owner = std::move(owner),
                                     .lease_seconds_left = lease,
                                     .position = {transaction, position}});
  }
  return out;
}

std::uint32_t partition_of(std::string_view stream, std::uint32_t partitions) noexcept {
  if (partitions == 0) return 0;
  return static_cast<std::uint32_t>(xxh3_64(as_bytes(stream)) % partitions);
}

struct consumer::impl {
  consumer_group_options options;
  handler_type handler;
  store events;

  detail::observed<consumer_stats> stats;
  detail::runner runner;

  // Owned by the thread.
  std::optional<pg::connection> connection;
  std::map<std::uint32_t, all_position> owned;  // partition → checkpoint
  std::map<std::uint32_t, all_position> saved;  // what Postgres has
  std::optional<timestamp> last_recorded;       // of the last event handled

  impl(consumer_group_options o, handler_type h)
      : options(std::move(o)),
        handler(std::move(h)),
        events(store_options{.upcast = options.upcast, .metrics = options.metrics}) {
    if (options.member.empty()) options.member = generated_member_name();
  }

  void update(const std::function<void(consumer_stats&)>& change) { stats.update(change); }

  void publish_owned() {
    std::vector<std::uint32_t> list;
    for (const auto& [p, at] : owned) list.push_back(p);
    update([&](consumer_stats& s) {
      if (s.owned != list) ++s.rebalances;
      s.owned = std::move(list);
    });
  }

  [[nodiscard]] std::vector<std::int64_t> owned_list() const {
    std::vector<std::int64_t> list;
    for (const auto& [p, at] : owned) list.push_back(p);
    return list;
  }

  result<void> join(pg::connection& c) {
    // Two members creating the group at once: the second's insert waits for the first's and
    // does nothing, and its own snapshot does not see the row yet; the next statement does.
    auto rows = c.query(join_sql, options.group, static_cast<std::int32_t>(options.partitions));
    if (rows && rows->empty())
      rows = c.query(join_sql, options.group, static_cast<std::int32_t>(options.partitions));
    if (!rows) return rows.error();
    auto partitions = rows->value<std::int32_t>();
    if (!partitions) return partitions.error();
    if (*partitions != static_cast<std::int32_t>(options.partitions)) return errc::partitions_mismatch;
    auto made = c.query(make_partitions_sql, options.group, static_cast<std::int32_t>(options.partitions));
    if (!made) return made.error();
    return {};
  }

  // Heartbeat and rebalance.
  result<void> maintain() {
    auto& c = *connection;
    auto members = c.query(heartbeat_sql, options.group, options.member,
                           static_cast<std::int64_t>(options.session_timeout.count()));
    if (!members) return members.error();
    std::vector<std::string> live;
    for (const auto r : *members) {
      auto name = r.get<std::string>(0);
      if (!name) return name.error();
      live.push_back(std::move(*name));
    }
    const auto me = std::find(live.begin(), live.end(), options.member);
    KEEL_ASSERT(me != live.end());
    const auto index = static_cast<std::uint32_t>(me - live.begin());
    const auto count = static_cast<std::uint32_t>(live.size());
    std::vector<std::int64_t> share;
    for (std::uint32_t p = index; p < options.partitions; p += count) share.push_back(p);

    // Give back what is no longer this member's share, checkpoint first.
    std::vector<std::int64_t> surplus;
    for (const auto& [p, at] : owned) {
      if (std::find(share.begin(), share.end(), static_cast<std::int64_t>(p)) == share.end())
        surplus.push_back(p);
    }
    if (!surplus.empty()) {
      if (auto done = save(); !done) return done;
      if (auto released = c.query(release_sql, options.group, options.member, surplus); !released) {
        return released.error();
      }
      for (const auto p : surplus) {
        owned.erase(static_cast<std::uint32_t>(p));
        saved.erase(static_cast<std::uint32_t>(p));
      }
    }
    auto claimed = c.query(claim_sql, options.group, options.member, share,
                           static_cast<std::int64_t>(options.session_timeout.count()));
    if (!claimed) return claimed.error();
    std::map<std::uint32_t, all_position> now_owned;
    for (const auto r : *claimed) {
      auto f = r.as<std::int32_t, std::int64_t, std::int64_t>();
      if (!f) return f.error();
      const auto p = static_cast<std::uint32_t>(std::get<0>(*f));
      const all_position stored{std::get<1>(*f), std::get<2>(*f)};
      // A partition held on: keep the position reached (it may be ahead of what was saved).
      const auto held = owned.find(p);
      now_owned[p] = held != owned.end() ? std::max(held->second, stored) : stored;
      if (held == owned.end()) saved[p] = stored;
    }
    for (auto it = saved.begin(); it != saved.end();) {
      it = now_owned.contains(it->first) ? std::next(it) : saved.erase(it);
    }
    owned = std::move(now_owned);
    publish_owned();
    return {};
  }

  // Saves the checkpoints that moved; drops partitions whose lease was lost.
  result<void> save() {
    if (owned.empty()) return {};
    std::vector<std::int64_t> parts, transactions, positions;
    for (const auto& [p, at] : owned) {
      parts.push_back(p);
      transactions.push_back(at.transaction);
      positions.push_back(at.position);
    }
    auto kept = connection->query(save_sql, options.group, options.member, parts, transactions, positions,
                                  static_cast<std::int64_t>(options.session_timeout.count()));
    if (!kept) return kept.error();
    std::map<std::uint32_t, all_position> still;
    for (const auto r : *kept) {
      auto p = r.get<std::int32_t>(0);
      if (!p) return p.error();
      const auto part = static_cast<std::uint32_t>(*p);
      still[part] = owned[part];
    }
    if (still.size() != owned.size()) {
      log::warn("events consumer lost partitions (its lease ran out)",
                {{"group", options.group}, {"member", options.member}});
    }
    owned = std::move(still);
    saved = owned;
    publish_owned();
    return {};
  }

  // Reads from the lowest checkpoint of the owned partitions to the horizon. @returns true when
  // caught up, false when it paused (handler failure, heartbeat due, stop).
  result<bool> drain(std::chrono::steady_clock::time_point heartbeat_due, bool& handler_failed) {
    handler_failed = false;
    if (owned.empty()) return true;
    all_position from = all_position::end();
    for (const auto& [p, at] : owned) from = std::min(from, at);
    bool paused = false;
    auto end = events.for_each(
        *connection,
        {.after = from, .max_count = options.page_size, .category = options.category, .types = options.types},
        [&](const recorded_event& e) {
          const auto part = owned.find(partition_of(e.stream, options.partitions));
          if (part != owned.end() && e.position > part->second) {
            if (!detail::handle_event(handler, e, stats)) {
              handler_failed = true;
              return false;
            }
            part->second = e.position;
            last_recorded = e.recorded_at;
            update([](consumer_stats& s) { ++s.delivered; });
          }
          if (runner.stopping() || std::chrono::steady_clock::now() >= heartbeat_due) {
            paused = true;
            return false;
          }
          return true;
        });
    if (!end) return {boost::system::in_place_error, end.error()};
    if (handler_failed || paused) return false;
    // Everything below `end` was looked at for every owned partition.
    for (auto& [p, at] : owned) at = std::max(at, *end);
    return true;
  }

  void run() {
    detail::waker waker(options.conninfo, options.category, options.min_retry_delay, options.max_retry_delay,
                        {});
    runner.attach(&waker);
    backoff retry({.initial = options.min_retry_delay, .max = options.max_retry_delay});
    const auto wait = [&](std::chrono::milliseconds delay) { runner.wait(waker, delay); };
    auto heartbeat_due = std::chrono::steady_clock::now();
    while (!runner.stopping()) {
      if (!connection || !connection->is_open()) {
        auto opened = pg::connection::connect(options.conninfo, {.application_name = "keel-events-consumer"});
        if (!opened) {
          update([&](consumer_stats& s) { s.last_error = opened.error(); });
          wait(retry.next());
          continue;
        }
        connection = std::move(*opened);
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= heartbeat_due) {
        if (auto done = maintain(); !done) {
          update([&](consumer_stats& s) { s.last_error = done.error(); });
          if (!connection->is_open()) connection.reset();
          wait(retry.next());
          continue;
        }
        heartbeat_due = now + options.heartbeat_interval;
      }
      bool handler_failed = false;
      auto drained = drain(heartbeat_due, handler_failed);
      if (!drained) {
        update([&](consumer_stats& s) { s.last_error = drained.error(); });
        if (!connection->is_open()) connection.reset();
        wait(retry.next());
        continue;
      }
      if (options.metrics != nullptr && !owned.empty()) {
        all_position lowest = all_position::end();
        for (const auto& [p, at] : owned) lowest = std::min(lowest, at);
        detail::report_lag(events, *connection, options.metrics, options.group + "/" + options.member,
                           *drained, lowest, last_recorded);
      }
      if (owned != saved) {
        if (auto done = save(); !done) update([&](consumer_stats& s) { s.last_error = done.error(); });
      }
      if (handler_failed) {
        wait(retry.next());
        continue;
      }
      retry.reset();
      if (*drained) {
        const auto until_heartbeat = std::chrono::duration_cast<std::chrono::milliseconds>(
            heartbeat_due - std::chrono::steady_clock::now());
        wait(std::clamp(until_heartbeat, std::chrono::milliseconds(1), options.poll_interval));
      }
    }
    // Leave: checkpoints saved, partitions and membership given back for the others to take.
    if (connection && connection->is_open()) {
      (void)save();
      (void)connection->query(release_sql, options.group, options.member, owned_list());
      (void)connection->query(leave_sql, options.group, options.member);
    }
    owned.clear();
    publish_owned();
    runner.attach(nullptr);
  }
};

consumer::consumer(consumer_group_options options, handler_type handler)
    : impl_(std::make_shared<impl>(std::move(options), std::move(handler))) {}

consumer::~consumer() {
  stop();
}

result<void> consumer::start() {
  if (impl_->runner.running()) return errc::subscription_running;
  const auto& o = impl_->options;
  if (!validate_checkpoint_name(o.group) || !validate_checkpoint_name(o.member))
    return errc::invalid_checkpoint_name;
  if (!o.category.empty() &&
      (!validate_stream_name(o.category) || o.category.find('-') != std::string::npos)) {
    return errc::invalid_stream_name;
  }
  if (o.partitions == 0 || o.partitions > 4096 || o.page_size == 0) return errc::invalid_read;
  auto c = pg::connection::connect(o.conninfo, {.application_name = "keel-events-consumer"});
  if (!c) return c.error();
  if (auto joined = impl_->join(*c); !joined) return joined;
  impl_->connection = std::move(*c);
  impl_->update([](consumer_stats& s) {
    s = consumer_stats{};
    s.running = true;
  });
  impl_->runner.start([state = impl_] { state->run(); });
  return {};
}

void consumer::stop() {
  if (!impl_->runner.running()) return;
  impl_->runner.stop();
  impl_->update([](consumer_stats& s) { s.running = false; });
}

consumer_stats consumer::stats() const {
  return impl_->stats.get();
}

const std::string& consumer::member() const noexcept {
  return impl_->options.member;
}

bool consumer::wait_for_count(std::uint64_t count, std::chrono::milliseconds timeout) const {
  return impl_->stats.wait(timeout, [&](const consumer_stats& s) { return s.delivered >= count; });
}

bool consumer::wait_for_owned(std::size_t partitions, std::chrono::milliseconds timeout) const {
  return impl_->stats.wait(timeout, [&](const consumer_stats& s) { return s.owned.size() == partitions; });
}

}  // namespace keel::events
