#pragma once
/// @file keel/crdt/lww_register.hpp
/// @brief A last-writer-wins register: one value, the latest write by timestamp.
///
/// Timestamps come from a hybrid clock the replica keeps: a write is stamped with the caller's
/// `now` (e.g. milliseconds since the epoch), or one past the highest stamp the replica has
/// seen if that is later, so a write always beats every write its replica had seen, and
/// otherwise follows wall-clock time. Equal stamps are ordered by replica id (the higher wins),
/// so every replica picks the same winner. Writes are causal: a write replaces the ones its
/// replica saw; concurrent writes are all kept until one is overwritten, and get() returns the
/// latest of them. Not thread-safe.
///
/// @code
/// keel::crdt::lww_register alice(1), bob(2);
/// alice.set("red", 1000);
/// bob.set("blue", 1001);
/// alice.apply(bob.delta_since(alice.version())).value();
/// bob.apply(alice.delta_since(bob.version())).value();
/// // *alice.get() == *bob.get() == "blue"
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/detail/dot_kernel.hpp>
#include <keel/crdt/error.hpp>
#include <keel/crdt/version.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keel::crdt {

class lww_register {
 public:
  /// An empty register written as `self`.
  explicit lww_register(replica_id self) noexcept : kernel_(self) {}

  /// Writes `value`, stamped max(`now`, highest stamp seen + 1).
  void set(std::string_view value, std::uint64_t now);
  /// The winning value; empty before any write has been seen.
  [[nodiscard]] std::optional<std::string> get() const;
  /// The winning write's stamp (0 before any write).
  [[nodiscard]] std::uint64_t timestamp() const noexcept;
  [[nodiscard]] replica_id self() const noexcept { return kernel_.self(); }

  /// For each replica, how many of its writes (dots) this register has seen.
  [[nodiscard]] version_vector version() const { return kernel_.version(); }
  /// The writes a replica at `seen` lacks, and which of its writes are overwritten.
  [[nodiscard]] bytes delta_since(const version_vector& seen) const;
  /// Merges another replica's delta or save: commutative, associative and idempotent.
  /// @returns errc::malformed_delta (nothing applied then).
  [[nodiscard]] result<void> apply(bytes_view delta);
  [[nodiscard]] bytes save() const { return delta_since({}); }
  [[nodiscard]] static result<lww_register> load(bytes_view saved, replica_id self);

  /// The encoding's tag, and its check of one entry (as an or_map value too).
  [[nodiscard]] static std::string magic() { return "KLWR"; }
  [[nodiscard]] static bool valid_entry(std::string_view key, std::string_view value) noexcept;

 private:
  friend struct detail::kernel_access;
  explicit lww_register(detail::dot_kernel kernel) noexcept : kernel_(std::move(kernel)) {}
  detail::dot_kernel kernel_;
};

}  // namespace keel::crdt
