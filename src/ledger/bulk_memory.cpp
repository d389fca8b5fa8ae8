#include <keel/ledger/detail/segmented_vector.hpp>

#include <new>

#include <sys/mman.h>

namespace keel::ledger::detail {

namespace {
constexpr std::size_t huge_page = std::size_t{2} << 20U;
}

void* allocate_bulk(std::size_t bytes) {
  if (bytes < huge_page) return ::operator new(bytes);
  void* memory = ::operator new (bytes, std::align_val_t{huge_page});
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
  if (bytes < huge_page) {
    ::operator delete(memory, bytes);
    return;
  }
  ::operator delete (memory, bytes, std::align_val_t{huge_page});
}

}  // namespace keel::ledger::detail
