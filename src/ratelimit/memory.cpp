#include <keel/ratelimit/memory.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <variant>
#include <vector>

// Inlined: a call into the shared library costs as much as hashing a 20-byte key.
#define XXH_INLINE_ALL
#include <xxhash.h>

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

using any_state =
    std::variant<gcra_state, token_bucket_state, sliding_window_state, std::unique_ptr<sliding_log_state>>;

any_state fresh_state(algorithm a) {
  switch (a) {
    case algorithm::gcra:
      return gcra_state{};
    case algorithm::token_bucket:
      return token_bucket_state{};
    case algorithm::sliding_window:
      return sliding_window_state{};
    case algorithm::sliding_log:
      return std::make_unique<sliding_log_state>();
  }
  return gcra_state{};
}

constexpr std::size_t state_index(algorithm a) noexcept {
  switch (a) {
    case algorithm::gcra:
      return 0;
    case algorithm::token_bucket:
      return 1;
    case algorithm::sliding_window:
      return 2;
    case algorithm::sliding_log:
      return 3;
  }
  return 0;
}

constexpr std::int64_t never = std::numeric_limits<std::int64_t>::min();

// A key stored in the slot itself when short (the usual "prefix:policy#0|len:value"), so a
// lookup touches the slot's cache lines and not a separate heap block.
class slot_key {
 public:
  void assign(std::string_view k) {
    size_ = static_cast<std::uint32_t>(k.size());
    if (k.size() <= inline_capacity) {
      std::memcpy(inline_.data(), k.data(), k.size());
      heap_.reset();
    } else {
      heap_ = std::make_unique<char[]>(k.size());
      std::memcpy(heap_.get(), k.data(), k.size());
    }
  }
  [[nodiscard]] std::string_view view() const noexcept {
    return {size_ <= inline_capacity ? inline_.data() : heap_.get(), size_};
  }
  bool operator==(std::string_view k) const noexcept { return view() == k; }

 private:
  static constexpr std::size_t inline_capacity = 44;
  std::array<char, inline_capacity> inline_{};
  std::uint32_t size_ = 0;
  std::unique_ptr<char[]> heap_;
};

struct slot {
  slot_key key;
  std::int64_t blocked_until = never;
  // The time from which the state is indistinguishable from a fresh one: evictable.
  std::int64_t expires_at = never;
  any_state state;
};

template <class Fn>
decltype(auto) with_state(any_state& st, Fn&& fn) {
  switch (st.index()) {
    case 0:
      return fn(*std::get_if<0>(&st));
    case 1:
      return fn(*std::get_if<1>(&st));
    case 2:
      return fn(*std::get_if<2>(&st));
    default:
      return fn(**std::get_if<3>(&st));
  }
}

struct shard {
  spinlock lock;
  std::vector<std::uint64_t> hashes;  // 0 marks an empty slot; a key's hash always has bit 0 set
  std::vector<slot> slots;
  std::size_t size = 0;
  std::size_t max_size = 0;
  std::uint64_t evicted_expired = 0;
  std::uint64_t evicted_live = 0;

  [[nodiscard]] std::size_t mask() const noexcept { return hashes.size() - 1; }

  // Inline so that the common case (room to spare) is two compares. Tables fill to 7/8: the
  // probe runs over the dense hash array, and a fuller table keeps more of it in cache.
  void make_room(std::size_t incoming, std::int64_t now) {
    if (size + incoming <= max_size && (size + incoming) * 8 <= hashes.size() * 7) [[likely]]
      return;
    make_room_slow(incoming, now);
  }

  slot* find_or_insert(std::uint64_t hash, std::string_view key, algorithm a, std::int64_t now) {
    std::size_t i = hash & mask();
    while (hashes[i] != 0) {
      if (hashes[i] == hash && slots[i].key == key) {
        slot& s = slots[i];
        if (s.state.index() != state_index(a)) s.state = fresh_state(a);  // the policy changed
        return &s;
      }
      i = (i + 1) & mask();
    }
    hashes[i] = hash;
    slot& s = slots[i];
    s.key.assign(key);
    s.blocked_until = never;
    s.expires_at = now;
    s.state = fresh_state(a);
    ++size;
    return &s;
  }

  // Moves the entries `keep` accepts into tables of `capacity` slots.
  template <class Keep>
  void rebuild(std::size_t capacity, Keep&& keep) {
    std::vector<std::uint64_t> old_hashes(capacity, 0);
    std::vector<slot> old_slots(capacity);
    old_hashes.swap(hashes);
    old_slots.swap(slots);
    size = 0;
    for (std::size_t j = 0; j < old_hashes.size(); ++j) {
      if (old_hashes[j] == 0 || !keep(old_slots[j])) continue;
      std::size_t i = old_hashes[j] & mask();
      while (hashes[i] != 0) i = (i + 1) & mask();
      hashes[i] = old_hashes[j];
      slots[i] = std::move(old_slots[j]);
      ++size;
    }
  }

  std::size_t drop_expired(std::int64_t now) {
    const std::size_t before = size;
    rebuild(hashes.size(), [now](const slot& s) { return s.expires_at > now; });
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
        for (std::size_t j = 0; j < hashes.size(); ++j) {
          if (hashes[j] != 0) expiries.push_back(slots[j].expires_at);
        }
        const std::size_t drop = size - std::min(size, target);
        if (drop > 0) {
          std::nth_element(expiries.begin(), expiries.begin() + static_cast<std::ptrdiff_t>(drop - 1),
                           expiries.end());
          const std::int64_t cutoff = expiries[drop - 1];
          std::size_t dropped = 0;
          const std::size_t before = size;
          rebuild(hashes.size(), [&](const slot& s) {
            if (s.expires_at <= cutoff && dropped < drop) return ++dropped, false;
            return true;
          });
          evicted_live += before - size;
        }
      }
    }
    std::size_t capacity = hashes.size();
    while ((size + incoming) * 8 > capacity * 7) capacity *= 2;
    if (capacity != hashes.size()) rebuild(capacity, [](const slot&) { return true; });
  }
};

}  // namespace

struct memory_backend::impl {
  const keel::clock* clock;
  std::size_t shard_mask;
  std::unique_ptr<shard[]> shards;

  explicit impl(const memory_options& o) : clock(o.clock) {
    const std::size_t count = std::bit_ceil(std::max<std::size_t>(o.shards, 1));
    shard_mask = count - 1;
    shards = std::make_unique<shard[]>(count);
    const std::size_t per_shard = std::max<std::size_t>(o.max_keys / count, 16);
    for (std::size_t i = 0; i < count; ++i) {
      shards[i].max_size = per_shard;
      shards[i].hashes.assign(16, 0);
      shards[i].slots.resize(16);
    }
  }

  static std::uint64_t hash_of(std::string_view key) noexcept {
    return XXH3_64bits(key.data(), key.size()) | 1U;
  }
  [[nodiscard]] std::size_t shard_of(std::uint64_t hash) const noexcept { return (hash >> 40) & shard_mask; }

  [[nodiscard]] std::int64_t now() const noexcept {
    // The system clock read directly: no virtual call on the hot path.
    if (clock == &keel::system_clock::instance()) {
      return std::chrono::steady_clock::now().time_since_epoch().count();
    }
    return clock->monotonic().time_since_epoch().count();
  }

  // One limit, the common case: one shard, no ordering, no second pass.
  void decide_one(std::int64_t now, const keyed_limit& request, std::uint64_t cost, decision& out) {
    const limit& rule = *request.rule;
    const std::uint64_t hash = hash_of(request.key);
    shard& sh = shards[shard_of(hash)];
    std::lock_guard guard(sh.lock);
    sh.make_room(1, now);
    slot& s = *sh.find_or_insert(hash, request.key, rule.algorithm, now);
    if (s.blocked_until > now) {
      const std::chrono::nanoseconds left(s.blocked_until - now);
      out = {.allowed = false, .limit = rule.capacity(), .remaining = 0, .reset = left, .retry_after = left};
      return;
    }
    out = with_state(s.state, [&](auto& st) {
      const decision d = peek(rule, st, now, cost);
      if (d.allowed) commit(rule, st, now, cost);
      return d;
    });
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
};

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
  const std::size_t n = limits.size();
  if (n == 1) {
    impl_->decide_one(now, limits[0], cost, out[0]);
    return {};
  }
  std::uint64_t hashes[max_limits_per_decision];
  std::size_t shard_ids[max_limits_per_decision];
  std::size_t locked[max_limits_per_decision];
  std::size_t locked_count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    hashes[i] = impl::hash_of(limits[i].key);
    shard_ids[i] = impl_->shard_of(hashes[i]);
    // Sorted, distinct: shards are always locked in index order, so decisions never deadlock.
    std::size_t at = 0;
    while (at < locked_count && locked[at] < shard_ids[i]) ++at;
    if (at < locked_count && locked[at] == shard_ids[i]) continue;
    for (std::size_t j = locked_count; j > at; --j) locked[j] = locked[j - 1];
    locked[at] = shard_ids[i];
    ++locked_count;
  }
  for (std::size_t k = 0; k < locked_count; ++k) {
    shard& sh = impl_->shards[locked[k]];
    sh.lock.lock();
    std::size_t incoming = 0;
    for (std::size_t i = 0; i < n; ++i) incoming += shard_ids[i] == locked[k] ? 1 : 0;
    sh.make_room(incoming, now);
  }

  slot* slots[max_limits_per_decision];
  bool all_allowed = true;
  for (std::size_t i = 0; i < n; ++i) {
    const limit& rule = *limits[i].rule;
    slots[i] = impl_->shards[shard_ids[i]].find_or_insert(hashes[i], limits[i].key, rule.algorithm, now);
    slot& s = *slots[i];
    if (s.blocked_until > now) {
      const std::chrono::nanoseconds left(s.blocked_until - now);
      out[i] = {
          .allowed = false, .limit = rule.capacity(), .remaining = 0, .reset = left, .retry_after = left};
      all_allowed = false;
      continue;
    }
    out[i] = with_state(s.state, [&](auto& st) { return peek(rule, st, now, cost); });
    all_allowed = all_allowed && out[i].allowed;
  }

  for (std::size_t i = 0; i < n; ++i) {
    const limit& rule = *limits[i].rule;
    slot& s = *slots[i];
    if (all_allowed) {
      with_state(s.state, [&](auto& st) { commit(rule, st, now, cost); });
      s.expires_at = std::max(s.expires_at, now + out[i].reset.count());
    } else if (out[i].allowed) {
      // Nothing was spent here after all: report the state as it is.
      out[i] = with_state(s.state, [&](auto& st) { return peek(rule, st, now, 0); });
    } else if (rule.block.count() > 0 && s.blocked_until <= now) {
      s.blocked_until = now + rule.block.count();
      s.expires_at = std::max(s.expires_at, s.blocked_until);
      out[i].retry_after = std::max(out[i].retry_after, rule.block);
      out[i].reset = std::max(out[i].reset, rule.block);
      out[i].remaining = 0;
    }
  }
  for (std::size_t k = locked_count; k > 0; --k) impl_->shards[locked[k - 1]].lock.unlock();
  return {};
}

result<void> memory_backend::adjust(const keyed_limit& limit, std::int64_t points) {
  const std::int64_t now = impl_->now();
  const std::uint64_t hash = impl::hash_of(limit.key);
  shard& sh = impl_->shards[impl_->shard_of(hash)];
  std::lock_guard guard(sh.lock);
  sh.make_room(1, now);
  slot& s = *sh.find_or_insert(hash, limit.key, limit.rule->algorithm, now);
  const decision after = with_state(s.state, [&](auto& st) {
    ratelimit::adjust(*limit.rule, st, now, points);
    return peek(*limit.rule, st, now, 0);
  });
  s.expires_at = std::max(now + after.reset.count(), s.blocked_until);
  return {};
}

std::size_t memory_backend::evict_expired() {
  const std::int64_t now = impl_->now();
  std::size_t dropped = 0;
  for (std::size_t i = 0; i <= impl_->shard_mask; ++i) {
    std::lock_guard guard(impl_->shards[i].lock);
    dropped += impl_->shards[i].drop_expired(now);
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
