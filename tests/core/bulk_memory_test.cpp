#include <keel/core/bulk_memory.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>

using namespace keel;

namespace {
bool aligned_to_huge_page(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % huge_page_size == 0;
}
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("bulk blocks: large ones are huge-page aligned; prefaulting keeps what they hold") {
    for (const std::size_t bytes :
         {std::size_t{1}, std::size_t{4096}, huge_page_size - 1, huge_page_size, 3 * huge_page_size + 17}) {
      INFO("bytes " << bytes);
      auto* block = static_cast<unsigned char*>(allocate_bulk(bytes));
      REQUIRE(block != nullptr);
      if (bytes >= huge_page_size) CHECK(aligned_to_huge_page(block));
      for (std::size_t at = 0; at < bytes; at += 997) block[at] = static_cast<unsigned char>(at % 251);
      block[bytes - 1] = 0xab;
      prefault_bulk(block, bytes);
      bool kept = block[bytes - 1] == 0xab;
      for (std::size_t at = 0; at + 1 < bytes && kept; at += 997)
        kept = block[at] == static_cast<unsigned char>(at % 251);
      CHECK(kept);
      free_bulk(block, bytes);
    }
  }

  TEST_CASE("bulk regions: rounded up to huge pages, aligned, zero-filled, writable, movable") {
    auto region = bulk_region::reserve(huge_page_size + 1);
    REQUIRE(region);
    CHECK(region->size() == 2 * huge_page_size);
    CHECK(aligned_to_huge_page(region->data()));
    // Fresh pages read as zero; the last byte is inside the range.
    CHECK(region->data()[0] == std::byte{0});
    CHECK(region->data()[region->size() - 1] == std::byte{0});
    region->data()[region->size() - 1] = std::byte{7};
    bulk_region moved = std::move(*region);
    CHECK(region->data() == nullptr);
    CHECK(region->size() == 0);
    CHECK(moved.data()[moved.size() - 1] == std::byte{7});
    CHECK_FALSE(bulk_region::reserve(0));
    CHECK_FALSE(bulk_region::reserve(SIZE_MAX));
  }
}
