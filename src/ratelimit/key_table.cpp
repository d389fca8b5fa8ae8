#include "key_table.hpp"

#include <algorithm>
#include <cstdint>

namespace keel::ratelimit::key_table {

table_arena::table_arena(std::size_t reserve) noexcept {
  // A backend whose tables fit in less than a huge page keeps them on the heap: a region would
  // cost it a whole 2 MiB page on first touch.
  if (reserve >= huge_page_size) region_ = bulk_region::reserve(reserve);
}

table_arena::~table_arena() {
  for (const heap_block& block : heap_) free_heap(block.memory, block.bytes);
}

// Large blocks through the bulk allocator (huge-page aligned and advised); smaller ones aligned
// for the 64-byte slots, which bulk storage of that size does not promise.
void* table_arena::allocate_heap(std::size_t bytes) {
  if (bytes >= huge_page_size) return allocate_bulk(bytes);
  return ::operator new (bytes, std::align_val_t{alignof(slot)});
}

void table_arena::free_heap(void* memory, std::size_t bytes) noexcept {
  if (bytes >= huge_page_size) {
    free_bulk(memory, bytes);
  } else {
    ::operator delete (memory, std::align_val_t{alignof(slot)});  // unsized: see free_bulk
  }
}

void* table_arena::take(kind k, std::size_t bytes, bool& reused) {
  bytes = block_size(bytes);
  std::lock_guard guard(mutex_);
  auto& spare = spare_[index(k, bytes)];
  reused = !spare.empty();
  if (reused) {
    void* p = spare.back();
    spare.pop_back();
    return p;
  }
  if (region_ && region_->size() - used_ >= bytes) {
    void* p = region_->data() + used_;
    used_ += bytes;
    return p;
  }
  if (heap_.size() == heap_.capacity()) heap_.reserve(heap_.size() * 2 + 8);  // never lost to a throw
  void* p = allocate_heap(bytes);
  heap_.push_back({p, bytes});
  return p;
}

void table_arena::give(kind k, void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  std::lock_guard guard(mutex_);
  try {
    spare_[index(k, block_size(bytes))].push_back(p);
  } catch (...) {
  }
}

shard::~shard() {
  for (std::size_t i = 0; i < capacity; ++i) {
    if (hashes[i] != 0) slots[i].release();
  }
}

void shard::allocate(std::size_t slots_count) {
  bool slots_reused = false;
  bool cells_reused = false;
  auto* const new_slots =
      static_cast<slot*>(arena->take(table_arena::kind::slots, slots_count * sizeof(slot), slots_reused));
  if (!slots_reused) {
    for (std::size_t i = 0; i < slots_count; ++i) ::new (&new_slots[i].lock_byte) std::uint8_t{1};
  }
  void* cells = nullptr;
  try {
    cells = arena->take(table_arena::kind::hashes, hash_array::bytes(slots_count), cells_reused);
  } catch (...) {
    arena->give(table_arena::kind::slots, new_slots, slots_count * sizeof(slot));
    throw;
  }
  capacity = slots_count;
  slots = new_slots;
  hashes = hash_array(cells, capacity, slots, cells_reused);
}

void shard::publish() noexcept {
  table.store(hashes.data(), std::memory_order_release);
  for (std::size_t i = 0; i < capacity; ++i) unlock_slot(slots[i]);
}

void shard::freeze() noexcept {
  freezing.store(true, std::memory_order_relaxed);
  for (std::size_t i = 0; i < capacity; ++i) lock_slot(slots[i], [] { return true; });
  freezing.store(false, std::memory_order_relaxed);
}

void shard::thaw() noexcept {
  for (std::size_t i = 0; i < capacity; ++i) unlock_slot(slots[i]);
}

template <class Keep>
void shard::rebuild(std::size_t new_capacity, Keep&& keep) {
  const hash_array old_hashes = hashes;
  slot* const old_slots = slots;
  const std::size_t old_capacity = capacity;
  try {
    allocate(new_capacity);
  } catch (...) {
    thaw();
    throw;
  }
  size = 0;
  for (std::size_t j = 0; j < old_capacity; ++j) {
    if (old_hashes[j] == 0) continue;
    if (!keep(old_slots[j])) {
      old_slots[j].release();
      continue;
    }
    std::size_t i = old_hashes[j] & mask();
    while (hashes[i] != 0) i = (i + 1) & mask();
    copy_slot(slots[i], old_slots[j]);
    hashes.set(i, old_hashes[j]);
    ++size;
  }
  publish();
  arena->give(table_arena::kind::hashes, old_hashes.data(), hash_array::bytes(old_capacity));
  arena->give(table_arena::kind::slots, old_slots, old_capacity * sizeof(slot));
}

std::size_t shard::drop_expired(std::int64_t now) {
  freeze();
  bool any = false;
  for (std::size_t j = 0; j < capacity && !any; ++j) any = hashes[j] != 0 && slots[j].expires_at <= now;
  if (!any) {
    thaw();
    return 0;
  }
  const std::size_t before = size;
  rebuild(capacity, [now](const slot& s) { return s.expires_at > now; });
  evicted_expired += before - size;
  return before - size;
}

// Makes sure `incoming` more keys fit without rehashing or evicting while slots are held, in
// one rebuild: when the shard would pass max_size, keys whose state expired are dropped, then,
// if still too many, the live keys closest to expiring (down to 7/8 of max_size, so that this
// is not repeated on every insert); the table doubles while it would be over 7/8 full. Below
// max_size expired keys stay: with short-lived states (a generous limit) dropping them on
// every growth would make the table drop and re-insert its keys forever instead of growing.
void shard::make_room_slow(std::size_t incoming, std::int64_t now) {
  freeze();
  const bool evict = size + incoming > max_size;
  std::size_t expired = 0;
  std::size_t drop_live = 0;
  std::int64_t cutoff = never;
  if (evict) {
    std::vector<std::int64_t> live;
    try {
      live.reserve(size);
    } catch (...) {
      thaw();
      throw;
    }
    for (std::size_t j = 0; j < capacity; ++j) {
      if (hashes[j] != 0 && slots[j].expires_at > now) live.push_back(slots[j].expires_at);
    }
    expired = size - live.size();
    if (live.size() + incoming > max_size) {
      const std::size_t target = std::min(max_size - std::min(incoming, max_size), max_size - max_size / 8);
      drop_live = live.size() - std::min(live.size(), target);
      if (drop_live > 0) {
        std::nth_element(live.begin(), live.begin() + static_cast<std::ptrdiff_t>(drop_live - 1), live.end());
        cutoff = live[drop_live - 1];
      }
    }
  }
  const std::size_t kept = size - expired - drop_live;
  std::size_t grown = capacity;
  while ((kept + incoming) * 8 > grown * 7) grown *= 2;
  if (expired == 0 && drop_live == 0 && grown == capacity) {
    thaw();
    return;
  }
  std::size_t dropped_live = 0;
  rebuild(grown, [&](const slot& s) {
    if (!evict) return true;
    if (s.expires_at <= now) return false;
    if (s.expires_at <= cutoff && dropped_live < drop_live) return ++dropped_live, false;
    return true;
  });
  evicted_expired += expired;
  evicted_live += dropped_live;
}

}  // namespace keel::ratelimit::key_table
