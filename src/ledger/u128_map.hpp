#pragma once
// A hash map from nonzero 128-bit ids to values: open addressing with linear probing over a
// power-of-two table, keys and values in separate arrays. A lookup hashes once, masks (no
// division by a prime) and scans adjacent 16-byte keys, usually within one cache line; inserts
// never allocate per element. Profiling the memory engine showed std::unordered_map's node
// allocations, prime modulo and pointer chasing at ~40% of a transfer's cost.
//
// Id 0 is never stored (every id the ledger accepts is nonzero): it marks an empty slot, and
// looking it up finds nothing.
#include <keel/ledger/detail/segmented_vector.hpp>
#include <keel/ledger/types.hpp>

#include <bit>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <utility>

namespace keel::ledger::detail {

struct u128_hash {
  std::size_t operator()(u128 v) const noexcept {
    const auto lo = static_cast<std::uint64_t>(v);
    const auto hi = static_cast<std::uint64_t>(v >> 64U);
    std::uint64_t h = (lo ^ (hi * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31U;
    return static_cast<std::size_t>(h);
  }
};

/// A fixed-size array in bulk storage (huge pages for large tables, see allocate_bulk).
template <class T>
class table_array {
 public:
  table_array() = default;
  /// `zeroed`: value-initialise; otherwise default-initialise (no writes for trivial types, so
  /// untouched slots are never faulted in).
  table_array(std::size_t size, bool zeroed)
      : size_(size), data_(static_cast<T*>(allocate_bulk(size * sizeof(T)))) {
    if (zeroed)
      std::uninitialized_value_construct_n(data_, size);
    else
      std::uninitialized_default_construct_n(data_, size);
  }
  table_array(table_array&& other) noexcept
      : size_(std::exchange(other.size_, 0)), data_(std::exchange(other.data_, nullptr)) {}
  table_array& operator=(table_array&& other) noexcept {
    if (this != &other) {
      release();
      size_ = std::exchange(other.size_, 0);
      data_ = std::exchange(other.data_, nullptr);
    }
    return *this;
  }
  table_array(const table_array&) = delete;
  table_array& operator=(const table_array&) = delete;
  ~table_array() { release(); }

  explicit operator bool() const noexcept { return data_ != nullptr; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }

 private:
  void release() noexcept {
    if (data_ == nullptr) return;
    std::destroy_n(data_, size_);
    free_bulk(data_, size_ * sizeof(T));
    data_ = nullptr;
  }
  std::size_t size_ = 0;
  T* data_ = nullptr;
};

template <class V>
class u128_map {
 public:
  u128_map() = default;
  u128_map(u128_map&&) noexcept = default;
  u128_map& operator=(u128_map&&) noexcept = default;
  u128_map(const u128_map&) = delete;
  u128_map& operator=(const u128_map&) = delete;
  ~u128_map() = default;

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }

  /// The value stored for `key`, or null.
  [[nodiscard]] V* find(u128 key) noexcept {
    if (key == 0 || size_ == 0) return nullptr;
    for (std::size_t i = home(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == 0) return nullptr;
    }
  }
  [[nodiscard]] const V* find(u128 key) const noexcept { return const_cast<u128_map*>(this)->find(key); }
  [[nodiscard]] std::size_t count(u128 key) const noexcept { return find(key) != nullptr ? 1 : 0; }

  [[nodiscard]] V& at(u128 key) {
    if (V* found = find(key)) return *found;
    throw std::out_of_range("keel::ledger: id not in the working set");
  }
  [[nodiscard]] const V& at(u128 key) const { return const_cast<u128_map*>(this)->at(key); }

  /// Inserts `value` unless `key` is present. @returns the stored value and whether it was inserted.
  std::pair<V*, bool> emplace(u128 key, V value) {
    if (key == 0) throw std::invalid_argument("keel::ledger: id 0 cannot be stored");
    if ((size_ + 1) * 4 > capacity() * 3) grow();
    std::size_t i = home(key);
    for (; keys_[i] != 0; i = (i + 1) & mask_)
      if (keys_[i] == key) return {&values_[i], false};
    keys_[i] = key;
    values_[i] = std::move(value);
    ++size_;
    return {&values_[i], true};
  }
  V& operator[](u128 key) { return *emplace(key, V{}).first; }

  /// Sizes the table for `count` keys now (and faults its pages in), so inserting up to that
  /// many never rehashes.
  void reserve(std::size_t count) {
    while (count * 4 > capacity() * 3) grow();
    prefault_bulk(&values_[0], capacity() * sizeof(V));
  }

  /// Removes `key` if present (backward-shift deletion: no tombstones, probes stay short).
  bool erase(u128 key) {
    if (key == 0 || size_ == 0) return false;
    std::size_t i = home(key);
    for (; keys_[i] != key; i = (i + 1) & mask_)
      if (keys_[i] == 0) return false;
    for (std::size_t j = (i + 1) & mask_; keys_[j] != 0; j = (j + 1) & mask_) {
      // Move j back into the hole at i unless its home lies cyclically in (i, j].
      const std::size_t h = home(keys_[j]);
      const bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
      if (stays) continue;
      keys_[i] = keys_[j];
      values_[i] = std::move(values_[j]);
      i = j;
    }
    keys_[i] = 0;
    values_[i] = V{};
    --size_;
    return true;
  }

  /// Calls f(key, value) for every entry, in no particular order.
  template <class F>
  void for_each(F&& f) const {
    for (std::size_t i = 0; i < capacity(); ++i)
      if (keys_[i] != 0) f(keys_[i], values_[i]);
  }

 private:
  [[nodiscard]] std::size_t capacity() const noexcept { return keys_ ? mask_ + 1 : 0; }
  [[nodiscard]] std::size_t home(u128 key) const noexcept { return u128_hash{}(key)&mask_; }

  void grow() {
    const std::size_t old_capacity = capacity();
    const std::size_t new_capacity = old_capacity == 0 ? 16 : old_capacity * 2;
    auto old_keys = std::move(keys_);
    auto old_values = std::move(values_);
    keys_ = table_array<u128>(new_capacity, true);  // zero: empty
    values_ = table_array<V>(new_capacity, false);  // a value is written when its key is
    mask_ = new_capacity - 1;
    for (std::size_t i = 0; i < old_capacity; ++i) {
      if (old_keys[i] == 0) continue;
      std::size_t j = home(old_keys[i]);
      while (keys_[j] != 0) j = (j + 1) & mask_;
      keys_[j] = old_keys[i];
      values_[j] = std::move(old_values[i]);
    }
  }

  table_array<u128> keys_;
  table_array<V> values_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace keel::ledger::detail
