#pragma once
/// @file keel/core/bulk_memory.hpp
/// @brief Storage for large, long-lived tables and arrays that the kernel may back with 2 MiB
/// pages: one page fault and one TLB entry per 2 MiB instead of per 4 KiB, which profiling
/// showed to be the largest single cost of filling the ledger's in-memory journal.
///
/// @code
/// void* table = keel::allocate_bulk(bytes);   // 2 MiB aligned and advised when that large
/// keel::prefault_bulk(table, bytes);          // optional: fault the pages in now, not later
/// keel::free_bulk(table, bytes);
///
/// auto region = keel::bulk_region::reserve(1 << 30);  // an arena: zero pages, faulted on use
/// @endcode
#include <cstddef>
#include <optional>
#include <utility>

namespace keel {

/// The page size huge-page backing works in (x86-64 and arm64 with 4 KiB base pages).
inline constexpr std::size_t huge_page_size = std::size_t{2} << 20U;

/// `bytes` of uninitialised storage. From huge_page_size up it is aligned to huge_page_size and
/// advised for transparent huge pages (only advice: without them it is backed by 4 KiB pages);
/// smaller blocks come from operator new. Throws std::bad_alloc like operator new.
[[nodiscard]] void* allocate_bulk(std::size_t bytes);
/// Frees storage from allocate_bulk; `bytes` must be what was asked for.
void free_bulk(void* memory, std::size_t bytes) noexcept;
/// Makes the kernel hand out (and zero) the pages of `memory` now rather than on first write.
/// What the memory holds stays as it was.
void prefault_bulk(void* memory, std::size_t bytes) noexcept;

/// An address range reserved in one piece, for arenas that carve their blocks out of it: no
/// swap is reserved, pages are zero-filled on first touch (untouched ones cost nothing), the
/// start is aligned to huge_page_size and the range advised for huge pages. Unmapped on
/// destruction.
class bulk_region {
 public:
  /// At least `bytes` (rounded up to huge_page_size), or nullopt when the address space
  /// cannot be had (the caller falls back on the heap).
  [[nodiscard]] static std::optional<bulk_region> reserve(std::size_t bytes) noexcept;

  bulk_region(bulk_region&& other) noexcept
      : mapping_(std::exchange(other.mapping_, nullptr)),
        mapping_size_(std::exchange(other.mapping_size_, 0)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  bulk_region& operator=(bulk_region&& other) noexcept {
    if (this != &other) {
      release();
      mapping_ = std::exchange(other.mapping_, nullptr);
      mapping_size_ = std::exchange(other.mapping_size_, 0);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  bulk_region(const bulk_region&) = delete;
  bulk_region& operator=(const bulk_region&) = delete;
  ~bulk_region() { release(); }

  /// The aligned start of the range.
  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  /// Usable bytes from data(): a multiple of huge_page_size.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  bulk_region(void* mapping, std::size_t mapping_size, std::byte* data, std::size_t size) noexcept
      : mapping_(mapping), mapping_size_(mapping_size), data_(data), size_(size) {}
  void release() noexcept;

  void* mapping_ = nullptr;
  std::size_t mapping_size_ = 0;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace keel
