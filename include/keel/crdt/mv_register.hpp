#pragma once
/// @file keel/crdt/mv_register.hpp
/// @brief A multi-value register: a write replaces the values its replica saw; concurrent
/// writes are all kept, for the application to resolve (Dynamo's shopping cart).
///
/// @code
/// keel::crdt::mv_register alice(1), bob(2);
/// alice.set("red");
/// bob.set("blue");
/// alice.apply(bob.delta_since(alice.version())).value();
/// // alice.values() == {"blue", "red"}: concurrent
/// alice.set("purple");
/// bob.apply(alice.delta_since(bob.version())).value();
/// // bob.values() == {"purple"}: alice had seen both
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/detail/dot_kernel.hpp>
#include <keel/crdt/error.hpp>
#include <keel/crdt/version.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace keel::crdt {

class mv_register {
 public:
  /// An empty register written as `self`.
  explicit mv_register(replica_id self) noexcept : kernel_(self) {}

  /// Writes `value`, replacing every value this replica has seen.
  void set(std::string_view value);
  /// Forgets every value this replica has seen (a concurrent write survives).
  void clear() { kernel_.remove_key({}); }
  /// The concurrent values, sorted and distinct; empty before any write.
  [[nodiscard]] std::vector<std::string> values() const;
  [[nodiscard]] replica_id self() const noexcept { return kernel_.self(); }

  /// For each replica, how many of its writes (dots) this register has seen.
  [[nodiscard]] version_vector version() const { return kernel_.version(); }
  [[nodiscard]] bytes delta_since(const version_vector& seen) const;
  /// Merges another replica's delta or save: commutative, associative and idempotent.
  /// @returns errc::malformed_delta (nothing applied then).
  [[nodiscard]] result<void> apply(bytes_view delta);
  [[nodiscard]] bytes save() const { return delta_since({}); }
  [[nodiscard]] static result<mv_register> load(bytes_view saved, replica_id self);

  /// The encoding's tag, and its check of one entry (as an or_map value too).
  [[nodiscard]] static std::string magic() { return "KMVR"; }
  [[nodiscard]] static bool valid_entry(std::string_view key, std::string_view value) noexcept;

 private:
  friend struct detail::kernel_access;
  explicit mv_register(detail::dot_kernel kernel) noexcept : kernel_(std::move(kernel)) {}
  detail::dot_kernel kernel_;
};

}  // namespace keel::crdt
