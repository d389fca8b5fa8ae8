#pragma once
/// @file keel/ledger/detail/segmented_vector.hpp
/// @brief An append-only array whose elements never move: segment k holds 16·2^k elements.
/// Growing never copies (a std::vector of millions of journal entries would copy and re-fault
/// its whole buffer at every doubling), memory stays within 2× of the contents, and indexing
/// is two bit operations.
#include <bit>
#include <cstdint>
#include <memory>
#include <vector>

namespace keel::ledger::detail {

template <class T>
class segmented_vector {
 public:
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }

  T& push_back(const T& value) {
    const auto [segment, offset] = locate(size_);
    if (segment == segments_.size())
      segments_.push_back(std::make_unique_for_overwrite<T[]>(first_segment << segment));
    T& slot = segments_[segment][offset];
    slot = value;
    ++size_;
    return slot;
  }

  [[nodiscard]] const T& operator[](std::uint64_t index) const noexcept {
    const auto [segment, offset] = locate(index);
    return segments_[segment][offset];
  }
  [[nodiscard]] T& operator[](std::uint64_t index) noexcept {
    const auto [segment, offset] = locate(index);
    return segments_[segment][offset];
  }
  [[nodiscard]] const T& back() const noexcept { return (*this)[size_ - 1]; }

 private:
  static constexpr std::uint64_t first_segment = 16;
  static constexpr int first_segment_bits = 4;

  struct place {
    std::size_t segment;
    std::uint64_t offset;
  };
  static place locate(std::uint64_t index) noexcept {
    const auto shifted = index + first_segment;
    const auto top = std::bit_width(shifted) - 1;  // >= first_segment_bits
    return {static_cast<std::size_t>(top - first_segment_bits), shifted - (std::uint64_t{1} << top)};
  }

  std::vector<std::unique_ptr<T[]>> segments_;
  std::uint64_t size_ = 0;
};

}  // namespace keel::ledger::detail
