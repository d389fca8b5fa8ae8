#pragma once
/// @file keel/crdt/detail/dot_kernel.hpp
/// @brief The causal core of the OR-set, the registers and the maps: a dot store and its causal
/// context, joined as in Almeida, Shoker and Baquero's delta-state CRDTs (2018).
///
/// Every live entry is tagged with a dot (replica, counter) that names the change that made it.
/// The causal context holds every dot a replica has seen; a dot in the context but not in the
/// store was removed, so removals need no tombstones. Entries carry a key (an element, a map
/// key, a nested map's composite key) and a value whose meaning is the owning type's.
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/version.hpp>

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace keel::crdt::detail {

/// One change's name: the replica that made it and that replica's count of changes (from 1).
struct dot {
  replica_id replica = 0;
  std::uint64_t counter = 0;
  // clang-tidy 14 reads the defaulted <=>'s comparison with 0 as a null pointer constant.
  friend auto operator<=>(const dot&, const dot&) = default;  // NOLINT(modernize-use-nullptr)
};

/// Counters stay below this, so a replica's next dot never overflows (decoders refuse more).
inline constexpr std::uint64_t counter_limit = std::uint64_t{1} << 62;

/// A set of dots, kept per replica as disjoint, non-adjacent ranges [first, end): compact for
/// the usual contiguous history, and bounded by its encoding for a hostile one.
class causal_context {
 public:
  using ranges = std::map<std::uint64_t, std::uint64_t>;  // first -> end (exclusive)

  [[nodiscard]] bool contains(const dot& d) const noexcept;
  void insert(const dot& d) { insert_range(d.replica, d.counter, d.counter + 1); }
  /// Adds the dots (replica, first) … (replica, end - 1); first < end.
  void insert_range(replica_id replica, std::uint64_t first, std::uint64_t end);
  /// Takes one dot out (a delta leaves out the live dots its receiver already holds).
  void erase(const dot& d);
  void join(const causal_context& other);
  /// For each replica, the n such that its dots 1 … n are all here (the contiguous prefix).
  [[nodiscard]] version_vector version() const;
  /// The highest counter of `replica` here (0 if none).
  [[nodiscard]] std::uint64_t highest(replica_id replica) const noexcept;
  [[nodiscard]] const std::map<replica_id, ranges>& by_replica() const noexcept { return ranges_; }
  friend bool operator==(const causal_context&, const causal_context&) = default;

 private:
  std::map<replica_id, ranges> ranges_;
};

/// What a live dot holds. Ordered so that two payloads claimed for one dot (only a corrupt or
/// hostile peer sends them) join to the same one everywhere.
struct entry {
  std::string key;
  std::string value;
  friend auto operator<=>(const entry&, const entry&) = default;  // NOLINT(modernize-use-nullptr)
};

/// A dot store with its causal context, and the delta-state join. Not thread-safe.
class dot_kernel {
 public:
  /// Checks a decoded entry's key and value for the owning type (its own encoding).
  using entry_check = bool (*)(std::string_view key, std::string_view value);

  explicit dot_kernel(replica_id self) noexcept : self_(self) {}

  [[nodiscard]] replica_id self() const noexcept { return self_; }
  /// Records a new entry under this replica's next dot.
  dot add(std::string key, std::string value);
  /// Observed remove: drops every entry under `key` (their dots stay in the context, so a
  /// replica that still has them drops them when it joins this state).
  void remove_key(std::string_view key);
  /// The same for every key that starts with `prefix`.
  void remove_prefix(std::string_view prefix);

  [[nodiscard]] const std::map<dot, entry>& entries() const noexcept { return entries_; }
  /// Live dots by key.
  [[nodiscard]] const std::map<std::string, std::set<dot>, std::less<>>& keys() const noexcept {
    return by_key_;
  }
  /// The live dots under `key` (empty if none).
  [[nodiscard]] const std::set<dot>& dots_of(std::string_view key) const;
  [[nodiscard]] const causal_context& context() const noexcept { return context_; }
  [[nodiscard]] version_vector version() const { return context_.version(); }

  /// The delta-state join: an entry survives if both sides have it, or if the other side has
  /// not seen its dot. Commutative, associative and idempotent.
  void join(const dot_kernel& other);
  /// The part of this state a replica whose context covers `seen` lacks: the entries whose dots
  /// are not in `seen`, and the context less the live dots in `seen` (so that the receiver
  /// drops exactly what was removed here). Joined into such a replica it gives the same state
  /// as the whole; joined anywhere it is never more than this state.
  [[nodiscard]] dot_kernel delta_since(const version_vector& seen) const;
  /// The entries under keys starting with `prefix`, the prefix cut off, with the whole context.
  [[nodiscard]] dot_kernel slice(std::string_view prefix) const;
  /// Makes the entries under `prefix` those of `part` (keys prefixed) and joins its context:
  /// how a map takes back a nested value edited as a slice.
  void replace_slice(std::string_view prefix, const dot_kernel& part);

  /// `magic` (the type's tag), a format byte, the context, the entries (docs/crdt.md).
  [[nodiscard]] bytes encode(std::string_view magic) const;
  /// Decodes what encode wrote, refusing anything else (errc::malformed_delta): a wrong tag or
  /// format, a truncation, non-canonical order, an entry outside the context, an entry the
  /// type's `check` refuses, trailing bytes. Allocates only what the input's length pays for.
  [[nodiscard]] static result<dot_kernel> decode(bytes_view in, std::string_view magic, entry_check check,
                                                 replica_id self);

  friend bool operator==(const dot_kernel& a, const dot_kernel& b) {
    return a.entries_ == b.entries_ && a.context_ == b.context_;
  }

 private:
  void insert_entry(const dot& d, entry e);
  void erase_entry(const dot& d);

  replica_id self_;
  std::map<dot, entry> entries_;
  std::map<std::string, std::set<dot>, std::less<>> by_key_;
  causal_context context_;
};

/// An or_map's key as the prefix of its nested entries' keys: its length (varint), then it, so
/// that no key's entries run into another's.
[[nodiscard]] std::string composite_prefix(std::string_view key);
/// The map key and the nested key of a composite key; empty if it is not one.
[[nodiscard]] std::optional<std::pair<std::string_view, std::string_view>> split_composite(
    std::string_view composite);

/// How or_map reaches the kernel of a nested type (each causal type befriends it).
struct kernel_access {
  template <class T>
  [[nodiscard]] static const dot_kernel& kernel(const T& value) noexcept {
    return value.kernel_;
  }
  template <class T>
  [[nodiscard]] static T make(dot_kernel kernel) {
    return T(std::move(kernel));
  }
};

}  // namespace keel::crdt::detail
