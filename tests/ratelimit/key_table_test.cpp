// The memory backend's table arena: where its blocks come from and when they are reused.
#include "../../src/ratelimit/key_table.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>

namespace kt = keel::ratelimit::key_table;

namespace {

std::uintptr_t address_of(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("memory key table: an arena of a huge page or more carves its blocks from one aligned region") {
    kt::table_arena arena(8 << 20);
    bool reused = true;
    void* const slots = arena.take(kt::table_arena::kind::slots, 1 << 20, reused);
    CHECK_FALSE(reused);
    CHECK(address_of(slots) % keel::huge_page_size == 0);
    void* const hashes = arena.take(kt::table_arena::kind::hashes, 1000, reused);  // a 1 KiB block
    CHECK_FALSE(reused);
    CHECK(address_of(hashes) == address_of(slots) + (1 << 20));
    void* const next = arena.take(kt::table_arena::kind::hashes, 1024, reused);
    CHECK(address_of(next) == address_of(hashes) + 1024);
    std::memset(slots, 0xab, 1 << 20);
    std::memset(hashes, 0xcd, 1024);

    // A block given back goes to the next block of its kind and size only.
    arena.give(kt::table_arena::kind::slots, slots, 1 << 20);
    void* const other_kind = arena.take(kt::table_arena::kind::hashes, 1 << 20, reused);
    CHECK_FALSE(reused);
    CHECK(other_kind != slots);
    void* const other_size = arena.take(kt::table_arena::kind::slots, 1 << 19, reused);
    CHECK_FALSE(reused);
    CHECK(other_size != slots);
    void* const again = arena.take(kt::table_arena::kind::slots, 1 << 20, reused);
    CHECK(reused);
    CHECK(again == slots);
  }

  TEST_CASE("memory key table: past its region an arena takes blocks from the heap, aligned for slots") {
    kt::table_arena arena(keel::huge_page_size);
    bool reused = true;
    void* const in_region = arena.take(kt::table_arena::kind::slots, keel::huge_page_size, reused);
    CHECK_FALSE(reused);
    CHECK(address_of(in_region) % keel::huge_page_size == 0);
    // The region is used up: a huge block from the bulk allocator, a small one from the heap.
    void* const huge = arena.take(kt::table_arena::kind::slots, 2 * keel::huge_page_size, reused);
    CHECK_FALSE(reused);
    CHECK(address_of(huge) % keel::huge_page_size == 0);
    CHECK(huge != in_region);
    void* const small = arena.take(kt::table_arena::kind::hashes, 4096, reused);
    CHECK_FALSE(reused);
    CHECK(address_of(small) % alignof(kt::slot) == 0);
    std::memset(huge, 0xab, 2 * keel::huge_page_size);
    std::memset(small, 0xcd, 4096);
    // Heap blocks given back are reused like region blocks, and freed with the arena.
    arena.give(kt::table_arena::kind::hashes, small, 4096);
    CHECK(arena.take(kt::table_arena::kind::hashes, 4096, reused) == small);
    CHECK(reused);
  }

  TEST_CASE("memory key table: an arena smaller than a huge page keeps its blocks on the heap") {
    kt::table_arena arena(64 << 10);
    bool reused = true;
    void* const first = arena.take(kt::table_arena::kind::slots, 64 << 10, reused);
    CHECK_FALSE(reused);
    CHECK(address_of(first) % alignof(kt::slot) == 0);
    std::memset(first, 0xab, 64 << 10);
    // Nothing was reserved: a second block of the whole size still comes.
    void* const second = arena.take(kt::table_arena::kind::slots, 64 << 10, reused);
    CHECK_FALSE(reused);
    CHECK(second != first);
    std::memset(second, 0xcd, 64 << 10);
  }
}
