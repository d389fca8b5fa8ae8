#pragma once
/// @file keel/crdt/or_set.hpp
/// @brief An observed-remove set, add-wins: a remove takes out the additions its replica saw,
/// so an addition concurrent with a remove survives it.
///
/// The optimised OR-set of Almeida, Shoker and Baquero's delta-state CRDTs: each live element
/// holds the dots of the additions that put it there, and a causal context records every dot
/// seen, so a removal leaves no tombstone. Not thread-safe.
///
/// @code
/// keel::crdt::or_set alice(1), bob(2);
/// alice.add("milk");
/// bob.apply(alice.delta_since(bob.version())).value();
/// bob.remove("milk");
/// alice.add("milk");  // concurrently, again
/// alice.apply(bob.delta_since(alice.version())).value();
/// bob.apply(alice.delta_since(bob.version())).value();
/// // alice.contains("milk") && bob.contains("milk"): the addition bob had not seen wins
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/detail/dot_kernel.hpp>
#include <keel/crdt/error.hpp>
#include <keel/crdt/version.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace keel::crdt {

class or_set {
 public:
  /// An empty set changed as `self`.
  explicit or_set(replica_id self) noexcept : kernel_(self) {}

  /// Adds `element` (any bytes); its earlier additions seen here are folded into this one.
  void add(std::string_view element);
  /// Removes `element` as this replica has seen it.
  void remove(std::string_view element) { kernel_.remove_key(element); }
  [[nodiscard]] bool contains(std::string_view element) const { return kernel_.keys().contains(element); }
  /// The elements, sorted.
  [[nodiscard]] std::vector<std::string> elements() const;
  [[nodiscard]] std::size_t size() const noexcept { return kernel_.keys().size(); }
  [[nodiscard]] replica_id self() const noexcept { return kernel_.self(); }

  /// For each replica, how many of its additions (dots) this set has seen.
  [[nodiscard]] version_vector version() const { return kernel_.version(); }
  /// The additions a replica at `seen` lacks, and the context that tells it what was removed.
  [[nodiscard]] bytes delta_since(const version_vector& seen) const;
  /// Merges another replica's delta or save: commutative, associative and idempotent.
  /// @returns errc::malformed_delta (nothing applied then).
  [[nodiscard]] result<void> apply(bytes_view delta);
  [[nodiscard]] bytes save() const { return delta_since({}); }
  [[nodiscard]] static result<or_set> load(bytes_view saved, replica_id self);

  /// The encoding's tag, and its check of one entry (as an or_map value too).
  [[nodiscard]] static std::string magic() { return "KORS"; }
  [[nodiscard]] static bool valid_entry(std::string_view key, std::string_view value) noexcept;

 private:
  friend struct detail::kernel_access;
  explicit or_set(detail::dot_kernel kernel) noexcept : kernel_(std::move(kernel)) {}
  detail::dot_kernel kernel_;
};

}  // namespace keel::crdt
