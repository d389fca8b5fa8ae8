#include <keel/core/assert.hpp>
#include <keel/ratelimit/memory.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// Inlined: a call into the shared library costs as much as hashing a 20-byte key.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <sys/mman.h>
#include <time.h>

namespace keel::ratelimit {
namespace {

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
template <class Valid>
bool lock_slot(slot& s, Valid&& valid) noexcept {
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
// (MADV_HUGEPAGE): the tables of a 100k-key backend then sit in a handful of pages instead of
// thousands, and a random lookup stops missing the TLB (expensive under virtualisation).
// Blocks are powers of two bytes; a block given back waits for the next table of its size and
// kind, so memory goes back to the system only with the backend, and a block that held a hash
// array only ever holds a hash array of the same capacity (see hash_array). The region is
// reserved for the most the tables can take (untouched pages cost nothing); past it, blocks
// come from the heap.
class table_arena {
 public:
  enum class kind : std::uint8_t { hashes, slots };

  explicit table_arena(std::size_t reserve) {
    constexpr std::size_t huge = 2 << 20;
    if (reserve < huge) return;
    reserve = (reserve + huge - 1) & ~(huge - 1);
    void* p = ::mmap(nullptr, reserve + huge, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    mapping_ = p;
    mapping_size_ = reserve + huge;
    const auto at = (reinterpret_cast<std::uintptr_t>(p) + huge - 1) & ~std::uintptr_t{huge - 1};
    base_ = reinterpret_cast<std::byte*>(at);
    size_ = reserve;
    ::madvise(base_, size_, MADV_HUGEPAGE);  // a hint: without THP it stays 4 KiB pages
  }
  ~table_arena() {
    for (void* p : heap_) ::operator delete (p, std::align_val_t{64});
    if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
  }
  table_arena(const table_arena&) = delete;
  table_arena& operator=(const table_arena&) = delete;

  [[nodiscard]] static std::size_t block_size(std::size_t bytes) noexcept {
    return std::bit_ceil(std::max<std::size_t>(bytes, 64));
  }

  // `reused` says whether the block held a table before (and may still be read through a
  // stale pointer) or is new memory nobody has seen.
  void* take(kind k, std::size_t bytes, bool& reused) {
    bytes = block_size(bytes);
    std::lock_guard guard(mutex_);
    auto& spare = spare_[index(k, bytes)];
    reused = !spare.empty();
    if (reused) {
      void* p = spare.back();
      spare.pop_back();
      return p;
    }
    if (size_ - used_ >= bytes) {
      void* p = base_ + used_;
      used_ += bytes;
      return p;
    }
    if (heap_.size() == heap_.capacity()) heap_.reserve(heap_.size() * 2 + 8);  // never lost to a throw
    void* p = ::operator new (bytes, std::align_val_t{64});
    heap_.push_back(p);
    return p;
  }
  // Never throws (it runs after a new table is published): without memory to note the block,
  // it simply stays unused until the backend is destroyed.
  void give(kind k, void* p, std::size_t bytes) noexcept {
    if (p == nullptr) return;
    std::lock_guard guard(mutex_);
    try {
      spare_[index(k, block_size(bytes))].push_back(p);
    } catch (...) {
    }
  }

 private:
  static std::size_t index(kind k, std::size_t block) noexcept {
    return static_cast<std::size_t>(std::countr_zero(block)) * 2 + (k == kind::slots ? 1 : 0);
  }

  std::mutex mutex_;
  void* mapping_ = nullptr;
  std::size_t mapping_size_ = 0;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  std::size_t used_ = 0;
  std::array<std::vector<void*>, 128> spare_;
  std::vector<void*> heap_;
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
  ~shard() {
    for (std::size_t i = 0; i < capacity; ++i) {
      if (hashes[i] != 0) slots[i].release();
    }
  }

  // Makes new tables of `slots_count` slots, all locked, not yet published (the caller fills
  // them, then publish()es and gives the old ones back). Both blocks are taken before the shard
  // changes, so on bad_alloc it is as it was. A reused block's slots are still locked from when
  // its table was replaced; a new block's are locked here, before anyone can know of it.
  void allocate(std::size_t slots_count) {
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

  void publish() noexcept {
    table.store(hashes.data(), std::memory_order_release);
    for (std::size_t i = 0; i < capacity; ++i) unlock_slot(slots[i]);
  }

  // Waits for every decision in progress on this table and keeps new ones out.
  void freeze() noexcept {
    freezing.store(true, std::memory_order_relaxed);
    for (std::size_t i = 0; i < capacity; ++i) lock_slot(slots[i], [] { return true; });
    freezing.store(false, std::memory_order_relaxed);
  }
  void thaw() noexcept {
    for (std::size_t i = 0; i < capacity; ++i) unlock_slot(slots[i]);
  }

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
  slot* lock_or_insert(std::uint64_t hash, std::string_view key, algorithm a, std::int64_t now) {
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
  // it thaws the old ones, unchanged, and throws.
  template <class Keep>
  void rebuild(std::size_t new_capacity, Keep&& keep) {
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

  std::size_t drop_expired(std::int64_t now) {
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

  // Inline so that the common case (room to spare) is two compares. Tables fill to 7/8: the
  // probe runs over the dense hash array, and a fuller table keeps more of it in cache.
  void make_room(std::size_t incoming, std::int64_t now) {
    if (size + incoming <= max_size && (size + incoming) * 8 <= capacity * 7) [[likely]]
      return;
    make_room_slow(incoming, now);
  }

  // Makes sure `incoming` more keys fit without rehashing or evicting while slots are held, in
  // one rebuild: when the shard would pass max_size, keys whose state expired are dropped, then,
  // if still too many, the live keys closest to expiring (down to 7/8 of max_size, so that this
  // is not repeated on every insert); the table doubles while it would be over 7/8 full. Below
  // max_size expired keys stay: with short-lived states (a generous limit) dropping them on
  // every growth would make the table drop and re-insert its keys forever instead of growing.
  void make_room_slow(std::size_t incoming, std::int64_t now) {
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
          std::nth_element(live.begin(), live.begin() + static_cast<std::ptrdiff_t>(drop_live - 1),
                           live.end());
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
};

}  // namespace

struct memory_backend::impl {
  const keel::clock* clock;
  bool coarse;
  std::size_t shard_mask;
  table_arena arena;  // outlives the shards
  std::unique_ptr<shard[]> shards;

  explicit impl(const memory_options& o) : clock(o.clock), coarse(o.coarse_clock), arena(reserve_for(o)) {
    const std::size_t count = std::bit_ceil(std::max<std::size_t>(o.shards, 1));
    shard_mask = count - 1;
    shards = std::make_unique<shard[]>(count);
    const std::size_t per_shard = std::max<std::size_t>(o.max_keys / count, 16);
    for (std::size_t i = 0; i < count; ++i) {
      shards[i].max_size = per_shard;
      shards[i].arena = &arena;
      shards[i].allocate(16);
      shards[i].publish();
    }
  }

  // What the tables can take at most: each shard at its largest table (max_keys / shards keys,
  // plus one decision's worth, filled to 7/8), twice over for the blocks waiting for reuse.
  static std::size_t reserve_for(const memory_options& o) noexcept {
    const std::size_t count = std::bit_ceil(std::max<std::size_t>(o.shards, 1));
    const std::size_t per_shard = std::max<std::size_t>(o.max_keys / count, 16) + max_limits_per_decision;
    const std::size_t largest = std::bit_ceil(per_shard * 8 / 7 + 1);
    const std::size_t per_table =
        table_arena::block_size(largest * sizeof(slot)) + table_arena::block_size(hash_array::bytes(largest));
    return count * 2 * per_table;
  }

  static std::uint64_t hash_of(std::string_view key) noexcept {
    return XXH3_64bits(key.data(), key.size()) | 1U;
  }
  [[nodiscard]] shard& shard_of(std::uint64_t hash) const noexcept {
    return shards[(hash >> 40) & shard_mask];
  }

  [[nodiscard]] std::int64_t now() const noexcept {
    // The system clock read directly: no virtual call on the hot path.
    if (clock == &keel::system_clock::instance()) {
      if (coarse) {
        // Same scale as steady_clock (CLOCK_MONOTONIC), updated once a scheduler tick.
        timespec t{};
        ::clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
        return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
      }
      return std::chrono::steady_clock::now().time_since_epoch().count();
    }
    return clock->monotonic().time_since_epoch().count();
  }

  // The key's slot in `sh`, locked: found without the shard's lock when present, inserted
  // under it otherwise. The caller holds no other slot (a rebuild waits for every slot).
  static slot& lock_key(shard& sh, std::uint64_t hash, std::string_view key, algorithm a, std::int64_t now) {
    if (slot* s = sh.lock_present(hash, key)) [[likely]]
      return *s;
    std::lock_guard guard(sh.lock);
    sh.make_room(1, now);
    return *sh.lock_or_insert(hash, key, a, now);
  }

  // GCRA's constants of the rule used last: the requests of a batch mostly share a few rules,
  // and computing them costs a division.
  struct rule_cache {
    const limit* rule = nullptr;
    gcra_params gcra;

    const gcra_params& of(const limit& l) noexcept {
      if (&l != rule) {
        rule = &l;
        gcra = gcra_params(l);
      }
      return gcra;
    }
  };

  // One limit, the common case. `s` is the key's slot, locked.
  static void decide_on(slot& s, std::int64_t now, const keyed_limit& request, std::uint64_t cost,
                        decision& out, rule_cache& rules) {
    const limit& rule = *request.rule;
    if (s.kind != rule.algorithm) [[unlikely]] {  // the policy changed
      s.change_state(rule.algorithm);
    }
    if (s.blocked_until > now) {
      const std::chrono::nanoseconds left(s.blocked_until - now);
      out = {.allowed = false, .limit = rule.capacity(), .remaining = 0, .reset = left, .retry_after = left};
      return;
    }
    if (s.kind == algorithm::gcra) [[likely]] {
      spend_into(rules.of(rule), s.as<gcra_state>(), now, cost, out);
    } else {
      out = with_state(s, [&](auto& st) { return spend(rule, st, now, cost); });
    }
    if (out.allowed) {
      s.expires_at = std::max(s.expires_at, now + out.reset.count());
    } else if (rule.block.count() > 0) {
      s.blocked_until = now + rule.block.count();
      s.expires_at = std::max(s.expires_at, s.blocked_until);
      out.retry_after = std::max(out.retry_after, rule.block);
      out.reset = std::max(out.reset, rule.block);
      out.remaining = 0;
    }
  }

  void decide_one(std::int64_t now, const keyed_limit& request, std::uint64_t cost, decision& out) {
    const std::uint64_t hash = hash_of(request.key);
    shard& sh = shard_of(hash);
    sh.prefetch(hash);
    const held_slot s(lock_key(sh, hash, request.key, request.rule->algorithm, now));
    rule_cache rules;
    decide_on(*s.get(), now, request, cost, out, rules);
  }

  void decide_many(std::int64_t now, std::span<const keyed_limit> limits, std::uint64_t cost,
                   std::span<decision> out);

  // Spends `cost` on every limit of an allowed multi-limit request (its slots held). A sliding
  // log's commit allocates; if one throws, the commits before it are undone, so the request
  // spends nothing, as the caller (who gets the exception) would expect.
  static void commit_all(std::int64_t now, std::span<const keyed_limit> limits, std::uint64_t cost,
                         std::span<const decision> out, std::span<slot* const> slots) {
    struct saved {
      std::int64_t expires_at;
      alignas(8) unsigned char state[sizeof(slot::state)];
      std::size_t log_entries;
      std::uint64_t log_used;
    };
    saved before[max_limits_per_decision];
    for (std::size_t i = 0; i < slots.size(); ++i) {
      slot& s = *slots[i];
      before[i].expires_at = s.expires_at;
      std::memcpy(before[i].state, s.state, sizeof s.state);
      before[i].log_entries = s.kind == algorithm::sliding_log ? s.log().entries.size() : 0;
      before[i].log_used = s.kind == algorithm::sliding_log ? s.log().used : 0;
    }
    std::size_t done = 0;
    try {
      for (; done < slots.size(); ++done) {
        slot& s = *slots[done];
        const limit& rule = *limits[done].rule;
        with_state(s, [&](auto& st) { commit(rule, st, now, cost); });
        s.expires_at = std::max(s.expires_at, now + out[done].reset.count());
      }
    } catch (...) {
      for (std::size_t i = done + 1; i-- > 0;) {  // the one that threw too (it may have pruned)
        slot& s = *slots[i];
        s.expires_at = before[i].expires_at;
        if (s.kind == algorithm::sliding_log) {
          auto& log = s.log();
          while (log.entries.size() > before[i].log_entries) log.entries.pop_back();
          log.used = before[i].log_used;
        } else {
          std::memcpy(s.state, before[i].state, sizeof s.state);
        }
      }
      throw;
    }
  }

  void decide_batch(std::int64_t now, std::span<const batch_request> batch);
};

// Several limits: their shards are locked in index order (so decisions never deadlock), room is
// made in each, then their slots are locked; all limits are peeked, then committed only if all
// allow.
void memory_backend::impl::decide_many(std::int64_t now, std::span<const keyed_limit> limits,
                                       std::uint64_t cost, std::span<decision> out) {
  const std::size_t n = limits.size();
  std::uint64_t hashes[max_limits_per_decision];
  shard* owner[max_limits_per_decision];
  shard* locked[max_limits_per_decision];
  std::size_t locked_count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    hashes[i] = hash_of(limits[i].key);
    owner[i] = &shard_of(hashes[i]);
    // Sorted, distinct.
    std::size_t at = 0;
    while (at < locked_count && locked[at] < owner[i]) ++at;
    if (at < locked_count && locked[at] == owner[i]) continue;
    for (std::size_t j = locked_count; j > at; --j) locked[j] = locked[j - 1];
    locked[at] = owner[i];
    ++locked_count;
  }
  // Released in any case, also when a sliding log's allocation throws.
  std::unique_lock<spinlock> shard_locks[max_limits_per_decision];
  held_slot held[max_limits_per_decision];
  for (std::size_t k = 0; k < locked_count; ++k) shard_locks[k] = std::unique_lock(locked[k]->lock);
  for (std::size_t k = 0; k < locked_count; ++k) {
    shard& sh = *locked[k];
    std::size_t incoming = 0;
    for (std::size_t i = 0; i < n; ++i) incoming += owner[i] == &sh ? 1 : 0;
    sh.make_room(incoming, now);
  }

  slot* slots[max_limits_per_decision];
  bool all_allowed = true;
  for (std::size_t i = 0; i < n; ++i) {
    const limit& rule = *limits[i].rule;
    slots[i] = nullptr;
    for (std::size_t j = 0; j < i; ++j) {  // one key under two limits: its slot is held already
      if (hashes[j] == hashes[i] && limits[j].key == limits[i].key) slots[i] = slots[j];
    }
    if (slots[i] == nullptr) {
      slots[i] = owner[i]->lock_or_insert(hashes[i], limits[i].key, rule.algorithm, now);
      held[i].reset(slots[i]);
    }
    slot& s = *slots[i];
    if (s.kind != rule.algorithm) {  // the policy changed
      s.change_state(rule.algorithm);
    }
    if (s.blocked_until > now) {
      const std::chrono::nanoseconds left(s.blocked_until - now);
      out[i] = {
          .allowed = false, .limit = rule.capacity(), .remaining = 0, .reset = left, .retry_after = left};
      all_allowed = false;
      continue;
    }
    out[i] = with_state(s, [&](auto& st) { return peek(rule, st, now, cost); });
    all_allowed = all_allowed && out[i].allowed;
  }

  if (all_allowed) {
    commit_all(now, limits, cost, out, {slots, n});
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const limit& rule = *limits[i].rule;
    slot& s = *slots[i];
    if (out[i].allowed) {
      // Nothing was spent here after all: report the state as it is.
      out[i] = with_state(s, [&](auto& st) { return peek(rule, st, now, 0); });
    } else if (rule.block.count() > 0 && s.blocked_until <= now) {
      s.blocked_until = now + rule.block.count();
      s.expires_at = std::max(s.expires_at, s.blocked_until);
      out[i].retry_after = std::max(out[i].retry_after, rule.block);
      out[i].reset = std::max(out[i].reset, rule.block);
      out[i].remaining = 0;
    }
  }
}

// A pipeline over the batch: the key `2 × ahead` places further on is hashed and the start of
// its probe prefetched; the one `ahead` places on has its hash entries in cache by then, so the
// slot it really occupies is found and prefetched; this one is decided with both in cache.
// Many cache misses are in flight at once instead of one. A slot is kept across consecutive
// requests on the same key (one hot key: locked and found once per run, not per request).
void memory_backend::impl::decide_batch(std::int64_t now, std::span<const batch_request> batch) {
  constexpr std::size_t ahead = 16;
  constexpr std::size_t ring = 64;  // > 2 × ahead, a power of two
  std::uint64_t hashes[ring];
  shard::located where[ring];
  const auto single = [&](std::size_t j) { return j < batch.size() && batch[j].limits.size() == 1; };
  // A run of requests on one key prefetches its slot once: prefetching it again while another
  // thread holds it would pull the line away from that thread on each request.
  const auto repeats = [&](std::size_t j) {
    return j > 0 && single(j - 1) && hashes[j % ring] == hashes[(j - 1) % ring];
  };
  const auto start = [&](std::size_t j) {
    if (!single(j)) return;
    hashes[j % ring] = hash_of(batch[j].limits[0].key);
    if (!repeats(j)) shard_of(hashes[j % ring]).prefetch(hashes[j % ring]);
  };
  const auto locate = [&](std::size_t j) {
    if (!single(j)) return;
    where[j % ring] =
        repeats(j) ? where[(j - 1) % ring] : shard_of(hashes[j % ring]).prefetch_slot(hashes[j % ring]);
  };
  for (std::size_t j = 0; j < 2 * ahead; ++j) start(j);
  for (std::size_t j = 0; j < ahead; ++j) locate(j);
  held_slot held;
  std::uint64_t held_hash = 0;
  rule_cache rules;
  for (std::size_t j = 0; j < batch.size(); ++j) {
    start(j + 2 * ahead);
    locate(j + ahead);
    const batch_request& r = batch[j];
    if (r.limits.size() != 1) {
      held.reset();
      if (!r.limits.empty()) decide_many(now, r.limits, r.cost, r.out);
      continue;
    }
    const keyed_limit& request = r.limits[0];
    const std::uint64_t hash = hashes[j % ring];
    // A run on one key gives its slot up when a rebuild of the shard starts freezing the table:
    // the rebuild (and every decision in the shard behind it) would wait for the whole run.
    if (held.get() == nullptr || hash != held_hash ||
        shard_of(hash).freezing.load(std::memory_order_relaxed) || !held.get()->holds(request.key)) {
      held.reset();  // before lock_key: a rebuild waits for every slot
      shard& sh = shard_of(hash);
      slot* found = sh.lock_located(where[j % ring], hash, request.key);
      held.reset(found != nullptr ? found : &lock_key(sh, hash, request.key, request.rule->algorithm, now));
      held_hash = hash;
    }
    decide_on(*held.get(), now, request, r.cost, r.out[0], rules);
  }
}

memory_backend::memory_backend(memory_options options) : impl_(std::make_unique<impl>(options)) {}

const keel::clock& memory_backend::clock() const noexcept {
  return *impl_->clock;
}
memory_backend::~memory_backend() = default;

result<void> memory_backend::decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                    std::span<decision> out) {
  return decide_at(impl_->now(), limits, cost, out);
}

result<void> memory_backend::decide_at(std::int64_t now, std::span<const keyed_limit> limits,
                                       std::uint64_t cost, std::span<decision> out) {
  if (auto checked = check_request(limits, cost, out); !checked) return checked;
  if (limits.size() == 1) {
    impl_->decide_one(now, limits[0], cost, out[0]);
  } else if (!limits.empty()) {
    impl_->decide_many(now, limits, cost, out);
  }
  return {};
}

result<void> memory_backend::decide_batch(std::span<const batch_request> batch) {
  return decide_batch_at(impl_->now(), batch);
}

result<void> memory_backend::decide_batch_at(std::int64_t now, std::span<const batch_request> batch) {
  for (const auto& r : batch) {
    if (auto checked = check_request(r.limits, r.cost, r.out); !checked) return checked;
  }
  impl_->decide_batch(now, batch);
  return {};
}

result<void> memory_backend::adjust(const keyed_limit& limit, std::int64_t points) {
  const std::uint64_t hash = impl::hash_of(limit.key);
  shard& sh = impl_->shard_of(hash);
  const std::int64_t now = impl_->now();
  const held_slot held(impl::lock_key(sh, hash, limit.key, limit.rule->algorithm, now));
  slot& s = *held.get();
  if (s.kind != limit.rule->algorithm) {
    s.change_state(limit.rule->algorithm);
  }
  const decision after = with_state(s, [&](auto& st) {
    ratelimit::adjust(*limit.rule, st, now, points);
    return peek(*limit.rule, st, now, 0);
  });
  s.expires_at = std::max(now + after.reset.count(), s.blocked_until);
  return {};
}

std::size_t memory_backend::evict_expired() {
  std::size_t dropped = 0;
  const std::int64_t now = impl_->now();
  for (std::size_t i = 0; i <= impl_->shard_mask; ++i) {
    shard& sh = impl_->shards[i];
    std::lock_guard guard(sh.lock);
    dropped += sh.drop_expired(now);
  }
  return dropped;
}

memory_stats memory_backend::stats() const {
  memory_stats s;
  for (std::size_t i = 0; i <= impl_->shard_mask; ++i) {
    std::lock_guard guard(impl_->shards[i].lock);
    s.keys += impl_->shards[i].size;
    s.evicted_expired += impl_->shards[i].evicted_expired;
    s.evicted_live += impl_->shards[i].evicted_live;
  }
  return s;
}

}  // namespace keel::ratelimit
