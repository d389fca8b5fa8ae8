#pragma once
/// @file keel/events/consumer_group.hpp
/// @brief Consumer groups: competing consumers of `$all` or a category, in any number of
/// processes, with events partitioned by stream so that each stream is handled by one member at
/// a time, in order. Members join and leave (or die) and the partitions are rebalanced.
///
/// The group has a fixed number of partitions; a stream's partition is a hash of its name. Each
/// partition has an owner (with a lease) and a checkpoint in Postgres. Every member heartbeats;
/// the live members, in name order, share the partitions round-robin; a member releases what is
/// no longer its share (saving the checkpoint first) and claims what is free or whose owner's
/// lease ran out. Delivery is at least once: a member that loses a lease while handling (it
/// stalled longer than the session timeout) may have handled events its successor handles again.
#include <keel/core/result.hpp>
#include <keel/events/metrics.hpp>
#include <keel/events/store.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace keel::events {

/// The partition of `stream` in a group of `partitions` (xxHash3 of the name).
[[nodiscard]] std::uint32_t partition_of(std::string_view stream, std::uint32_t partitions) noexcept;

struct consumer_group_options {
  std::string conninfo;
  /// The group's name (its partitions and checkpoints).
  std::string group;
  /// This member's name, unique in the group; generated (host, pid, random) when empty.
  std::string member;
  /// Only this category (all of `$all` when empty), only these types (all when empty).
  std::string category;
  std::vector<std::string> types;
  /// Partitions of the group: fixed when the group is first used; every member must agree.
  std::uint32_t partitions = 16;
  /// A member whose heartbeat is older than this is gone; its partitions are taken over.
  std::chrono::milliseconds session_timeout{10'000};
  /// How often a member heartbeats, renews its leases and rebalances.
  std::chrono::milliseconds heartbeat_interval{1000};
  std::size_t page_size = 1000;
  std::chrono::milliseconds poll_interval{1000};
  std::chrono::milliseconds min_retry_delay{10};
  std::chrono::milliseconds max_retry_delay{5000};
  const upcasters* upcast = nullptr;
  /// Lag gauges (and the store's counters) in these metrics, when set; must outlive this.
  events_metrics* metrics = nullptr;
};

struct consumer_stats {
  std::vector<std::uint32_t> owned;  ///< partitions this member holds now
  std::uint64_t delivered = 0;
  std::uint64_t handler_failures = 0;
  std::uint64_t rebalances = 0;  ///< times the set of owned partitions changed
  bool running = false;
  error_code last_error;
};

/// A consumer group as stored: for pages and health checks.
struct consumer_group_info {
  struct member_info {
    std::string name;
    double heartbeat_age_seconds = 0;  ///< a member older than its session timeout is gone
  };
  struct partition_info {
    std::uint32_t partition = 0;
    std::string owner;              ///< empty: free
    double lease_seconds_left = 0;  ///< negative: the lease ran out and anyone may claim it
    all_position position;          ///< the partition's checkpoint
  };
  std::string name;
  std::uint32_t partitions = 0;
  timestamp created_at{};
  std::vector<member_info> members;            ///< by name, live or not yet cleaned up
  std::vector<partition_info> partition_list;  ///< by partition
};

/// Every consumer group with its members and partitions, by name.
[[nodiscard]] result<std::vector<consumer_group_info>> consumer_groups(pg::connection& c);

/// One member of a consumer group, on a thread of its own. The handler sees the events of the
/// partitions this member owns, in global order (so each stream in version order); an error
/// makes it retry the same event after a backoff.
class consumer {
 public:
  using handler_type = std::function<result<void>(const recorded_event&)>;

  consumer(consumer_group_options options, handler_type handler);
  /// Leaves the group (releasing its partitions) and joins the thread.
  ~consumer();
  consumer(const consumer&) = delete;
  consumer& operator=(const consumer&) = delete;

  /// Joins the group and starts. @returns errc::invalid_checkpoint_name (group or member name),
  /// errc::invalid_stream_name (category), errc::invalid_read (0 partitions or page size),
  /// errc::partitions_mismatch (the group exists with another partition count),
  /// errc::subscription_running, or a Postgres error.
  [[nodiscard]] result<void> start();
  /// Saves its checkpoints, releases its partitions, leaves the group and joins. Idempotent.
  void stop();

  [[nodiscard]] consumer_stats stats() const;
  [[nodiscard]] const std::string& member() const noexcept;
  /// Waits until `count` events were handled by this member (true) or `timeout` passes.
  [[nodiscard]] bool wait_for_count(std::uint64_t count, std::chrono::milliseconds timeout) const;
  /// Waits until this member owns exactly `partitions` partitions (true) or `timeout` passes.
  [[nodiscard]] bool wait_for_owned(std::size_t partitions, std::chrono::milliseconds timeout) const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace keel::events
