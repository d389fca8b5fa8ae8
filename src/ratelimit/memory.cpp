#include <keel/ratelimit/memory.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
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
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

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
// and writes (the key itself, its state, its expiry and block). The table moves slots with
// memcpy; what a slot owns on the heap (a long key, a sliding log) is freed by release().
struct alignas(64) slot {
  static constexpr std::size_t inline_key = 22;
  static constexpr std::uint8_t long_key = 0xff;

  std::int64_t expires_at;  // from then on the state is indistinguishable from a fresh one
  std::int64_t blocked_until;
  alignas(8) unsigned char state[24];  // gcra_state, token_bucket_state, sliding_window_state or
                                       // sliding_log_state*
  algorithm kind;
  std::uint8_t key_size;  // the key's length when it is stored inline, long_key otherwise
  char key[inline_key];   // the key, or a char* and a std::uint32_t size for longer keys

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

  void reset_state(algorithm a) {
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
        ::new (state) sliding_log_state*(new sliding_log_state);
        return;
    }
  }
  void release_state() noexcept {
    if (kind == algorithm::sliding_log) delete as<sliding_log_state*>();
  }
  void release() noexcept {
    release_state();
    if (key_size == long_key) delete[] key_view().data();
  }
};
static_assert(sizeof(slot) == 64 && std::is_trivially_copyable_v<slot>);

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

  void* take(kind k, std::size_t bytes) {
    bytes = block_size(bytes);
    std::lock_guard guard(mutex_);
    auto& spare = spare_[index(k, bytes)];
    if (!spare.empty()) {
      void* p = spare.back();
      spare.pop_back();
      return p;
    }
    if (size_ - used_ >= bytes) {
      void* p = base_ + used_;
      used_ += bytes;
      return p;
    }
    void* p = ::operator new (bytes, std::align_val_t{64});
    heap_.push_back(p);
    return p;
  }
  void give(kind k, void* p, std::size_t bytes) {
    if (p == nullptr) return;
    std::lock_guard guard(mutex_);
    spare_[index(k, block_size(bytes))].push_back(p);
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
// with the mask and the slot array's address in front. A batch probes it without the shard's
// lock to find which slot to prefetch, so the entries are relaxed atomics (plain loads and
// stores on x86), and its memory stays a hash array of the same capacity while the backend
// lives (table_arena). A reader holding a stale array only computes a useless prefetch.
class hash_array {
 public:
  static constexpr std::size_t header = 2;  // [0] mask, [1] slots address

  [[nodiscard]] static std::size_t bytes(std::size_t capacity) noexcept {
    return (header + capacity) * sizeof(std::atomic<std::uint64_t>);
  }

  hash_array() = default;
  // Takes the memory at `cells` (bytes(capacity) of it) and makes it an empty array.
  hash_array(void* cells, std::size_t capacity, const void* slots) noexcept
      : cells_(static_cast<std::atomic<std::uint64_t>*>(cells)) {
    static_assert(std::is_trivially_destructible_v<std::atomic<std::uint64_t>>);
    ::new (&cells_[0]) std::atomic<std::uint64_t>(capacity - 1);
    ::new (&cells_[1]) std::atomic<std::uint64_t>(reinterpret_cast<std::uintptr_t>(slots));
    for (std::size_t i = 0; i < capacity; ++i) ::new (&cells_[header + i]) std::atomic<std::uint64_t>(0);
  }

  [[nodiscard]] std::atomic<std::uint64_t>* data() const noexcept { return cells_; }
  [[nodiscard]] std::uint64_t operator[](std::size_t i) const noexcept {
    return cells_[header + i].load(std::memory_order_relaxed);
  }
  void set(std::size_t i, std::uint64_t hash) noexcept {
    cells_[header + i].store(hash, std::memory_order_relaxed);
  }

 private:
  std::atomic<std::uint64_t>* cells_ = nullptr;
};

// A shard owns a cache line for its lock and counters, so threads on different shards never
// share one.
struct alignas(64) shard {
  spinlock lock;
  // The latest time a decision here used: a reading older than it (a coarse clock, a caller's
  // stale timestamp) is taken as it, so the state never sees time go backwards.
  std::int64_t latest = never;
  std::size_t capacity = 0;  // a power of two
  hash_array hashes;
  slot* slots = nullptr;
  table_arena* arena = nullptr;
  std::size_t size = 0;
  std::size_t max_size = 0;
  std::uint64_t evicted_expired = 0;
  std::uint64_t evicted_live = 0;
  // The current hash array, readable without the lock (see hash_array).
  std::atomic<std::atomic<std::uint64_t>*> hashes_hint{nullptr};

  shard() = default;
  shard(const shard&) = delete;
  shard& operator=(const shard&) = delete;
  ~shard() {
    for (std::size_t i = 0; i < capacity; ++i) {
      if (hashes[i] != 0) slots[i].release();
    }
  }

  // Makes empty tables of `slots_count` slots (the caller gives the old ones back).
  void allocate(std::size_t slots_count) {
    capacity = slots_count;
    slots = static_cast<slot*>(arena->take(table_arena::kind::slots, capacity * sizeof(slot)));
    hashes = hash_array(arena->take(table_arena::kind::hashes, hash_array::bytes(capacity)), capacity, slots);
    hashes_hint.store(hashes.data(), std::memory_order_release);
  }

  [[nodiscard]] std::size_t mask() const noexcept { return capacity - 1; }

  // Without the lock: brings the hash entries where `hash`'s probe starts, and the slot there,
  // into the cache. A decision's two misses then overlap whatever runs meanwhile.
  void prefetch(std::uint64_t hash) const noexcept {
    const std::atomic<std::uint64_t>* cells = hashes_hint.load(std::memory_order_acquire);
    const std::size_t i = hash & cells[0].load(std::memory_order_relaxed);
    __builtin_prefetch(cells + hash_array::header + i);
    __builtin_prefetch(reinterpret_cast<const slot*>(cells[1].load(std::memory_order_relaxed)) + i, 1);
  }

  // Without the lock, once prefetch(hash) has had time to land: probes the hash entries for
  // the slot the key is really in (linear probing moves many keys past their home slot) and
  // prefetches that one. Bounded, and harmless on a stale or changing array.
  void prefetch_slot(std::uint64_t hash) const noexcept {
    const std::atomic<std::uint64_t>* cells = hashes_hint.load(std::memory_order_acquire);
    const std::size_t m = cells[0].load(std::memory_order_relaxed);
    std::size_t i = hash & m;
    for (int probes = 0; probes < 16; ++probes) {
      const std::uint64_t h = cells[hash_array::header + i].load(std::memory_order_relaxed);
      if (h == hash || h == 0) break;
      i = (i + 1) & m;
    }
    prefetch_for_write(reinterpret_cast<const slot*>(cells[1].load(std::memory_order_relaxed)) + i);
    prefetch_for_write(&lock);  // shared by every key of the shard: last written by any thread
  }

  // Under the lock: `now`, unless an earlier decision here used a later time.
  std::int64_t clamp(std::int64_t now) noexcept {
    if (now < latest) return latest;
    latest = now;
    return now;
  }

  // Inline so that the common case (room to spare) is two compares. Tables fill to 7/8: the
  // probe runs over the dense hash array, and a fuller table keeps more of it in cache.
  void make_room(std::size_t incoming, std::int64_t now) {
    if (size + incoming <= max_size && (size + incoming) * 8 <= capacity * 7) [[likely]]
      return;
    make_room_slow(incoming, now);
  }

  slot* find_or_insert(std::uint64_t hash, std::string_view key, algorithm a, std::int64_t now) {
    std::size_t i = hash & mask();
    while (hashes[i] != 0) {
      if (hashes[i] == hash && slots[i].holds(key)) {
        slot& s = slots[i];
        if (s.kind != a) {  // the policy changed
          s.release_state();
          s.reset_state(a);
        }
        return &s;
      }
      i = (i + 1) & mask();
    }
    slot& s = slots[i];
    s.set_key(key);
    s.blocked_until = never;
    s.expires_at = now;
    s.reset_state(a);
    hashes.set(i, hash);
    ++size;
    return &s;
  }

  // Moves the entries `keep` accepts into tables of `new_capacity` slots; frees the others.
  template <class Keep>
  void rebuild(std::size_t new_capacity, Keep&& keep) {
    const hash_array old_hashes = hashes;
    slot* const old_slots = slots;
    const std::size_t old_capacity = capacity;
    allocate(new_capacity);
    size = 0;
    for (std::size_t j = 0; j < old_capacity; ++j) {
      if (old_hashes[j] == 0) continue;
      if (!keep(old_slots[j])) {
        old_slots[j].release();
        continue;
      }
      std::size_t i = old_hashes[j] & mask();
      while (hashes[i] != 0) i = (i + 1) & mask();
      hashes.set(i, old_hashes[j]);
      std::memcpy(static_cast<void*>(&slots[i]), &old_slots[j], sizeof(slot));
      ++size;
    }
    arena->give(table_arena::kind::hashes, old_hashes.data(), hash_array::bytes(old_capacity));
    arena->give(table_arena::kind::slots, old_slots, old_capacity * sizeof(slot));
  }

  std::size_t drop_expired(std::int64_t now) {
    const std::size_t before = size;
    rebuild(capacity, [now](const slot& s) { return s.expires_at > now; });
    evicted_expired += before - size;
    return before - size;
  }

  // Makes sure `incoming` more keys fit without rehashing or evicting while slots are in use.
  void make_room_slow(std::size_t incoming, std::int64_t now) {
    if (size + incoming > max_size) {
      drop_expired(now);
      if (size + incoming > max_size) {
        // Full of live keys: forget the ones closest to expiring, down to 7/8 so that this
        // full scan is not repeated on every insert.
        const std::size_t target = std::min(max_size - std::min(incoming, max_size), max_size - max_size / 8);
        std::vector<std::int64_t> expiries;
        expiries.reserve(size);
        for (std::size_t j = 0; j < capacity; ++j) {
          if (hashes[j] != 0) expiries.push_back(slots[j].expires_at);
        }
        const std::size_t drop = size - std::min(size, target);
        if (drop > 0) {
          std::nth_element(expiries.begin(), expiries.begin() + static_cast<std::ptrdiff_t>(drop - 1),
                           expiries.end());
          const std::int64_t cutoff = expiries[drop - 1];
          std::size_t dropped = 0;
          const std::size_t before = size;
          rebuild(capacity, [&](const slot& s) {
            if (s.expires_at <= cutoff && dropped < drop) return ++dropped, false;
            return true;
          });
          evicted_live += before - size;
        }
      }
    }
    std::size_t grown = capacity;
    while ((size + incoming) * 8 > grown * 7) grown *= 2;
    if (grown != capacity) rebuild(grown, [](const slot&) { return true; });
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

  // One limit, the common case: one shard, no ordering, no second pass. `sh` is locked.
  static void decide_locked(shard& sh, std::uint64_t hash, std::int64_t now, const keyed_limit& request,
                            std::uint64_t cost, decision& out) {
    const limit& rule = *request.rule;
    now = sh.clamp(now);
    sh.make_room(1, now);
    slot& s = *sh.find_or_insert(hash, request.key, rule.algorithm, now);
    if (s.blocked_until > now) {
      const std::chrono::nanoseconds left(s.blocked_until - now);
      out = {.allowed = false, .limit = rule.capacity(), .remaining = 0, .reset = left, .retry_after = left};
      return;
    }
    out = with_state(s, [&](auto& st) { return spend(rule, st, now, cost); });
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
    sh.prefetch(hash);  // the slot's cache misses overlap taking the lock
    std::lock_guard guard(sh.lock);
    decide_locked(sh, hash, now, request, cost, out);
  }

  void decide_many(std::int64_t now, std::span<const keyed_limit> limits, std::uint64_t cost,
                   std::span<decision> out);

  void decide_batch(std::int64_t now, std::span<const batch_request> batch);
};

// Several limits: their shards are locked in index order (so decisions never deadlock), all
// limits are peeked, then committed only if all allow.
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
  for (std::size_t k = 0; k < locked_count; ++k) {
    locked[k]->lock.lock();
    now = std::max(now, locked[k]->latest);
  }
  for (std::size_t k = 0; k < locked_count; ++k) {
    shard& sh = *locked[k];
    sh.latest = now;
    std::size_t incoming = 0;
    for (std::size_t i = 0; i < n; ++i) incoming += owner[i] == &sh ? 1 : 0;
    sh.make_room(incoming, now);
  }

  slot* slots[max_limits_per_decision];
  bool all_allowed = true;
  for (std::size_t i = 0; i < n; ++i) {
    const limit& rule = *limits[i].rule;
    slots[i] = owner[i]->find_or_insert(hashes[i], limits[i].key, rule.algorithm, now);
    slot& s = *slots[i];
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

  for (std::size_t i = 0; i < n; ++i) {
    const limit& rule = *limits[i].rule;
    slot& s = *slots[i];
    if (all_allowed) {
      with_state(s, [&](auto& st) { commit(rule, st, now, cost); });
      s.expires_at = std::max(s.expires_at, now + out[i].reset.count());
    } else if (out[i].allowed) {
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
  for (std::size_t k = locked_count; k > 0; --k) locked[k - 1]->lock.unlock();
}

// A pipeline over the batch: the key `2 × ahead` places further on is hashed and the start of
// its probe prefetched; the one `ahead` places on has its hash entries in cache by then, so the
// slot it really occupies is found and prefetched; this one is decided with both in cache.
// Many cache misses are in flight at once instead of one. A shard's lock is kept across
// consecutive requests on the same shard (one hot key: locked once per run, not per request).
void memory_backend::impl::decide_batch(std::int64_t now, std::span<const batch_request> batch) {
  constexpr std::size_t ahead = 4;
  constexpr std::size_t ring = 32;  // > 2 × ahead, a power of two
  std::uint64_t hashes[ring];
  const auto single = [&](std::size_t j) { return j < batch.size() && batch[j].limits.size() == 1; };
  const auto start = [&](std::size_t j) {
    if (!single(j)) return;
    hashes[j % ring] = hash_of(batch[j].limits[0].key);
    shard_of(hashes[j % ring]).prefetch(hashes[j % ring]);
  };
  const auto locate = [&](std::size_t j) {
    if (single(j)) shard_of(hashes[j % ring]).prefetch_slot(hashes[j % ring]);
  };
  for (std::size_t j = 0; j < 2 * ahead; ++j) start(j);
  for (std::size_t j = 0; j < ahead; ++j) locate(j);
  shard* held = nullptr;
  for (std::size_t j = 0; j < batch.size(); ++j) {
    start(j + 2 * ahead);
    locate(j + ahead);
    const batch_request& r = batch[j];
    if (r.limits.size() != 1) {
      if (held != nullptr) held->lock.unlock();
      held = nullptr;
      if (!r.limits.empty()) decide_many(now, r.limits, r.cost, r.out);
      continue;
    }
    const std::uint64_t hash = hashes[j % ring];
    shard& sh = shard_of(hash);
    if (&sh != held) {
      if (held != nullptr) held->lock.unlock();
      sh.lock.lock();
      held = &sh;
    }
    decide_locked(sh, hash, now, r.limits[0], r.cost, r.out[0]);
  }
  if (held != nullptr) held->lock.unlock();
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
  std::lock_guard guard(sh.lock);
  const std::int64_t now = sh.clamp(impl_->now());
  sh.make_room(1, now);
  slot& s = *sh.find_or_insert(hash, limit.key, limit.rule->algorithm, now);
  const decision after = with_state(s, [&](auto& st) {
    ratelimit::adjust(*limit.rule, st, now, points);
    return peek(*limit.rule, st, now, 0);
  });
  s.expires_at = std::max(now + after.reset.count(), s.blocked_until);
  return {};
}

std::size_t memory_backend::evict_expired() {
  std::size_t dropped = 0;
  for (std::size_t i = 0; i <= impl_->shard_mask; ++i) {
    shard& sh = impl_->shards[i];
    std::lock_guard guard(sh.lock);
    dropped += sh.drop_expired(sh.clamp(impl_->now()));
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
