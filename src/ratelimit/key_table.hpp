#pragma once
// The in-process backend's key table, internal to keel::ratelimit: slots of one cache line per
// key, hash arrays probed without a lock, shards that insert, grow and evict under their own
// lock, and the arena their tables are carved from. memory.cpp builds decisions on top of it.
#include <keel/core/assert.hpp>
#include <keel/core/bulk_memory.hpp>
#include <keel/ratelimit/algorithms.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace keel::ratelimit::key_table {

// A test-and-test-and-set lock: a decision holds it for tens of nanoseconds, far less than a
// futex round trip would cost.
class spinlock {
 public:
  void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      int spins = 0;
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins > 64) {
          std::this_thread::yield();
          spins = 0;
        } else {
          __builtin_ia32_pause();
        }
      }
    }
  }
  void unlock() noexcept {
#if KEEL_ASSERTS_ENABLED
    const bool was_locked = locked_.exchange(false, std::memory_order_release);
    KEEL_ASSERT(was_locked, "a shard lock is unlocked only by its holder");
#else
    locked_.store(false, std::memory_order_release);
#endif
  }

 private:
  std::atomic<bool> locked_{false};
};

constexpr std::int64_t never = std::numeric_limits<std::int64_t>::min();

// Equal bytes, with whole-word loads that never read outside either range. Not memcmp: for
// short sizes glibc's AVX-512 memcmp uses masked loads, which stall for tens of nanoseconds
// when the masked-off bytes reach into a cache line that is not in cache (the next slot).
inline bool same_bytes(const char* a, const char* b, std::size_t n) noexcept {
  const auto word = [](const char* p) {
    std::uint64_t w;
    std::memcpy(&w, p, sizeof w);
    return w;
  };
  const auto half = [](const char* p) {
    std::uint32_t w;
    std::memcpy(&w, p, sizeof w);
    return w;
  };
  if (n >= 8) {
    for (std::size_t i = 0; i + 8 < n; i += 8) {
      if (word(a + i) != word(b + i)) return false;
    }
    return word(a + n - 8) == word(b + n - 8);
  }
  if (n >= 4) return half(a) == half(b) && half(a + n - 4) == half(b + n - 4);
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// Asks for the cache line at `p` in a state this core can write (PREFETCHW; a no-op on CPUs
// without it). Plain prefetches fetch a shared copy, and the write that follows still waits
// for the line to be taken from the core that wrote it last.
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1);
#endif
}

// One key's entry: 64 bytes, one cache line holding everything a decision on a short key reads
// and writes (its lock, the key itself, its state, its expiry and block), so a decision on a
// key already present writes no other line. The table moves slots with copy_slot(); what a
// slot owns on the heap (a long key, a sliding log) is freed by release().
struct alignas(64) slot {
  static constexpr std::size_t inline_key = 21;
  static constexpr std::uint8_t long_key = 0xff;

  std::int64_t expires_at;  // from then on the state is indistinguishable from a fresh one
  std::int64_t blocked_until;
  alignas(8) unsigned char state[24];  // gcra_state, token_bucket_state, sliding_window_state or
                                       // sliding_log_state*
  algorithm kind;
  std::uint8_t key_size;   // the key's length when it is stored inline, long_key otherwise
  std::uint8_t lock_byte;  // only through slot_lock(): 1 while a thread holds the slot
  char key[inline_key];    // the key, or a char* and a std::uint32_t size for longer keys

  template <class T>
  [[nodiscard]] T& as() noexcept {
    return *std::launder(reinterpret_cast<T*>(state));
  }
  [[nodiscard]] sliding_log_state& log() noexcept { return *as<sliding_log_state*>(); }

  [[nodiscard]] std::string_view key_view() const noexcept {
    if (key_size != long_key) return {key, key_size};
    const char* data = nullptr;
    std::uint32_t size = 0;
    std::memcpy(&data, key, sizeof data);
    std::memcpy(&size, key + sizeof data, sizeof size);
    return {data, size};
  }
  [[nodiscard]] bool holds(std::string_view k) const noexcept {
    const std::string_view mine = key_view();
    return mine.size() == k.size() && same_bytes(mine.data(), k.data(), k.size());
  }

  void set_key(std::string_view k) {
    if (k.size() <= inline_key) {
      key_size = static_cast<std::uint8_t>(k.size());
      std::memcpy(key, k.data(), k.size());
      return;
    }
    char* data = new char[k.size()];
    std::memcpy(data, k.data(), k.size());
    const auto size = static_cast<std::uint32_t>(k.size());
    key_size = long_key;
    std::memcpy(key, &data, sizeof data);
    std::memcpy(key + sizeof data, &size, sizeof size);
  }

  // A fresh state for a new key (the slot holds none).
  void reset_state(algorithm a) { set_state(a, false); }
  void release_state() noexcept {
    if (kind == algorithm::sliding_log) delete as<sliding_log_state*>();
  }
  // A fresh state of another algorithm (the policy changed).
  void change_state(algorithm a) { set_state(a, true); }
  // The new state is allocated (a sliding log) before anything changes: on bad_alloc the slot
  // keeps what it had.
  void set_state(algorithm a, bool release_old) {
    sliding_log_state* const log_state = a == algorithm::sliding_log ? new sliding_log_state : nullptr;
    if (release_old) release_state();
    kind = a;
    switch (a) {
      case algorithm::gcra:
        ::new (state) gcra_state{};
        return;
      case algorithm::token_bucket:
        ::new (state) token_bucket_state{};
        return;
      case algorithm::sliding_window:
        ::new (state) sliding_window_state{};
        return;
      case algorithm::sliding_log:
        ::new (state) sliding_log_state*(log_state);
        return;
    }
  }
  void release() noexcept {
    release_state();
    if (key_size == long_key) delete[] key_view().data();
  }
};
static_assert(sizeof(slot) == 64 && std::is_trivially_copyable_v<slot> && std::is_standard_layout_v<slot>);

[[nodiscard]] inline std::atomic_ref<std::uint8_t> slot_lock(slot& s) noexcept {
  return std::atomic_ref<std::uint8_t>(s.lock_byte);
}

// Everything but the lock, which belongs to the slot's place, not to its contents.
inline void copy_slot(slot& to, const slot& from) noexcept {
  constexpr std::size_t at = offsetof(slot, lock_byte);
  std::memcpy(reinterpret_cast<char*>(&to), reinterpret_cast<const char*>(&from), at);
  std::memcpy(reinterpret_cast<char*>(&to) + at + 1, reinterpret_cast<const char*>(&from) + at + 1,
              sizeof(slot) - at - 1);
}

// Takes `s`'s lock, or gives up (false) once `valid()` says the table holding it was replaced:
// a replaced table's slots stay locked for good. Holders keep a slot for a few nanoseconds, or
// for a run of one key's requests in a batch; the backoff keeps a waiter from pulling the line
// away from the holder on every write.
// Always inlined, like lock_or_insert: with external linkage GCC keeps them out of line, and
// the call on every decision costs what the lock itself does.
template <class Valid>
[[gnu::always_inline]] inline bool lock_slot(slot& s, Valid&& valid) noexcept {
  auto lock = slot_lock(s);
  if (lock.exchange(1, std::memory_order_acquire) == 0) [[likely]]
    return true;
  unsigned pauses = 1;
  unsigned rounds = 0;
  for (;;) {
    for (unsigned k = 0; k < pauses; ++k) __builtin_ia32_pause();
    if (lock.load(std::memory_order_relaxed) == 0 && lock.exchange(1, std::memory_order_acquire) == 0)
      return true;
    if (!valid()) return false;
    if (pauses < 16) {
      pauses *= 2;
    } else if (++rounds % 64 == 0) {
      std::this_thread::yield();  // the holder may have been preempted
    }
  }
}

inline void unlock_slot(slot& s) noexcept {
#if KEEL_ASSERTS_ENABLED
  // Checked builds swap instead of store, to see that the slot was held.
  const auto was = slot_lock(s).exchange(0, std::memory_order_release);
  KEEL_ASSERT(was == 1, "a slot is unlocked only by the thread holding it");
#else
  slot_lock(s).store(0, std::memory_order_release);
#endif
}

// A held slot, unlocked when the holder goes out of scope: a throw (bad_alloc growing a sliding
// log) must not leave a key locked for good.
class held_slot {
 public:
  held_slot() = default;
  explicit held_slot(slot& s) noexcept : slot_(&s) {}
  held_slot(const held_slot&) = delete;
  held_slot& operator=(const held_slot&) = delete;
  ~held_slot() { reset(); }

  [[nodiscard]] slot* get() const noexcept { return slot_; }
  void reset(slot* s = nullptr) noexcept {
    if (slot_ != nullptr) unlock_slot(*slot_);
    slot_ = s;
  }
  // Keeps the slot locked and hands it over.
  slot* release() noexcept { return std::exchange(slot_, nullptr); }

 private:
  slot* slot_ = nullptr;
};

template <class Fn>
decltype(auto) with_state(slot& s, Fn&& fn) {
  switch (s.kind) {
    case algorithm::gcra:
      return fn(s.as<gcra_state>());
    case algorithm::token_bucket:
      return fn(s.as<token_bucket_state>());
    case algorithm::sliding_window:
      return fn(s.as<sliding_window_state>());
    case algorithm::sliding_log:
      break;
  }
  return fn(s.log());
}

// Memory for every shard's tables, from one region the kernel may back with 2 MiB pages
// (bulk_region): the tables of a 100k-key backend then sit in a handful of pages instead of
// thousands, and a random lookup stops missing the TLB (expensive under virtualisation).
// Blocks are powers of two bytes; a block given back waits for the next table of its size and
// kind, so memory goes back to the system only with the backend, and a block that held a hash
// array only ever holds a hash array of the same capacity (see hash_array). The region is
// reserved for the most the tables can take (untouched pages cost nothing); past it, and for
// backends too small to fill a huge page, blocks come from the heap.
class table_arena {
 public:
  enum class kind : std::uint8_t { hashes, slots };

  explicit table_arena(std::size_t reserve) noexcept;
  ~table_arena();
  table_arena(const table_arena&) = delete;
  table_arena& operator=(const table_arena&) = delete;

  [[nodiscard]] static std::size_t block_size(std::size_t bytes) noexcept {
    return std::bit_ceil(std::max<std::size_t>(bytes, 64));
  }

  // `reused` says whether the block held a table before (and may still be read through a
  // stale pointer) or is new memory nobody has seen. Throws bad_alloc.
  [[nodiscard]] void* take(kind k, std::size_t bytes, bool& reused);
  // Never throws (it runs after a new table is published): without memory to note the block,
  // it simply stays unused until the backend is destroyed.
  void give(kind k, void* p, std::size_t bytes) noexcept;

 private:
  struct heap_block {
    void* memory;
    std::size_t bytes;
  };

  static void* allocate_heap(std::size_t bytes);
  static void free_heap(void* memory, std::size_t bytes) noexcept;
  static std::size_t index(kind k, std::size_t block) noexcept {
    return static_cast<std::size_t>(std::countr_zero(block)) * 2 + (k == kind::slots ? 1 : 0);
  }

  std::mutex mutex_;
  std::optional<bulk_region> region_;
  std::size_t used_ = 0;
  std::array<std::vector<void*>, 128> spare_;
  std::vector<heap_block> heap_;
};

// A shard's array of key hashes (0 marks an empty slot; a key's hash always has bit 0 set),
// with the mask and the slot array's address in front. Decisions probe it without the shard's
// lock, so the entries are relaxed atomics (plain loads and stores on x86), and its memory stays
// a hash array of the same capacity while the backend lives (table_arena): a reader holding a
// stale array reads in bounds and finds out it is stale before it uses what it found.
class hash_array {
 public:
  static constexpr std::size_t header = 2;  // [0] mask, [1] slots address
  using cell = std::atomic<std::uint64_t>;

  [[nodiscard]] static std::size_t bytes(std::size_t capacity) noexcept {
    return (header + capacity) * sizeof(cell);
  }

  hash_array() = default;
  // Makes the memory at `cells` (bytes(capacity) of it) an empty array. Memory that held an
  // array before may have readers still: it is written through the atomics already there.
  hash_array(void* cells, std::size_t capacity, const void* slots, bool reused) noexcept
      : cells_(static_cast<cell*>(cells)) {
    static_assert(std::is_trivially_destructible_v<cell>);
    const auto init = [&](std::size_t i, std::uint64_t v) {
      if (reused) {
        cells_[i].store(v, std::memory_order_relaxed);
      } else {
        ::new (&cells_[i]) cell(v);
      }
    };
    init(0, capacity - 1);
    init(1, reinterpret_cast<std::uintptr_t>(slots));
    for (std::size_t i = 0; i < capacity; ++i) init(header + i, 0);
  }

  [[nodiscard]] cell* data() const noexcept { return cells_; }
  [[nodiscard]] std::uint64_t operator[](std::size_t i) const noexcept {
    return cells_[header + i].load(std::memory_order_relaxed);
  }
  // Release: a reader that sees the hash (acquire) and then takes the slot sees the key.
  void set(std::size_t i, std::uint64_t hash) noexcept {
    cells_[header + i].store(hash, std::memory_order_release);
  }

 private:
  cell* cells_ = nullptr;
};

// One shard: a table of slots and its hash array. A decision on a key the table already holds
// takes that key's slot lock only; the shard's lock is for inserting keys and for rebuilding the
// table (growing, evicting), which first locks every slot ("freezes" the table), so nobody is
// deciding on a slot while it moves. A replaced table's slots stay locked; a decision that
// looked one up through the old table notices and looks again.
struct alignas(64) shard {
  // Read by every decision, written only when a rebuilt table is published: on a line of its
  // own that every core keeps a shared copy of.
  std::atomic<hash_array::cell*> table{nullptr};
  std::atomic<bool> freezing{false};  // a rebuild is locking every slot (see decide_batch)

  alignas(64) spinlock lock;  // the rest is only touched under it
  std::size_t capacity = 0;   // a power of two
  hash_array hashes;
  slot* slots = nullptr;
  table_arena* arena = nullptr;
  std::size_t size = 0;
  std::size_t max_size = 0;
  std::uint64_t evicted_expired = 0;
  std::uint64_t evicted_live = 0;

  shard() = default;
  shard(const shard&) = delete;
  shard& operator=(const shard&) = delete;
  ~shard();

  // Makes new tables of `slots_count` slots, all locked, not yet published (the caller fills
  // them, then publish()es and gives the old ones back). Both blocks are taken before the shard
  // changes, so on bad_alloc it is as it was. A reused block's slots are still locked from when
  // its table was replaced; a new block's are locked here, before anyone can know of it.
  void allocate(std::size_t slots_count);

  void publish() noexcept;

  // Waits for every decision in progress on this table and keeps new ones out.
  void freeze() noexcept;
  void thaw() noexcept;

  [[nodiscard]] std::size_t mask() const noexcept { return capacity - 1; }

  // Without the lock: brings the hash entries where `hash`'s probe starts, and the slot there,
  // into the cache. A decision's two misses then overlap whatever runs meanwhile.
  void prefetch(std::uint64_t hash) const noexcept {
    const hash_array::cell* cells = table.load(std::memory_order_acquire);
    const std::size_t i = hash & cells[0].load(std::memory_order_relaxed);
    __builtin_prefetch(cells + hash_array::header + i);
    prefetch_for_write(reinterpret_cast<const slot*>(cells[1].load(std::memory_order_relaxed)) + i);
  }

  // Where prefetch_slot() found a hash: the array it probed, its slots and the index.
  struct located {
    const hash_array::cell* cells = nullptr;
    std::uintptr_t slots = 0;
    std::size_t index = 0;
  };

  // Without the lock, once prefetch(hash) has had time to land: probes the hash entries for
  // the slot the key is really in (linear probing moves many keys past their home slot) and
  // prefetches that one for writing. Bounded, and harmless on a stale or changing array.
  located prefetch_slot(std::uint64_t hash) const noexcept {
    const hash_array::cell* cells = table.load(std::memory_order_acquire);
    const std::size_t m = cells[0].load(std::memory_order_relaxed);
    const std::uintptr_t base = cells[1].load(std::memory_order_relaxed);
    std::size_t i = hash & m;
    for (int probes = 0;; ++probes) {
      const std::uint64_t h = cells[hash_array::header + i].load(std::memory_order_relaxed);
      if (h == hash) break;
      if (h == 0 || probes == 16) return {};
      i = (i + 1) & m;
    }
    prefetch_for_write(reinterpret_cast<const slot*>(base) + i);
    return {cells, base, i};
  }

  // Without the shard's lock: the slot prefetch_slot() found, locked, if it still holds `key`
  // in this shard's current table; null otherwise (the caller then looks the key up). Saves the
  // decision a second probe, whose branches mispredict while the line is still on its way.
  slot* lock_located(const located& at, std::uint64_t hash, std::string_view key) noexcept {
    if (at.cells == nullptr) return nullptr;
    slot& s = reinterpret_cast<slot*>(at.slots)[at.index];
    const auto current = [&]() noexcept {
      return table.load(std::memory_order_acquire) == at.cells &&
             at.cells[1].load(std::memory_order_relaxed) == at.slots;
    };
    if (!lock_slot(s, current)) return nullptr;
    if (current() && at.cells[hash_array::header + at.index].load(std::memory_order_relaxed) == hash &&
        s.holds(key))
      return &s;
    unlock_slot(s);
    return nullptr;
  }

  // Without the shard's lock: the slot holding `key`, locked, or null when the table does not
  // hold it (or was being rebuilt: the caller then inserts under the shard's lock, which finds
  // it if it is there after all).
  slot* lock_present(std::uint64_t hash, std::string_view key) noexcept {
    for (;;) {
      hash_array::cell* const cells = table.load(std::memory_order_acquire);
      const std::size_t m = cells[0].load(std::memory_order_relaxed);
      const std::uintptr_t base = cells[1].load(std::memory_order_relaxed);
      // Still this shard's table, paired with these slots: nothing can replace it while one of
      // its slots is held, so checked with the slot held, it proves the slot is the key's.
      const auto current = [&]() noexcept {
        return table.load(std::memory_order_acquire) == cells &&
               cells[1].load(std::memory_order_relaxed) == base;
      };
      std::size_t i = hash & m;
      bool replaced = false;
      for (std::size_t probes = 0; probes <= m && !replaced; ++probes, i = (i + 1) & m) {
        const std::uint64_t h = cells[hash_array::header + i].load(std::memory_order_acquire);
        if (h == 0) {
          if (current()) return nullptr;
          replaced = true;  // a stale array (being reused) says nothing: look again
          break;
        }
        if (h != hash) continue;
        slot& s = reinterpret_cast<slot*>(base)[i];
        if (!lock_slot(s, current)) {
          replaced = true;
        } else if (!current() || cells[hash_array::header + i].load(std::memory_order_relaxed) != hash) {
          unlock_slot(s);
          replaced = true;
        } else if (s.holds(key)) {
          return &s;
        } else {
          unlock_slot(s);  // another key with the same hash
        }
      }
      if (!replaced) return nullptr;
    }
  }

  // Under the lock: the slot holding `key`, or a new one for it at `now` with a fresh state,
  // locked either way. The table must have room for it (make_room). A new key is written
  // before its hash is published, so a reader that finds the hash finds the key.
  [[gnu::always_inline]] slot* lock_or_insert(std::uint64_t hash, std::string_view key, algorithm a,
                                              std::int64_t now) {
    std::size_t i = hash & mask();
    while (hashes[i] != 0) {
      if (hashes[i] == hash && slots[i].holds(key)) {
        lock_slot(slots[i], [] { return true; });
        return &slots[i];
      }
      i = (i + 1) & mask();
    }
    slot& s = slots[i];
    lock_slot(s, [] { return true; });  // may be held for a moment by a reader of a stale table
    held_slot undo(s);                  // a throw leaves the slot empty and unlocked
    s.reset_state(a);                   // allocates for a sliding log
    try {
      s.set_key(key);  // allocates for a long key
    } catch (...) {
      s.release_state();
      throw;
    }
    s.blocked_until = never;
    s.expires_at = now;
    hashes.set(i, hash);
    undo.release();
    ++size;
    return &s;
  }

  // On a frozen table: moves the entries `keep` accepts into new tables of `new_capacity`
  // slots, frees the others, and publishes the new tables. Without memory for the new tables
  // it thaws the old ones, unchanged, and throws. Instantiated in key_table.cpp only.
  template <class Keep>
  void rebuild(std::size_t new_capacity, Keep&& keep);

  // Under the lock: drops the keys whose state has expired by `now`; returns how many.
  std::size_t drop_expired(std::int64_t now);

  // Inline so that the common case (room to spare) is two compares. Tables fill to 7/8: the
  // probe runs over the dense hash array, and a fuller table keeps more of it in cache.
  void make_room(std::size_t incoming, std::int64_t now) {
    if (size + incoming <= max_size && (size + incoming) * 8 <= capacity * 7) [[likely]]
      return;
    make_room_slow(incoming, now);
  }

  // Makes sure `incoming` more keys fit without rehashing or evicting while slots are held, in
  // one rebuild (see key_table.cpp for the order keys are dropped in). Under the lock.
  void make_room_slow(std::size_t incoming, std::int64_t now);
};
}  // namespace keel::ratelimit::key_table
