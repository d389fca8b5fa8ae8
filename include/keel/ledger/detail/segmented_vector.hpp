#pragma once
/// @file keel/ledger/detail/segmented_vector.hpp
/// @brief An append-only array whose elements never move: segment k holds 16·2^k elements.
/// Growing never copies (a std::vector of millions of journal entries would copy and re-fault
/// its whole buffer at every doubling), memory stays within 2× of the contents, and indexing
/// is two bit operations.
#include <keel/core/assert.hpp>
#include <keel/core/bulk_memory.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

namespace keel::ledger::detail {

// Segments are bulk storage (keel/core/bulk_memory.hpp): filling fresh segments then takes
// one page fault per 2 MiB instead of one per 4 KiB.
template <class T>
class segmented_vector {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "segments are raw storage: elements are copied in and never destroyed");

 public:
  segmented_vector() = default;
  segmented_vector(segmented_vector&&) noexcept = default;
  segmented_vector& operator=(segmented_vector&&) noexcept = default;
  segmented_vector(const segmented_vector&) = delete;
  segmented_vector& operator=(const segmented_vector&) = delete;
  ~segmented_vector() = default;

  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }

  T& push_back(const T& value) {
    const auto [segment, offset] = locate(size_);
    if (segment == segments_.size()) {
      const auto bytes = sizeof(T) * (first_segment << segment);
      segments_.emplace_back(static_cast<T*>(allocate_bulk(bytes)), segment_deleter{bytes});
    }
    T* slot = std::construct_at(segments_[segment].get() + offset, value);
    ++size_;
    return *slot;
  }

  /// Allocates and faults in storage for `count` elements now, so appends up to that count
  /// never stop for the allocator or the kernel.
  void reserve(std::uint64_t count) {
    while (capacity() < count) {
      const auto segment = segments_.size();
      const auto bytes = sizeof(T) * (first_segment << segment);
      segments_.emplace_back(static_cast<T*>(allocate_bulk(bytes)), segment_deleter{bytes});
      prefault_bulk(segments_.back().get(), bytes);
    }
  }

  [[nodiscard]] const T& operator[](std::uint64_t index) const noexcept {
    KEEL_ASSERT(index < size_, "indexes stay inside the array");
    const auto [segment, offset] = locate(index);
    return segments_[segment].get()[offset];
  }
  [[nodiscard]] T& operator[](std::uint64_t index) noexcept {
    KEEL_ASSERT(index < size_, "indexes stay inside the array");
    const auto [segment, offset] = locate(index);
    return segments_[segment].get()[offset];
  }
  [[nodiscard]] const T& back() const noexcept { return (*this)[size_ - 1]; }
  /// Drops the last element (its segment stays allocated for the next push_back).
  void pop_back() noexcept {
    KEEL_ASSERT(size_ > 0, "pop_back of an empty array");
    --size_;
  }

 private:
  static constexpr std::uint64_t first_segment = 16;
  static constexpr int first_segment_bits = 4;

  struct segment_deleter {
    std::size_t bytes;
    void operator()(T* p) const noexcept { free_bulk(p, bytes); }
  };

  struct place {
    std::size_t segment;
    std::uint64_t offset;
  };
  [[nodiscard]] std::uint64_t capacity() const noexcept {
    return segments_.empty() ? 0 : (first_segment << segments_.size()) - first_segment;
  }

  static place locate(std::uint64_t index) noexcept {
    const auto shifted = index + first_segment;
    KEEL_ASSERT(shifted >= first_segment, "index + first_segment does not wrap");
    const auto top = std::bit_width(shifted) - 1;  // in [first_segment_bits, 63]
    return {static_cast<std::size_t>(top - first_segment_bits), shifted - (std::uint64_t{1} << top)};
  }

  std::vector<std::unique_ptr<T[], segment_deleter>> segments_;
  std::uint64_t size_ = 0;
};

}  // namespace keel::ledger::detail
