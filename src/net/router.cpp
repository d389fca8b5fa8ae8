#include <keel/net/router.hpp>

#include <array>
#include <optional>
#include <stdexcept>

namespace keel::net {
namespace {

constexpr std::size_t method_count = static_cast<std::size_t>(method::other) + 1;

enum class segment_kind : std::uint8_t { tail, param, literal };  // ordered by specificity

struct segment {
  segment_kind kind;
  std::string text;  // the literal, or the parameter's name
};

struct route {
  std::string pattern;
  std::vector<segment> segments;
  std::array<std::optional<handler>, method_count> handlers;
};

// "/a/b" -> {"a", "b"}; "/" -> {""}; the leading '/' is required by callers.
std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (true) {
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

std::vector<segment> parse_pattern(std::string_view pattern) {
  if (pattern.empty() || pattern.front() != '/') {
    throw std::invalid_argument("keel::net::router: pattern '" + std::string(pattern) +
                                "' must start with '/'");
  }
  std::vector<segment> out;
  const auto parts = split(pattern);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const auto part = parts[i];
    if (part.find_first_of("{}") == std::string_view::npos) {
      out.push_back({segment_kind::literal, std::string(part)});
      continue;
    }
    if (part.size() < 3 || part.front() != '{' || part.back() != '}') {
      throw std::invalid_argument("keel::net::router: in pattern '" + std::string(pattern) +
                                  "', a parameter must be a whole segment: {name} or {name...}");
    }
    auto name = part.substr(1, part.size() - 2);
    auto kind = segment_kind::param;
    if (name.size() > 3 && name.ends_with("...")) {
      if (i + 1 != parts.size()) {
        throw std::invalid_argument("keel::net::router: in pattern '" + std::string(pattern) +
                                    "', {name...} must be the last segment");
      }
      name.remove_suffix(3);
      kind = segment_kind::tail;
    }
    if (name.find_first_of("{}/.") != std::string_view::npos) {
      throw std::invalid_argument("keel::net::router: bad parameter name in pattern '" +
                                  std::string(pattern) + "'");
    }
    out.push_back({kind, std::string(name)});
  }
  return out;
}

// Matches `parts` against `r`; fills `params` (raw values) and `rank` (specificity).
bool matches(const route& r, const std::vector<std::string_view>& parts,
             std::vector<std::pair<std::string, std::string>>& params, std::vector<segment_kind>& rank) {
  params.clear();
  rank.clear();
  std::size_t i = 0;
  for (const auto& seg : r.segments) {
    if (seg.kind == segment_kind::tail) {
      std::string rest;
      for (std::size_t j = i; j < parts.size(); ++j) {
        if (j > i) rest.push_back('/');
        rest.append(parts[j]);
      }
      params.emplace_back(seg.text, std::move(rest));
      rank.push_back(seg.kind);
      return true;
    }
    if (i >= parts.size()) return false;
    if (seg.kind == segment_kind::literal) {
      if (parts[i] != seg.text) return false;
    } else {
      if (parts[i].empty()) return false;  // "/jobs/" has no id
      params.emplace_back(seg.text, std::string(parts[i]));
    }
    rank.push_back(seg.kind);
    ++i;
  }
  return i == parts.size();
}

}  // namespace

response next_handler::operator()(request& req) const {
  return run_(context_, index_, req);
}

struct router::impl {
  std::vector<route> routes;
};

router::router() : impl_(std::make_unique<impl>()) {}
router::~router() = default;
router::router(router&&) noexcept = default;
router& router::operator=(router&&) noexcept = default;

void router::add(method m, std::string_view pattern, handler h) {
  if (m == method::other) throw std::invalid_argument("keel::net::router: method::other cannot be routed");
  if (!h) throw std::invalid_argument("keel::net::router: empty handler for '" + std::string(pattern) + "'");
  auto segments = parse_pattern(pattern);
  route* target = nullptr;
  for (auto& r : impl_->routes) {
    if (r.pattern == pattern) target = &r;
  }
  if (target == nullptr) {
    impl_->routes.push_back(
        route{.pattern = std::string(pattern), .segments = std::move(segments), .handlers = {}});
    target = &impl_->routes.back();
  }
  auto& slot = target->handlers[static_cast<std::size_t>(m)];
  if (slot) {
    throw std::invalid_argument("keel::net::router: " + std::string(to_string(m)) + " " +
                                std::string(pattern) + " is already routed");
  }
  slot = std::move(h);
}

route_match router::match(method m, std::string_view raw_path) const {
  route_match out;
  const auto parts = split(raw_path);
  std::vector<std::pair<std::string, std::string>> params;
  std::vector<segment_kind> rank;
  std::vector<segment_kind> best_rank;
  std::array<bool, method_count> allowed{};
  bool any = false;
  for (const auto& r : impl_->routes) {
    if (!matches(r, parts, params, rank)) continue;
    any = true;
    for (std::size_t i = 0; i < method_count; ++i) allowed[i] = allowed[i] || r.handlers[i].has_value();
    const auto* h = &r.handlers[static_cast<std::size_t>(m)];
    // A GET route answers HEAD too; the server drops the body.
    if (!h->has_value() && m == method::head) h = &r.handlers[static_cast<std::size_t>(method::get)];
    if (!h->has_value()) continue;
    if (out.target != nullptr && !(rank > best_rank)) continue;
    out.result = route_match::outcome::found;
    out.target = &**h;
    out.pattern = r.pattern;
    out.params = params;
    best_rank = rank;
  }
  if (out.target != nullptr) {
    for (auto& [name, value] : out.params) {
      if (auto decoded = percent_decode(value)) value = std::move(*decoded);
    }
    return out;
  }
  if (!any) return out;
  out.result = route_match::outcome::method_not_allowed;
  if (allowed[static_cast<std::size_t>(method::get)]) allowed[static_cast<std::size_t>(method::head)] = true;
  for (std::size_t i = 0; i < method_count; ++i) {
    if (allowed[i]) out.allowed.push_back(static_cast<method>(i));
  }
  return out;
}

}  // namespace keel::net
