#include <keel/core/log.hpp>
#include <keel/core/metrics.hpp>
#include <keel/ratelimit/limiter.hpp>
#include <keel/ratelimit/memory.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace keel::ratelimit {
namespace {

struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// Keys the store denied, until their retry-after: later requests for them are denied without a
// round trip (Envoy's "local cache of over-limit keys").
class blocked_cache {
 public:
  explicit blocked_cache(std::size_t max_keys)
      : max_per_shard_(std::max<std::size_t>(max_keys / shard_count, 16)) {}

  // Nonzero: blocked until then.
  std::int64_t blocked_until(std::string_view key, std::int64_t now) {
    auto& sh = shards_[std::hash<std::string_view>{}(key) % shard_count];
    std::lock_guard guard(sh.mutex);
    if (sh.entries.empty()) return 0;
    const auto it = sh.entries.find(key);
    if (it == sh.entries.end()) return 0;
    if (it->second <= now) {
      sh.entries.erase(it);
      return 0;
    }
    return it->second;
  }

  void put(std::string_view key, std::int64_t until, std::int64_t now) {
    auto& sh = shards_[std::hash<std::string_view>{}(key) % shard_count];
    std::lock_guard guard(sh.mutex);
    if (sh.entries.size() >= max_per_shard_) {
      std::erase_if(sh.entries, [now](const auto& e) { return e.second <= now; });
      if (sh.entries.size() >= max_per_shard_)
        sh.entries.clear();  // a cache: forgetting only costs round trips
    }
    auto [it, inserted] = sh.entries.try_emplace(std::string(key), until);
    if (!inserted) it->second = std::max(it->second, until);
  }

  void forget(std::string_view key) {
    auto& sh = shards_[std::hash<std::string_view>{}(key) % shard_count];
    std::lock_guard guard(sh.mutex);
    if (const auto it = sh.entries.find(key); it != sh.entries.end()) sh.entries.erase(it);
  }

 private:
  static constexpr std::size_t shard_count = 16;
  struct shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::int64_t, string_hash, std::equal_to<>> entries;
  };
  std::size_t max_per_shard_;
  std::array<shard, shard_count> shards_;
};

struct list_entry {
  attribute what;
  std::string value;
};

struct compiled_policy {
  const policy* source = nullptr;
  std::vector<limit> insurance_limits;
  keel::metrics::counter* allowed = nullptr;
  keel::metrics::counter* denied = nullptr;
  keel::metrics::counter* warned = nullptr;
  keel::metrics::counter* insurance = nullptr;
  keel::metrics::counter* failed_open = nullptr;
  keel::metrics::counter* failed_closed = nullptr;
  keel::metrics::counter* cached = nullptr;
  std::atomic<std::int64_t> last_log{std::numeric_limits<std::int64_t>::min()};
};

struct compiled_set {
  policy_set source;
  std::unique_ptr<compiled_policy[]> policies;
  std::size_t policy_count = 0;
  std::vector<list_entry> allow;
  std::vector<list_entry> deny;
};

std::string_view value_of(const request_attributes& r, attribute a) noexcept {
  switch (a) {
    case attribute::ip:
      return r.ip;
    case attribute::user:
      return r.user;
    case attribute::api_key:
      return r.api_key;
    case attribute::tenant:
      return r.tenant;
    case attribute::route:
      return r.route;
  }
  return {};
}

bool route_matches(const policy& p, std::string_view path) noexcept {
  if (p.routes.empty()) return true;
  for (const auto& pattern : p.routes) {
    if (pattern.ends_with('*')) {
      if (path.starts_with(std::string_view(pattern).substr(0, pattern.size() - 1))) return true;
    } else if (pattern == path) {
      return true;
    }
  }
  return false;
}

bool keys_present(const policy& p, const request_attributes& r) noexcept {
  for (const auto a : p.key_by) {
    if (value_of(r, a).empty()) return false;
  }
  return true;
}

// prefix + policy name + '#' + limit index + each attribute as '|' + length + ':' + value: the
// lengths make keys unambiguous whatever the values contain.
void append_key(std::string& out, std::string_view prefix, const policy& p, std::size_t index,
                const request_attributes& r) {
  char digits[24];
  auto append_number = [&](std::size_t n) {
    const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, n);
    out.append(digits, static_cast<std::size_t>(end - digits));
  };
  out += prefix;
  out += p.name;
  out += '#';
  append_number(index);
  for (const auto a : p.key_by) {
    const std::string_view v = value_of(r, a);
    out += '|';
    append_number(v.size());
    out += ':';
    out += v;
  }
}

limit divided(limit l, std::uint32_t divisor) {
  if (divisor <= 1) return l;
  l.count = std::max<std::uint64_t>(l.count / divisor, 1);
  if (l.burst != 0) l.burst = std::max<std::uint64_t>(l.burst / divisor, 1);
  return l;
}

std::vector<list_entry> compile_list(const std::vector<std::string>& entries) {
  std::vector<list_entry> out;
  for (const auto& e : entries) {
    const auto eq = e.find('=');
    const std::string_view name(e.data(), eq);
    for (const auto a :
         {attribute::ip, attribute::user, attribute::api_key, attribute::tenant, attribute::route}) {
      if (to_string(a) == name) out.push_back({a, e.substr(eq + 1)});
    }
  }
  return out;
}

bool listed(const std::vector<list_entry>& list, const request_attributes& r) noexcept {
  for (const auto& e : list) {
    if (value_of(r, e.what) == e.value) return true;
  }
  return false;
}

struct pending {
  compiled_policy* policy;
  std::uint32_t index;
  std::size_t key_offset;
  std::size_t key_size;
};

}  // namespace

struct limiter::impl {
  backend& store;
  // Set when the store is in process on the limiter's own clock: it is then handed the time
  // already read for this request instead of reading the clock again.
  memory_backend* local_store{nullptr};
  limiter_options options;
  std::unique_ptr<keel::metrics::registry> own_registry;
  keel::metrics::registry* registry;
  keel::metrics::counter_family& decisions;
  keel::metrics::counter& store_errors;
  keel::metrics::gauge& store_up;
  memory_backend insurance;
  blocked_cache blocked;
  std::atomic<std::shared_ptr<const compiled_set>> current;
  std::atomic<std::int64_t> retry_store_at{std::numeric_limits<std::int64_t>::min()};
  std::atomic<bool> down{false};

  impl(backend& s, limiter_options o)
      : store(s),
        options(std::move(o)),
        own_registry(options.metrics != nullptr ? nullptr : std::make_unique<keel::metrics::registry>()),
        registry(options.metrics != nullptr ? options.metrics : own_registry.get()),
        decisions(
            registry->add_counter("ratelimit_decisions_total",
                                  "Rate-limit decisions by policy and outcome (allowed, denied, warned, "
                                  "shadow_allowed, shadow_denied, insurance, failed_open, failed_closed, "
                                  "cached)",
                                  {"policy", "outcome"})),
        store_errors(registry
                         ->add_counter("ratelimit_store_errors_total", "Failed calls to the rate-limit store",
                                       {"backend"})
                         .labels({s.name()})),
        store_up(registry
                     ->add_gauge("ratelimit_store_up",
                                 "1 while the rate-limit store answers, 0 while it is down", {"backend"})
                     .labels({s.name()})),
        insurance({.clock = options.clock, .shards = 16, .max_keys = options.local_max_keys}),
        blocked(options.local_max_keys) {
    store_up.set(1);
    current.store(compile(policy_set{}));
    if (auto* m = dynamic_cast<memory_backend*>(&store); m != nullptr && &m->clock() == options.clock)
      local_store = m;
  }

  [[nodiscard]] std::int64_t now() const noexcept {
    return options.clock->monotonic().time_since_epoch().count();
  }

  std::shared_ptr<const compiled_set> compile(policy_set set) {
    auto c = std::make_shared<compiled_set>();
    c->source = std::move(set);
    c->policy_count = c->source.policies.size();
    c->policies = std::make_unique<compiled_policy[]>(c->policy_count);
    for (std::size_t i = 0; i < c->policy_count; ++i) {
      const policy& p = c->source.policies[i];
      compiled_policy& cp = c->policies[i];
      cp.source = &p;
      for (const auto& l : p.limits) cp.insurance_limits.push_back(divided(l, p.insurance_divisor));
      const std::string_view name = p.name;
      cp.allowed = &decisions.labels({name, p.shadow ? "shadow_allowed" : "allowed"});
      cp.denied = &decisions.labels({name, p.shadow ? "shadow_denied" : "denied"});
      cp.warned = &decisions.labels({name, "warned"});
      cp.insurance = &decisions.labels({name, "insurance"});
      cp.failed_open = &decisions.labels({name, "failed_open"});
      cp.failed_closed = &decisions.labels({name, "failed_closed"});
      cp.cached = &decisions.labels({name, "cached"});
    }
    c->allow = compile_list(c->source.allow);
    c->deny = compile_list(c->source.deny);
    return c;
  }

  // Logs at most once a second per policy, so a flood of marked requests is one line a second.
  bool should_log(compiled_policy& cp, std::int64_t t) noexcept {
    std::int64_t last = cp.last_log.load(std::memory_order_relaxed);
    const bool due = last == std::numeric_limits<std::int64_t>::min() || t - last >= 1'000'000'000;
    return due && cp.last_log.compare_exchange_strong(last, t, std::memory_order_relaxed);
  }

  void store_failed(const error_code& ec, std::int64_t t) {
    store_errors.inc();
    retry_store_at.store(t + std::chrono::nanoseconds(options.retry_store_after).count(),
                         std::memory_order_relaxed);
    if (!down.exchange(true)) {
      store_up.set(0);
      log::warn("rate-limit store unreachable; policies fall back to their on_failure mode",
                {{"backend", store.name()}, {"error", ec.message()}});
    }
  }

  void store_answered() {
    if (down.load(std::memory_order_relaxed) && down.exchange(false)) {
      store_up.set(1);
      log::info("rate-limit store reachable again", {{"backend", store.name()}});
    }
  }
};

const limit_report* verdict::binding() const noexcept {
  // Denied: the denying limit with the longest wait binds; allowed: the one with least left.
  const auto binds_more = [denied = !allowed()](const limit_report& r, const limit_report& than) {
    if (denied) {
      return !r.decision.allowed &&
             (than.decision.allowed || r.decision.retry_after > than.decision.retry_after);
    }
    return r.decision.remaining < than.decision.remaining;
  };
  const limit_report* best = nullptr;
  for (std::size_t i = 0; i < report_count; ++i) {
    const auto& r = reports[i];
    if (r.shadow) continue;
    if (best == nullptr || binds_more(r, *best)) best = &r;
  }
  return best;
}

std::chrono::nanoseconds verdict::retry_after() const noexcept {
  std::chrono::nanoseconds longest{0};
  for (std::size_t i = 0; i < report_count; ++i) {
    if (!reports[i].shadow && !reports[i].decision.allowed)
      longest = std::max(longest, reports[i].decision.retry_after);
  }
  return longest;
}

limiter::limiter(backend& store, limiter_options options)
    : impl_(std::make_unique<impl>(store, std::move(options))) {}
limiter::~limiter() = default;

result<void> limiter::set_policies(policy_set set, std::string* problem) {
  if (auto valid = validate(set, problem); !valid) return valid;
  impl_->current.store(impl_->compile(std::move(set)));
  return {};
}

result<void> limiter::load_file(const std::filesystem::path& file, std::string* problem) {
  std::string why;
  auto loaded = load_policies(file, &why);
  if (!loaded) {
    log::warn("rate-limit policy file rejected; the previous policies stay in force",
              {{"file", file.string()}, {"problem", why}});
    if (problem != nullptr) *problem = why;
    return loaded.error();
  }
  impl_->current.store(impl_->compile(std::move(*loaded)));
  log::info("rate-limit policies loaded", {{"file", file.string()}});
  return {};
}

std::shared_ptr<const policy_set> limiter::policies() const {
  auto c = impl_->current.load();
  return {c, &c->source};
}

bool limiter::store_down() const noexcept {
  return impl_->down.load(std::memory_order_relaxed);
}

keel::metrics::registry& limiter::metrics() noexcept {
  return *impl_->registry;
}

verdict limiter::check(const request_attributes& request, std::uint64_t cost) {
  auto set = impl_->current.load(std::memory_order_acquire);
  verdict v;
  if (listed(set->deny, request)) {
    v.outcome = outcome::refused;
    v.source = source::list;
    return v;
  }
  if (listed(set->allow, request)) {
    v.source = source::list;
    return v;
  }

  thread_local std::string keys;
  keys.clear();
  pending enforced[max_limits_per_decision];
  pending shadowed[max_limits_per_decision];
  std::size_t enforced_count = 0;
  std::size_t shadow_count = 0;
  for (std::size_t p = 0; p < set->policy_count; ++p) {
    compiled_policy& cp = set->policies[p];
    const policy& pol = *cp.source;
    if (!route_matches(pol, request.path) || !keys_present(pol, request)) continue;
    for (std::size_t i = 0; i < pol.limits.size(); ++i) {
      std::size_t& count = pol.shadow ? shadow_count : enforced_count;
      if (count == max_limits_per_decision) break;  // validate() keeps single policies within it
      const std::size_t offset = keys.size();
      append_key(keys, impl_->options.key_prefix, pol, i, request);
      (pol.shadow ? shadowed : enforced)[count++] = {&cp, static_cast<std::uint32_t>(i), offset,
                                                     keys.size() - offset};
    }
  }
  if (enforced_count + shadow_count == 0) return v;
  v.keep_alive = set;

  const std::string_view key_text = keys;
  auto key_of = [&](const pending& e) { return key_text.substr(e.key_offset, e.key_size); };
  const std::int64_t now = impl_->now();
  keyed_limit keyed[max_limits_per_decision];
  decision decided[max_limits_per_decision];

  auto report = [&](const pending& e, const decision& d, bool shadow) {
    const policy& pol = *e.policy->source;
    v.reports[v.report_count++] = {.policy = pol.name,
                                   .index = e.index,
                                   .limits_in_policy = static_cast<std::uint32_t>(pol.limits.size()),
                                   .rule = &pol.limits[e.index],
                                   .decision = d,
                                   .shadow = shadow};
  };

  if (enforced_count > 0) {
    for (std::size_t i = 0; i < enforced_count; ++i) {
      keyed[i] = {key_of(enforced[i]), &enforced[i].policy->source->limits[enforced[i].index]};
    }
    // Keys already known to be over their limit are denied here, without a round trip.
    bool cached_denial = false;
    if (impl_->options.cache_blocked_keys) {
      for (std::size_t i = 0; i < enforced_count; ++i) {
        if (const std::int64_t until = impl_->blocked.blocked_until(keyed[i].key, now); until != 0) {
          const std::chrono::nanoseconds left(until - now);
          report(enforced[i],
                 {.allowed = false, .limit = keyed[i].rule->capacity(), .reset = left, .retry_after = left},
                 false);
          enforced[i].policy->cached->inc();
          enforced[i].policy->denied->inc();
          cached_denial = true;
        }
      }
    }
    if (cached_denial) {
      v.outcome = outcome::denied;
      v.source = source::blocked_cache;
    } else {
      bool stored = false;
      if (now >= impl_->retry_store_at.load(std::memory_order_relaxed)) {
        auto answered =
            impl_->store.decide(std::span(keyed, enforced_count), cost, std::span(decided, enforced_count));
        if (answered) {
          stored = true;
          impl_->store_answered();
        } else if (answered.error() == errc::cost_exceeds_burst ||
                   answered.error() == errc::too_many_limits) {
          // The request itself is impossible, not the store's fault: deny it.
          for (std::size_t i = 0; i < enforced_count; ++i) {
            decided[i] = {.allowed = false, .limit = keyed[i].rule->capacity()};
          }
          stored = true;
        } else {
          impl_->store_failed(answered.error(), now);
        }
      }
      if (!stored) {
        // The store is down: each policy's on_failure decides, the insurance ones together.
        keyed_limit local[max_limits_per_decision];
        std::size_t local_index[max_limits_per_decision];
        std::size_t local_count = 0;
        bool any_closed = false;
        for (std::size_t i = 0; i < enforced_count; ++i) {
          const compiled_policy& cp = *enforced[i].policy;
          const limit& rule = *keyed[i].rule;
          switch (cp.source->on_failure) {
            case failure_mode::open:
              decided[i] = {.allowed = true, .limit = rule.capacity(), .remaining = rule.capacity()};
              break;
            case failure_mode::closed:
              decided[i] = {.allowed = false,
                            .limit = rule.capacity(),
                            .reset = impl_->options.retry_store_after,
                            .retry_after = impl_->options.retry_store_after};
              any_closed = true;
              break;
            case failure_mode::insurance:
              local_index[local_count] = i;
              local[local_count++] = {keyed[i].key, &cp.insurance_limits[enforced[i].index]};
              break;
          }
        }
        if (local_count > 0) {
          decision local_decided[max_limits_per_decision];
          if (impl_->insurance.decide(std::span(local, local_count), cost,
                                      std::span(local_decided, local_count))) {
            for (std::size_t j = 0; j < local_count; ++j) decided[local_index[j]] = local_decided[j];
          } else {
            for (std::size_t j = 0; j < local_count; ++j) {
              decided[local_index[j]] = {.allowed = false, .limit = local[j].rule->capacity()};
            }
          }
        }
        v.source = any_closed        ? source::failed_closed
                   : local_count > 0 ? source::insurance
                                     : source::failed_open;
      }

      bool all_allowed = true;
      for (std::size_t i = 0; i < enforced_count; ++i) all_allowed = all_allowed && decided[i].allowed;
      v.outcome = all_allowed ? outcome::allowed : outcome::denied;
      // Per policy: its outcome once per request, plus how it was decided.
      for (std::size_t i = 0; i < enforced_count; ++i) {
        report(enforced[i], decided[i], false);
        if (stored && !decided[i].allowed && impl_->options.cache_blocked_keys &&
            decided[i].retry_after.count() > 0) {
          impl_->blocked.put(keyed[i].key, now + decided[i].retry_after.count(), now);
        }
        compiled_policy& cp = *enforced[i].policy;
        const bool first_of_policy = i == 0 || enforced[i - 1].policy != &cp;
        if (!first_of_policy) continue;
        bool policy_denied = false;
        bool policy_warned = false;
        for (std::size_t j = i; j < enforced_count && enforced[j].policy == &cp; ++j) {
          const decision& d = decided[j];
          policy_denied = policy_denied || !d.allowed;
          const auto used = static_cast<double>(d.limit - std::min(d.remaining, d.limit));
          policy_warned = policy_warned || (cp.source->warn_at > 0 &&
                                            used >= cp.source->warn_at * static_cast<double>(d.limit));
        }
        if (policy_denied) {
          cp.denied->inc();
        } else if (all_allowed && policy_warned) {
          cp.warned->inc();
          v.outcome = outcome::warned;
          if (impl_->should_log(cp, now)) {
            log::warn("rate limit soft threshold crossed; requests still allowed",
                      {{"policy", cp.source->name}, {"key", keyed[i].key}});
          }
        } else {
          cp.allowed->inc();
        }
        if (!stored) {
          const failure_mode mode = cp.source->on_failure;
          (mode == failure_mode::open     ? cp.failed_open
           : mode == failure_mode::closed ? cp.failed_closed
                                          : cp.insurance)
              ->inc();
        }
      }
    }
  }

  if (shadow_count > 0) {
    // Measured only: a failing store or a denial never changes the outcome.
    for (std::size_t i = 0; i < shadow_count; ++i) {
      keyed[i] = {key_of(shadowed[i]), &shadowed[i].policy->source->limits[shadowed[i].index]};
    }
    if (impl_->store.decide(std::span(keyed, shadow_count), cost, std::span(decided, shadow_count))) {
      for (std::size_t i = 0; i < shadow_count; ++i) {
        report(shadowed[i], decided[i], true);
        compiled_policy& cp = *shadowed[i].policy;
        if (i + 1 < shadow_count && shadowed[i + 1].policy == &cp) continue;  // count once per policy
        bool policy_denied = false;
        for (std::size_t j = 0; j <= i; ++j) {
          if (shadowed[j].policy == &cp) policy_denied = policy_denied || !decided[j].allowed;
        }
        (policy_denied ? cp.denied : cp.allowed)->inc();
        if (policy_denied) {
          v.shadow_denied = true;
          if (impl_->should_log(cp, now)) {
            log::info("shadow rate-limit policy would have denied a request",
                      {{"policy", cp.source->name}, {"key", keyed[i].key}});
          }
        }
      }
    }
  }
  return v;
}

result<void> limiter::adjust(const request_attributes& request, std::string_view policy_name,
                             std::int64_t points) {
  auto set = impl_->current.load(std::memory_order_acquire);
  for (std::size_t p = 0; p < set->policy_count; ++p) {
    const policy& pol = *set->policies[p].source;
    if (pol.name != policy_name) continue;
    if (!keys_present(pol, request)) return errc::invalid_policy;
    for (std::size_t i = 0; i < pol.limits.size(); ++i) {
      std::string key;
      append_key(key, impl_->options.key_prefix, pol, i, request);
      if (auto done = impl_->store.adjust({key, &pol.limits[i]}, points); !done) return done;
      if (points < 0) impl_->blocked.forget(key);
    }
    return {};
  }
  return errc::invalid_policy;
}

}  // namespace keel::ratelimit
