#include <keel/ratelimit/backend.hpp>
#include <keel/ratelimit/policy.hpp>

#include <boost/json.hpp>

#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

namespace keel::ratelimit {
namespace json = boost::json;

std::string_view to_string(attribute a) noexcept {
  switch (a) {
    case attribute::ip:
      return "ip";
    case attribute::user:
      return "user";
    case attribute::api_key:
      return "api_key";
    case attribute::tenant:
      return "tenant";
    case attribute::route:
      return "route";
  }
  return "unknown";
}

namespace {

std::optional<attribute> parse_attribute(std::string_view name) noexcept {
  for (const auto a :
       {attribute::ip, attribute::user, attribute::api_key, attribute::tenant, attribute::route}) {
    if (to_string(a) == name) return a;
  }
  return std::nullopt;
}

bool valid_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool valid_list_entry(std::string_view entry) noexcept {
  const auto eq = entry.find('=');
  return eq != std::string_view::npos && eq + 1 < entry.size() && parse_attribute(entry.substr(0, eq));
}

result<void> fail(std::string* problem, std::string message) {
  if (problem != nullptr) *problem = std::move(message);
  return errc::invalid_policy;
}

std::string limit_problem(const limit& l) {
  if (l.count == 0) return "limit: must be at least 1";
  if (l.period.count() <= 0) return "period: must be positive";
  if (l.count > static_cast<std::uint64_t>(l.period.count())) {
    return "limit: more than one unit per nanosecond of the period; use a longer period";
  }
  if (l.burst != 0 && l.algorithm != algorithm::gcra && l.algorithm != algorithm::token_bucket) {
    return "burst: only gcra and token_bucket take a burst; remove it or change the algorithm";
  }
  if (l.algorithm == algorithm::sliding_log && l.count > 1'000'000) {
    return "limit: a sliding_log keeps one entry per request, so at most 1000000; use sliding_window or gcra";
  }
  return "numbers too large: count x period (or burst x period/count) must stay under about 73 years";
}

}  // namespace

result<void> validate(const policy_set& set, std::string* problem) {
  std::set<std::string, std::less<>> names;
  for (std::size_t p = 0; p < set.policies.size(); ++p) {
    const policy& pol = set.policies[p];
    const std::string at = "policies[" + std::to_string(p) + "]";
    if (!valid_name(pol.name)) {
      return fail(problem, at + ".name: expected 1-64 letters, digits, '-', '_' or '.'");
    }
    if (!names.insert(pol.name).second) {
      return fail(problem,
                  at + ".name: \"" + pol.name + "\" is used by an earlier policy; names must be unique");
    }
    if (pol.limits.empty()) return fail(problem, at + ".limits: expected at least one limit");
    if (pol.limits.size() > max_limits_per_decision) {
      return fail(problem, at + ".limits: at most " + std::to_string(max_limits_per_decision) + " limits");
    }
    for (std::size_t i = 0; i < pol.limits.size(); ++i) {
      if (!validate(pol.limits[i])) {
        return fail(problem, at + ".limits[" + std::to_string(i) + "]." + limit_problem(pol.limits[i]));
      }
    }
    for (std::size_t r = 0; r < pol.routes.size(); ++r) {
      if (pol.routes[r].empty() || pol.routes[r][0] != '/') {
        return fail(problem, at + ".routes[" + std::to_string(r) + "]: expected a path starting with '/'");
      }
    }
    if (!(pol.warn_at >= 0 && pol.warn_at < 1)) {
      return fail(problem,
                  at + ".warn_at: expected a fraction of the quota, 0 <= warn_at < 1 (0 turns it off)");
    }
    if (pol.insurance_divisor == 0) return fail(problem, at + ".insurance_divisor: expected at least 1");
  }
  for (std::size_t i = 0; i < set.allow.size(); ++i) {
    if (!valid_list_entry(set.allow[i])) {
      return fail(problem, "allow[" + std::to_string(i) +
                               "]: expected \"attribute=value\" with attribute one of "
                               "ip, user, api_key, tenant, route");
    }
  }
  for (std::size_t i = 0; i < set.deny.size(); ++i) {
    if (!valid_list_entry(set.deny[i])) {
      return fail(problem, "deny[" + std::to_string(i) +
                               "]: expected \"attribute=value\" with attribute one of "
                               "ip, user, api_key, tenant, route");
    }
  }
  return {};
}

std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) noexcept {
  std::int64_t amount = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), amount);
  if (ec != std::errc() || end == text.data() || amount < 0) return std::nullopt;
  const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  std::int64_t scale = 0;
  if (unit == "ns") {
    scale = 1;
  } else if (unit == "us") {
    scale = 1'000;
  } else if (unit == "ms") {
    scale = 1'000'000;
  } else if (unit == "s") {
    scale = 1'000'000'000;
  } else if (unit == "m") {
    scale = 60'000'000'000;
  } else if (unit == "h") {
    scale = 3'600'000'000'000;
  } else if (unit == "d") {
    scale = 86'400'000'000'000;
  } else {
    return std::nullopt;
  }
  if (amount > std::numeric_limits<std::int64_t>::max() / scale) return std::nullopt;
  return std::chrono::nanoseconds(amount * scale);
}

namespace {

// Walks the JSON document, remembering where it is so every message names the field.
struct reader {
  std::string problem;

  bool error(const std::string& at, std::string_view what) {
    problem = at + ": " + std::string(what);
    return false;
  }

  bool only_fields(const json::object& o, const std::string& at,
                   std::initializer_list<std::string_view> known) {
    for (const auto& field : o) {
      bool found = false;
      for (const auto k : known) found = found || field.key() == k;
      if (!found) {
        std::string list;
        for (const auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
        return error(at + "." + std::string(field.key()), "unknown field; expected one of " + list);
      }
    }
    return true;
  }

  bool string_of(const json::value& v, const std::string& at, std::string& out) {
    if (!v.is_string()) return error(at, "expected a string");
    out.assign(v.as_string().data(), v.as_string().size());
    return true;
  }

  bool count_of(const json::value& v, const std::string& at, std::uint64_t& out) {
    if (v.is_uint64()) {
      out = v.as_uint64();
    } else if (v.is_int64() && v.as_int64() >= 0) {
      out = static_cast<std::uint64_t>(v.as_int64());
    } else {
      return error(at, "expected a whole number >= 0");
    }
    return true;
  }

  bool duration_of(const json::value& v, const std::string& at, std::chrono::nanoseconds& out) {
    const auto parsed = v.is_string()
                            ? parse_duration(std::string_view(v.as_string().data(), v.as_string().size()))
                            : std::nullopt;
    if (!parsed) return error(at, "expected a duration like \"1s\" (units: ns, us, ms, s, m, h, d)");
    out = *parsed;
    return true;
  }

  bool string_list(const json::value& v, const std::string& at, std::vector<std::string>& out) {
    if (!v.is_array()) return error(at, "expected an array of strings");
    for (std::size_t i = 0; i < v.as_array().size(); ++i) {
      std::string s;
      if (!string_of(v.as_array()[i], at + "[" + std::to_string(i) + "]", s)) return false;
      out.push_back(std::move(s));
    }
    return true;
  }

  bool read_limit(const json::value& v, const std::string& at, limit& out) {
    if (!v.is_object()) return error(at, R"(expected an object like {"limit": 10, "period": "1s"})");
    const auto& o = v.as_object();
    if (!only_fields(o, at, {"algorithm", "limit", "period", "burst", "block"})) return false;
    out = limit{};
    if (const auto* a = o.if_contains("algorithm")) {
      std::string name;
      if (!string_of(*a, at + ".algorithm", name)) return false;
      const auto parsed = parse_algorithm(name);
      if (!parsed)
        return error(at + ".algorithm", "expected sliding_log, sliding_window, gcra or token_bucket");
      out.algorithm = *parsed;
    }
    const auto* count = o.if_contains("limit");
    if (count == nullptr) return error(at + ".limit", "missing; expected the number of requests per period");
    if (!count_of(*count, at + ".limit", out.count)) return false;
    const auto* period = o.if_contains("period");
    if (period == nullptr) return error(at + ".period", "missing; expected a duration like \"1s\"");
    if (!duration_of(*period, at + ".period", out.period)) return false;
    if (const auto* b = o.if_contains("burst"); b != nullptr && !count_of(*b, at + ".burst", out.burst))
      return false;
    if (const auto* b = o.if_contains("block"); b != nullptr && !duration_of(*b, at + ".block", out.block))
      return false;
    return true;
  }

  bool read_policy(const json::value& v, const std::string& at, policy& out) {
    if (!v.is_object()) return error(at, "expected an object with a name and limits");
    const auto& o = v.as_object();
    if (!only_fields(
            o, at,
            {"name", "key", "routes", "limits", "warn_at", "shadow", "on_failure", "insurance_divisor"})) {
      return false;
    }
    const auto* name = o.if_contains("name");
    if (name == nullptr) return error(at + ".name", "missing; every policy needs a name");
    if (!string_of(*name, at + ".name", out.name)) return false;
    if (const auto* key = o.if_contains("key")) {
      std::vector<std::string> names;
      if (!string_list(*key, at + ".key", names)) return false;
      out.key_by.clear();
      for (std::size_t i = 0; i < names.size(); ++i) {
        const auto a = parse_attribute(names[i]);
        if (!a)
          return error(at + ".key[" + std::to_string(i) + "]", "expected ip, user, api_key, tenant or route");
        out.key_by.push_back(*a);
      }
    }
    if (const auto* routes = o.if_contains("routes");
        routes != nullptr && !string_list(*routes, at + ".routes", out.routes)) {
      return false;
    }
    const auto* limits = o.if_contains("limits");
    if (limits == nullptr || !limits->is_array()) {
      return error(at + ".limits", R"(expected an array of limits like [{"limit": 10, "period": "1s"}])");
    }
    for (std::size_t i = 0; i < limits->as_array().size(); ++i) {
      limit l;
      if (!read_limit(limits->as_array()[i], at + ".limits[" + std::to_string(i) + "]", l)) return false;
      out.limits.push_back(l);
    }
    if (const auto* w = o.if_contains("warn_at")) {
      if (!w->is_number()) return error(at + ".warn_at", "expected a number between 0 and 1");
      out.warn_at = w->to_number<double>();
    }
    if (const auto* s = o.if_contains("shadow")) {
      if (!s->is_bool()) return error(at + ".shadow", "expected true or false");
      out.shadow = s->as_bool();
    }
    if (const auto* f = o.if_contains("on_failure")) {
      std::string mode;
      if (!string_of(*f, at + ".on_failure", mode)) return false;
      if (mode == "open") {
        out.on_failure = failure_mode::open;
      } else if (mode == "closed") {
        out.on_failure = failure_mode::closed;
      } else if (mode == "insurance") {
        out.on_failure = failure_mode::insurance;
      } else {
        return error(at + ".on_failure", R"(expected "open", "closed" or "insurance")");
      }
    }
    if (const auto* d = o.if_contains("insurance_divisor")) {
      std::uint64_t divisor = 0;
      if (!count_of(*d, at + ".insurance_divisor", divisor)) return false;
      if (divisor == 0 || divisor > 1'000'000)
        return error(at + ".insurance_divisor", "expected 1 to 1000000");
      out.insurance_divisor = static_cast<std::uint32_t>(divisor);
    }
    return true;
  }

  bool read_set(const json::value& v, policy_set& out) {
    if (!v.is_object()) return error("(document)", "expected an object with \"policies\"");
    const auto& o = v.as_object();
    if (!only_fields(o, "(document)", {"policies", "allow", "deny"})) {
      problem.erase(0, std::string_view("(document).").size());
      return false;
    }
    const auto* policies = o.if_contains("policies");
    if (policies == nullptr || !policies->is_array())
      return error("policies", "expected an array of policies");
    for (std::size_t i = 0; i < policies->as_array().size(); ++i) {
      policy p;
      if (!read_policy(policies->as_array()[i], "policies[" + std::to_string(i) + "]", p)) return false;
      out.policies.push_back(std::move(p));
    }
    if (const auto* a = o.if_contains("allow"); a != nullptr && !string_list(*a, "allow", out.allow))
      return false;
    if (const auto* d = o.if_contains("deny"); d != nullptr && !string_list(*d, "deny", out.deny))
      return false;
    return true;
  }
};

}  // namespace

result<policy_set> parse_policies(std::string_view text, std::string* problem) {
  boost::system::error_code ec;
  json::parse_options options;
  const json::value doc = json::parse(text, ec, {}, options);
  if (ec) {
    if (problem != nullptr) *problem = "(document): not valid JSON: " + ec.message();
    return errc::invalid_policy;
  }
  reader r;
  policy_set set;
  if (!r.read_set(doc, set)) {
    if (problem != nullptr) *problem = std::move(r.problem);
    return errc::invalid_policy;
  }
  if (auto valid = validate(set, problem); !valid) return valid.error();
  return set;
}

result<policy_set> load_policies(const std::filesystem::path& file, std::string* problem) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    if (problem != nullptr) *problem = file.string() + ": cannot be read; check the path and permissions";
    return errc::invalid_policy;
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  auto parsed = parse_policies(contents.str(), problem);
  if (!parsed && problem != nullptr) *problem = file.string() + ": " + *problem;
  return parsed;
}

}  // namespace keel::ratelimit
