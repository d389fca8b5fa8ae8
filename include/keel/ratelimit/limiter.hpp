#pragma once
/// @file keel/ratelimit/limiter.hpp
/// @brief The limiter: applies a policy set to requests through a backend, with soft limits,
/// shadow mode, allow/deny lists, an insurance limiter and a cache of blocked keys.
#include <keel/core/clock.hpp>
#include <keel/core/result.hpp>
#include <keel/ratelimit/backend.hpp>
#include <keel/ratelimit/policy.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace keel::metrics {
class registry;
}

namespace keel::ratelimit {

/// What the limiter knows about a request. Views must stay valid during check().
struct request_attributes {
  std::string_view path{};  ///< matched against policy routes
  std::string_view ip{};
  std::string_view user{};
  std::string_view api_key{};
  std::string_view tenant{};
  std::string_view route{};  ///< the route pattern ("/jobs/{id}"), so keys stay bounded
};

/// The overall outcome of a check.
enum class outcome : std::uint8_t {
  allowed,  ///< within every limit
  warned,   ///< allowed, but a soft limit (warn_at) was crossed
  denied,   ///< over a limit (or blocked): answer 429
  refused,  ///< on the deny list: answer 403
};

/// How a decision was reached, beyond the store answering.
enum class source : std::uint8_t {
  store,          ///< the backend decided
  blocked_cache,  ///< a key known to be over its limit was denied without asking the store
  insurance,      ///< the store failed; the in-process insurance limiter decided
  failed_open,    ///< the store failed; the policy allows everything meanwhile
  failed_closed,  ///< the store failed; the policy denies everything meanwhile
  list,           ///< the allow or deny list decided
};

/// One limit's part in a verdict, for the RateLimit headers.
struct limit_report {
  std::string_view policy;  ///< the policy's name
  std::uint32_t index = 0;  ///< which of its limits
  std::uint32_t limits_in_policy = 1;
  const limit* rule = nullptr;
  ratelimit::decision decision{};
  bool shadow = false;
};

/// What check() decided. Holds the policy set it used alive, so the views stay valid.
struct verdict {
  ratelimit::outcome outcome = outcome::allowed;
  ratelimit::source source = source::store;
  bool shadow_denied = false;  ///< a shadow policy would have denied
  std::array<limit_report, max_limits_per_decision> reports{};
  std::size_t report_count = 0;
  std::shared_ptr<const void> keep_alive{};

  [[nodiscard]] bool allowed() const noexcept {
    return outcome == outcome::allowed || outcome == outcome::warned;
  }
  /// The report the headers show: a denying limit with the longest retry-after if denied,
  /// otherwise the enforced limit with the fewest units remaining. Null when none applied.
  [[nodiscard]] const limit_report* binding() const noexcept;
  /// Longest retry-after among denying limits (zero when allowed).
  [[nodiscard]] std::chrono::nanoseconds retry_after() const noexcept;
};

/// Options of a limiter.
struct limiter_options {
  /// Prepended to every key in the store, e.g. "myapp:rl:".
  std::string key_prefix = "rl:";
  /// Metrics are registered here (ratelimit_decisions_total{policy,outcome},
  /// ratelimit_store_errors_total{backend}, ratelimit_store_up{backend}), e.g. a server's
  /// `server.metrics()`; it must outlive the limiter. The limiter keeps a private one when null.
  keel::metrics::registry* metrics = nullptr;
  /// Used for the insurance limiter, the blocked-key cache and the retry timer.
  const keel::clock* clock = &keel::system_clock::instance();
  /// After a store failure, requests skip the store for this long before it is tried again.
  std::chrono::milliseconds retry_store_after = std::chrono::milliseconds(500);
  /// Remember keys the store denied until their retry-after, and deny them locally meanwhile.
  /// Worth it for a remote store; pointless for memory_backend.
  bool cache_blocked_keys = true;
  /// Keys held by the insurance limiter and the blocked-key cache, each.
  std::size_t local_max_keys = 100'000;
};

/// Applies a policy set to requests. Thread-safe; policies are swapped atomically on reload,
/// requests in flight finish with the set they started with.
class limiter {
 public:
  /// `store` must outlive the limiter.
  explicit limiter(backend& store, limiter_options options = {});
  ~limiter();
  limiter(const limiter&) = delete;
  limiter& operator=(const limiter&) = delete;

  /// Installs `set` after validate(). On error the current set stays and `problem` says why.
  [[nodiscard]] result<void> set_policies(policy_set set, std::string* problem = nullptr);
  /// Reads, validates and installs the JSON file; on any error the current set stays.
  [[nodiscard]] result<void> load_file(const std::filesystem::path& file, std::string* problem = nullptr);
  /// The set in force.
  [[nodiscard]] std::shared_ptr<const policy_set> policies() const;

  /// Decides a request of `cost` units against every policy that applies to it: all enforced
  /// limits of all those policies at once (all or nothing), then the shadow ones.
  [[nodiscard]] verdict check(const request_attributes& request, std::uint64_t cost = 1);

  /// Penalty (points > 0) or reward (points < 0) on every limit of `policy_name` for the key
  /// `request` maps to. @returns errc::invalid_policy when no such policy applies to it.
  [[nodiscard]] result<void> adjust(const request_attributes& request, std::string_view policy_name,
                                    std::int64_t points);

  /// True while the store is considered down (between a failure and the next retry).
  [[nodiscard]] bool store_down() const noexcept;
  /// The registry the metrics are in.
  [[nodiscard]] keel::metrics::registry& metrics() noexcept;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::ratelimit
