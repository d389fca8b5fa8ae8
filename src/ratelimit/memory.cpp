#include <keel/ratelimit/memory.hpp>

#include "key_table.hpp"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>

// Inlined: a call into the shared library costs as much as hashing a 20-byte key.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <ctime>

namespace keel::ratelimit {

using key_table::hash_array;
using key_table::held_slot;
using key_table::shard;
using key_table::slot;
using key_table::spinlock;
using key_table::table_arena;
using key_table::with_state;

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
