#pragma once
/// @file keel/crdt/lww_map.hpp
/// @brief A last-writer-wins map of byte strings: per key, the latest write or removal wins.
///
/// Timestamps as in lww_register: one hybrid clock per map, each write and removal stamped
/// max(`now`, highest stamp seen + 1), ties broken by the higher replica id. A removal is a
/// write of "absent" (a tombstone, kept until a later write of the key replaces it), so a
/// removal beats a concurrent write with an earlier stamp — the difference from or_map, where
/// a concurrent update survives. Not thread-safe.
///
/// @code
/// keel::crdt::lww_map alice(1), bob(2);
/// alice.set("colour", "red", 1000);
/// bob.apply(alice.delta_since(bob.version())).value();
/// bob.erase("colour", 1005);
/// alice.set("colour", "green", 1002);  // concurrently, but earlier
/// alice.apply(bob.delta_since(alice.version())).value();
/// // !alice.get("colour"): the later removal wins
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/detail/dot_kernel.hpp>
#include <keel/crdt/error.hpp>
#include <keel/crdt/version.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::crdt {

class lww_map {
 public:
  /// An empty map written as `self`.
  explicit lww_map(replica_id self) noexcept : kernel_(self) {}

  /// Writes `value` under `key`, stamped max(`now`, highest stamp seen + 1).
  void set(std::string_view key, std::string_view value, std::uint64_t now);
  /// Removes `key`, stamped as set stamps.
  void erase(std::string_view key, std::uint64_t now);
  /// The value under `key`; empty if never written or removed last.
  [[nodiscard]] std::optional<std::string> get(std::string_view key) const;
  [[nodiscard]] bool contains(std::string_view key) const { return get(key).has_value(); }
  /// The keys with a value, sorted.
  [[nodiscard]] std::vector<std::string> keys() const;
  [[nodiscard]] std::size_t size() const { return keys().size(); }
  [[nodiscard]] replica_id self() const noexcept { return kernel_.self(); }

  /// For each replica, how many of its writes and removals (dots) this map has seen.
  [[nodiscard]] version_vector version() const { return kernel_.version(); }
  [[nodiscard]] bytes delta_since(const version_vector& seen) const;
  /// Merges another replica's delta or save: commutative, associative and idempotent.
  /// @returns errc::malformed_delta (nothing applied then).
  [[nodiscard]] result<void> apply(bytes_view delta);
  [[nodiscard]] bytes save() const { return delta_since({}); }
  [[nodiscard]] static result<lww_map> load(bytes_view saved, replica_id self);

  /// The encoding's tag, and its check of one entry (as an or_map value too).
  [[nodiscard]] static std::string magic() { return "KLWM"; }
  [[nodiscard]] static bool valid_entry(std::string_view key, std::string_view value) noexcept;

 private:
  friend struct detail::kernel_access;
  explicit lww_map(detail::dot_kernel kernel);
  void write(std::string_view key, bool present, std::string_view value, std::uint64_t now);

  detail::dot_kernel kernel_;
  std::uint64_t highest_stamp_ = 0;  ///< of every write seen: the clock's floor
};

}  // namespace keel::crdt
