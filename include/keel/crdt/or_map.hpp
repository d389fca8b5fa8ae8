#pragma once
/// @file keel/crdt/or_map.hpp
/// @brief An observed-remove map of nested CRDTs: keys map to or_set, mv_register,
/// lww_register, lww_map or another or_map, all sharing the map's causal context.
///
/// Almeida, Shoker and Baquero's ORMap. A nested value's entries are the map's entries under
/// the key, so a value merges as its own type merges. A key is present while its value holds
/// anything (an emptied set is an absent key). Removing a key removes what this replica has
/// seen of its value: an update made concurrently elsewhere survives, and the key comes back
/// holding only that update's effect (update wins; the observed state stays removed). Not
/// thread-safe.
///
/// @code
/// keel::crdt::or_map<keel::crdt::or_set> alice(1), bob(2);
/// alice.update("fruit", [](keel::crdt::or_set& s) { s.add("apple"); });
/// bob.apply(alice.delta_since(bob.version())).value();
/// alice.erase("fruit");
/// bob.update("fruit", [](keel::crdt::or_set& s) { s.add("pear"); });  // concurrently
/// alice.apply(bob.delta_since(alice.version())).value();
/// // alice.get("fruit")->elements() == {"pear"}: apple was removed, pear was not seen
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/detail/dot_kernel.hpp>
#include <keel/crdt/error.hpp>
#include <keel/crdt/version.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::crdt {

/// A type an or_map can hold: a causal type kept in a dot kernel (the causal types of
/// keel::crdt: or_set, mv_register, lww_register, lww_map, or_map).
template <class V>
concept nested_crdt = requires(const V& value, std::string_view key, std::string_view entry) {
  { V::magic() } -> std::convertible_to<std::string>;
  { V::valid_entry(key, entry) } -> std::same_as<bool>;
  { detail::kernel_access::kernel(value) } -> std::same_as<const detail::dot_kernel&>;
};

template <nested_crdt V>
class or_map {
 public:
  /// An empty map changed as `self`.
  explicit or_map(replica_id self) noexcept : kernel_(self) {}

  /// Changes the value under `key` (an empty one if absent) by calling `edit(V&)`. The value
  /// is edited as a copy and taken back when `edit` returns, so an exception leaves the map as
  /// it was; the cost is the size of the value and of the causal context.
  template <std::invocable<V&> F>
  void update(std::string_view key, F&& edit) {
    const auto prefix = detail::composite_prefix(key);
    auto value = detail::kernel_access::make<V>(kernel_.slice(prefix));
    std::invoke(std::forward<F>(edit), value);
    kernel_.replace_slice(prefix, detail::kernel_access::kernel(value));
  }
  /// Removes what this replica has seen of the value under `key`.
  void erase(std::string_view key) { kernel_.remove_prefix(detail::composite_prefix(key)); }

  [[nodiscard]] bool contains(std::string_view key) const {
    const auto prefix = detail::composite_prefix(key);
    const auto it = kernel_.keys().lower_bound(prefix);
    return it != kernel_.keys().end() && std::string_view(it->first).substr(0, prefix.size()) == prefix;
  }
  /// A copy of the value under `key` to read (change it with update()); empty if absent.
  [[nodiscard]] std::optional<V> get(std::string_view key) const {
    if (!contains(key)) return std::nullopt;
    return detail::kernel_access::make<V>(kernel_.slice(detail::composite_prefix(key)));
  }
  /// The present keys, sorted.
  [[nodiscard]] std::vector<std::string> keys() const {
    std::vector<std::string> out;
    // A key's nested entries sit together (they share its prefix), so a repeat is the last one.
    for (const auto& [composite, dots] : kernel_.keys()) {
      const auto parts = detail::split_composite(composite);
      if (parts && (out.empty() || out.back() != parts->first)) out.emplace_back(parts->first);
    }
    // Length-prefixed keys are in length order (by varint bytes): sorted by bytes for the reader.
    std::sort(out.begin(), out.end());
    return out;
  }
  [[nodiscard]] std::size_t size() const { return keys().size(); }
  [[nodiscard]] replica_id self() const noexcept { return kernel_.self(); }

  /// For each replica, how many of its changes (dots), at any depth, this map has seen.
  [[nodiscard]] version_vector version() const { return kernel_.version(); }
  [[nodiscard]] bytes delta_since(const version_vector& seen) const {
    return kernel_.delta_since(seen).encode(magic());
  }
  /// Merges another replica's delta or save: commutative, associative and idempotent.
  /// @returns errc::malformed_delta (nothing applied then).
  [[nodiscard]] result<void> apply(bytes_view delta) {
    auto decoded = detail::dot_kernel::decode(delta, magic(), &valid_entry, kernel_.self());
    if (!decoded) return decoded.error();
    kernel_.join(*decoded);
    return {};
  }
  [[nodiscard]] bytes save() const { return delta_since({}); }
  [[nodiscard]] static result<or_map> load(bytes_view saved, replica_id self) {
    or_map out(self);
    if (auto applied = out.apply(saved); !applied) return applied.error();
    return out;
  }

  /// The encoding's tag (the nested type's follows), and its check of one entry.
  [[nodiscard]] static std::string magic() { return "KORM" + V::magic(); }
  [[nodiscard]] static bool valid_entry(std::string_view key, std::string_view value) {
    const auto parts = detail::split_composite(key);
    return parts && V::valid_entry(parts->second, value);
  }

 private:
  friend struct detail::kernel_access;
  explicit or_map(detail::dot_kernel kernel) noexcept : kernel_(std::move(kernel)) {}
  detail::dot_kernel kernel_;
};

}  // namespace keel::crdt
