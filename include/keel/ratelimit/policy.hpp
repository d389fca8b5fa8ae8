#pragma once
/// @file keel/ratelimit/policy.hpp
/// @brief Policies: which requests a set of limits applies to, how their key is built, and
/// what happens near the limit, in shadow mode and when the store is down. Built in code or
/// read from JSON.
#include <keel/core/result.hpp>
#include <keel/ratelimit/algorithms.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace keel::ratelimit {

/// What a policy does when its store cannot be reached.
enum class failure_mode : std::uint8_t {
  open,       ///< allow every request (availability first)
  closed,     ///< deny every request (protection first)
  insurance,  ///< decide in process with the limits divided by `insurance_divisor`
};

/// The request attributes keys are built from. A policy applies to a request only when every
/// attribute it is keyed by is present (non-empty): a per-user policy skips anonymous requests.
enum class attribute : std::uint8_t { ip, user, api_key, tenant, route };

/// "ip", "user", "api_key", "tenant", "route".
[[nodiscard]] std::string_view to_string(attribute a) noexcept;

/// One named set of limits, all checked together with the request's other policies.
struct policy {
  /// Shown in the RateLimit headers and metric labels: letters, digits, '-', '_', '.'.
  std::string name;
  /// Attributes the key is built from, e.g. {ip} or {tenant, route}. Empty: one global key.
  std::vector<attribute> key_by{attribute::ip};
  /// Paths it applies to: exact ("/api/login") or prefixes ending in '*' ("/api/*"). Empty: all.
  std::vector<std::string> routes{};
  /// Checked atomically: a request is allowed only if every limit allows it.
  std::vector<limit> limits{};
  /// Soft limit: once this fraction of a quota is used (0 < warn_at < 1), requests are still
  /// allowed but marked (outcome::warned: headers, metric, log). 0 turns it off.
  double warn_at = 0;
  /// Shadow mode: decisions are measured (metrics, log) but never deny.
  bool shadow = false;
  failure_mode on_failure = failure_mode::insurance;
  /// With failure_mode::insurance, each limit's count (and burst) is divided by this for the
  /// in-process stand-in, e.g. the number of processes that share the store.
  std::uint32_t insurance_divisor = 1;
};

/// Every policy, plus the allow and deny lists, as one unit that is swapped whole on reload.
struct policy_set {
  std::vector<policy> policies{};
  /// Entries "attribute=value" ("ip=10.0.0.1", "user=ops"): never limited.
  std::vector<std::string> allow{};
  /// Entries "attribute=value": always denied (the middleware answers 403).
  std::vector<std::string> deny{};
};

/// Checks names, limits, ratios and list entries. @returns errc::invalid_policy with a message
/// naming the field ("policies[1].limits[0]: ...") in `problem`.
[[nodiscard]] result<void> validate(const policy_set& set, std::string* problem = nullptr);

/// Reads a policy set from JSON and validates it:
/// @code{.json}
/// {"policies": [{"name": "api", "key": ["ip"], "routes": ["/api/*"], "warn_at": 0.8,
///                "on_failure": "insurance", "insurance_divisor": 2, "shadow": false,
///                "limits": [{"algorithm": "gcra", "limit": 10, "period": "1s", "burst": 20},
///                           {"algorithm": "sliding_window", "limit": 1000, "period": "1h",
///                            "block": "5m"}]}],
///  "allow": ["ip=127.0.0.1"], "deny": ["user=mallory"]}
/// @endcode
/// Durations are a whole number and a unit: ns, us, ms, s, m, h, d. Unknown fields are errors.
/// @returns errc::invalid_policy; `problem` then says which field and what was expected, e.g.
/// `policies[2].limits[0].period: expected a duration like "1s"`.
[[nodiscard]] result<policy_set> parse_policies(std::string_view json, std::string* problem = nullptr);

/// parse_policies() on the contents of `file`.
[[nodiscard]] result<policy_set> load_policies(const std::filesystem::path& file,
                                               std::string* problem = nullptr);

/// "1s", "250ms", "2m" → nanoseconds; nullopt when malformed.
[[nodiscard]] std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) noexcept;

}  // namespace keel::ratelimit
