#include <keel/core/bulk_memory.hpp>

#include <cstdint>
#include <new>

#include <sys/mman.h>

namespace keel {

void* allocate_bulk(std::size_t bytes) {
  if (bytes < huge_page_size) return ::operator new(bytes);
  void* memory = ::operator new (bytes, std::align_val_t{huge_page_size});
  // Only advice: without transparent huge pages the memory is simply faulted in 4 KiB pages.
  (void)::madvise(memory, bytes, MADV_HUGEPAGE);
  return memory;
}

void prefault_bulk(void* memory, std::size_t bytes) noexcept {
#ifdef MADV_POPULATE_WRITE
  if (::madvise(memory, bytes, MADV_POPULATE_WRITE) == 0) return;
#endif
  // Older kernels, or memory not page-aligned: write each page's first byte back to itself, so
  // whatever the memory holds stays as it was.
  auto* bytes_ptr = static_cast<volatile unsigned char*>(memory);
  for (std::size_t at = 0; at < bytes; at += 4096) bytes_ptr[at] = bytes_ptr[at];
}

void free_bulk(void* memory, std::size_t bytes) noexcept {
  // The unsized forms: clang declares the sized ones only with -fsized-deallocation, and the
  // size is only a hint to the allocator.
  if (bytes < huge_page_size) {
    ::operator delete(memory);
    return;
  }
  ::operator delete (memory, std::align_val_t{huge_page_size});
}

std::optional<bulk_region> bulk_region::reserve(std::size_t bytes) noexcept {
  if (bytes == 0 || bytes > SIZE_MAX / 2) return std::nullopt;
  const std::size_t size = (bytes + huge_page_size - 1) & ~(huge_page_size - 1);
  // One huge page more than asked, so an aligned start always fits inside the mapping.
  const std::size_t mapping_size = size + huge_page_size;
  void* mapping = ::mmap(nullptr, mapping_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping == MAP_FAILED) return std::nullopt;
  const auto address = reinterpret_cast<std::uintptr_t>(mapping);
  const auto padding = ((address + huge_page_size - 1) & ~(huge_page_size - 1)) - address;
  auto* data = static_cast<std::byte*>(mapping) + padding;
  (void)::madvise(data, size, MADV_HUGEPAGE);  // a hint: without THP it stays 4 KiB pages
  return bulk_region(mapping, mapping_size, data, size);
}

void bulk_region::release() noexcept {
  if (mapping_ != nullptr) (void)::munmap(mapping_, mapping_size_);
  mapping_ = nullptr;
  data_ = nullptr;
  size_ = 0;
}

}  // namespace keel
