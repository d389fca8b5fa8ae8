#pragma once
/// @file keel/crdt/pn_counter.hpp
/// @brief A PN-counter: every replica increments and decrements; replicas exchange deltas since
/// each other's versions and agree on the value.
///
/// Each replica keeps, per replica, the totals it has seen of that replica's increments and
/// decrements and how many changes they sum; a merge keeps the greater of each. Not thread-safe.
///
/// @code
/// keel::crdt::pn_counter alice(1), bob(2);
/// alice.increment(5).value();
/// bob.decrement(2).value();
/// alice.apply(bob.delta_since(alice.version())).value();
/// bob.apply(alice.delta_since(bob.version())).value();
/// // alice.value() == bob.value() == 3
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/error.hpp>
#include <keel/crdt/version.hpp>

#include <cstdint>
#include <map>

namespace keel::crdt {

class pn_counter {
 public:
  /// A counter at zero, changed as `self`.
  explicit pn_counter(replica_id self) noexcept : self_(self) {}

  /// Adds `by`. @returns errc::counter_overflow if this replica's increments would pass
  /// 2^63 - 1 (nothing changes then).
  [[nodiscard]] result<void> increment(std::uint64_t by = 1);
  /// Subtracts `by`. @returns errc::counter_overflow as increment does, for decrements.
  [[nodiscard]] result<void> decrement(std::uint64_t by = 1);

  /// Increments less decrements, over every replica seen. Computed modulo 2^64 (two's
  /// complement), so replicas agree even if the sum leaves the int64 range.
  [[nodiscard]] std::int64_t value() const noexcept;
  [[nodiscard]] replica_id self() const noexcept { return self_; }

  /// For each replica, how many changes (increments and decrements) of it are counted here.
  [[nodiscard]] version_vector version() const;
  /// The totals of the replicas that have changed since `seen` (docs/crdt.md gives the encoding).
  [[nodiscard]] bytes delta_since(const version_vector& seen) const;
  /// Merges another replica's delta or save: commutative, associative and idempotent.
  /// @returns errc::malformed_delta (nothing applied then).
  [[nodiscard]] result<void> apply(bytes_view delta);

  /// The whole counter (a delta since nothing), and a counter loaded from one, changed as `self`.
  [[nodiscard]] bytes save() const { return delta_since({}); }
  [[nodiscard]] static result<pn_counter> load(bytes_view saved, replica_id self);

 private:
  /// One replica's totals. Each only grows, so a merge takes the greater of each field.
  struct tally {
    std::uint64_t changes = 0;
    std::uint64_t increments = 0;
    std::uint64_t decrements = 0;
  };
  [[nodiscard]] result<void> add(std::uint64_t tally::*total, std::uint64_t by);

  replica_id self_;
  std::map<replica_id, tally> tallies_;
};

}  // namespace keel::crdt
