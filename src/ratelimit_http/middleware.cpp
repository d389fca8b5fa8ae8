#include <keel/net/json.hpp>
#include <keel/ratelimit_http/middleware.hpp>

#include <boost/system/system_error.hpp>

#include <algorithm>
#include <charconv>
#include <string>

#include <arpa/inet.h>

namespace keel::ratelimit {
namespace {

std::int64_t ceil_seconds(std::chrono::nanoseconds d) noexcept {
  const std::int64_t s = d.count() / 1'000'000'000;
  return d.count() % 1'000'000'000 > 0 ? s + 1 : s;
}

void append_name(std::string& out, const limit_report& r) {
  out += '"';
  out += r.policy;  // validated: letters, digits, '-', '_', '.' need no escaping
  if (r.index > 0) {
    out += '/';
    out += std::to_string(r.index);
  }
  out += '"';
}

std::string_view trim(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) noexcept {
  const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; };
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [&](char x, char y) { return lower(x) == lower(y); });
}

bool all_digits(std::string_view text) noexcept {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// An address as proxies write it: bare, "a.b.c.d:port", "[v6]" or "[v6]:port".
std::optional<ip_address> parse_node(std::string_view node) noexcept {
  if (node.starts_with('[')) {
    const auto close = node.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const auto rest = node.substr(close + 1);
    if (!rest.empty() && !(rest.front() == ':' && all_digits(rest.substr(1)))) return std::nullopt;
    return ip_address::parse(node.substr(1, close - 1));
  }
  if (const auto colon = node.find(':');
      colon != std::string_view::npos && node.find(':', colon + 1) == std::string_view::npos) {
    if (!all_digits(node.substr(colon + 1))) return std::nullopt;
    node = node.substr(0, colon);  // IPv4 with a port; IPv6 has more than one colon
  }
  return ip_address::parse(node);
}

// The `for=` value of one Forwarded element, unquoted; "unknown" when the element has none.
std::string_view forwarded_for(std::string_view element, std::string& unquoted) {
  while (!element.empty()) {
    const auto semicolon = element.find(';');
    const auto pair = trim(element.substr(0, semicolon));
    element = semicolon == std::string_view::npos ? std::string_view() : element.substr(semicolon + 1);
    const auto equals = pair.find('=');
    if (equals == std::string_view::npos || !equals_ignoring_case(trim(pair.substr(0, equals)), "for"))
      continue;
    const auto value = trim(pair.substr(equals + 1));
    if (value.size() < 2 || value.front() != '"' || value.back() != '"') return value;
    unquoted.clear();
    for (std::size_t i = 1; i + 1 < value.size(); ++i) {
      if (value[i] == '\\' && i + 2 < value.size()) ++i;  // quoted-pair
      unquoted += value[i];
    }
    return unquoted;
  }
  return "unknown";
}

}  // namespace

std::optional<ip_address> ip_address::parse(std::string_view text) noexcept {
  char buffer[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof buffer) return std::nullopt;
  std::copy(text.begin(), text.end(), buffer);
  buffer[text.size()] = '\0';
  ip_address out;
  if (text.find(':') == std::string_view::npos) {
    out.bytes[10] = out.bytes[11] = 0xff;
    if (::inet_pton(AF_INET, buffer, out.bytes.data() + 12) != 1) return std::nullopt;
    return out;
  }
  if (::inet_pton(AF_INET6, buffer, out.bytes.data()) != 1) return std::nullopt;
  return out;
}

bool ip_address::is_v4() const noexcept {
  return std::all_of(bytes.begin(), bytes.begin() + 10, [](std::uint8_t b) { return b == 0; }) &&
         bytes[10] == 0xff && bytes[11] == 0xff;
}

std::string ip_address::to_string() const {
  char buffer[INET6_ADDRSTRLEN];
  const bool v4 = is_v4();
  if (::inet_ntop(v4 ? AF_INET : AF_INET6, bytes.data() + (v4 ? 12 : 0), buffer, sizeof buffer) == nullptr)
    return {};
  return buffer;
}

result<address_range> address_range::parse(std::string_view text) noexcept {
  text = trim(text);
  const auto slash = text.find('/');
  const auto address = ip_address::parse(text.substr(0, slash));
  if (!address) return errc::invalid_policy;
  const bool v4 = text.substr(0, slash).find(':') == std::string_view::npos;
  unsigned bits = v4 ? 32 : 128;
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    if (!all_digits(digits) || digits.size() > 3) return errc::invalid_policy;
    std::from_chars(digits.data(), digits.data() + digits.size(), bits);
    if (bits > (v4 ? 32U : 128U)) return errc::invalid_policy;
  }
  address_range range;
  range.prefix_bits_ = v4 ? bits + 96 : bits;
  range.base_ = *address;
  for (unsigned i = range.prefix_bits_; i < 128; ++i) {
    range.base_.bytes[i / 8] &= static_cast<std::uint8_t>(~(0x80U >> (i % 8)));
  }
  return range;
}

bool address_range::contains(const ip_address& address) const noexcept {
  const unsigned whole = prefix_bits_ / 8;
  if (!std::equal(base_.bytes.begin(), base_.bytes.begin() + whole, address.bytes.begin())) return false;
  if (const unsigned rest = prefix_bits_ % 8; rest != 0) {
    const auto mask = static_cast<std::uint8_t>(0xff00U >> rest);
    return (base_.bytes[whole] & mask) == (address.bytes[whole] & mask);
  }
  return true;
}

std::string client_address(const proxy_trust& trust, std::string_view peer, std::string_view forwarded) {
  const auto trusted = [&](const ip_address& address, std::size_t distance) {
    return distance < trust.hops || std::any_of(trust.proxies.begin(), trust.proxies.end(),
                                                [&](const address_range& r) { return r.contains(address); });
  };
  const auto peer_address = ip_address::parse(peer);
  if (!peer_address) return std::string(peer);
  if (!trusted(*peer_address, 0)) return peer_address->to_string();
  // Entries from the right: the nearest hop first. Commas never occur inside a node (RFC 7239
  // gives them no place in one), so splitting on every comma is exact for what proxies write,
  // and whatever a client put further left cannot shift the entries to its right.
  std::string unquoted;
  std::optional<ip_address> leftmost;
  std::size_t distance = 1;
  for (std::size_t end = forwarded.size();; ++distance) {
    const auto comma = end == 0 ? std::string_view::npos : forwarded.rfind(',', end - 1);
    const std::size_t start = comma == std::string_view::npos ? 0 : comma + 1;
    const auto element = trim(forwarded.substr(start, end - start));
    if (element.empty()) {
      --distance;  // "a,,b" or nothing at all: no hop
    } else {
      const auto node =
          trust.header == forwarding_header::forwarded ? forwarded_for(element, unquoted) : element;
      const auto address = parse_node(node);
      if (!address) return std::string(node);  // unknown, obfuscated or garbage: a stop point
      if (!trusted(*address, distance)) return address->to_string();
      leftmost = address;
    }
    if (comma == std::string_view::npos) break;
    end = comma;
  }
  return leftmost ? leftmost->to_string() : peer_address->to_string();
}

std::string ratelimit_policy_header(const verdict& v) {
  std::string out;
  for (std::size_t i = 0; i < v.report_count; ++i) {
    const auto& r = v.reports[i];
    if (r.shadow || r.rule == nullptr) continue;
    if (!out.empty()) out += ", ";
    append_name(out, r);
    // The window is the time a whole quota takes to come back: period for the window
    // algorithms, capacity × period / count for gcra and the token bucket.
    const auto window =
        std::chrono::nanoseconds(r.rule->period.count() / static_cast<std::int64_t>(r.rule->count) *
                                 static_cast<std::int64_t>(r.rule->capacity()));
    out += ";q=" + std::to_string(r.rule->capacity()) +
           ";w=" + std::to_string(std::max<std::int64_t>(ceil_seconds(window), 1));
  }
  return out;
}

std::string ratelimit_header(const verdict& v) {
  std::string out;
  for (std::size_t i = 0; i < v.report_count; ++i) {
    const auto& r = v.reports[i];
    if (r.shadow || r.rule == nullptr) continue;
    if (!out.empty()) out += ", ";
    append_name(out, r);
    out +=
        ";r=" + std::to_string(r.decision.remaining) + ";t=" + std::to_string(ceil_seconds(r.decision.reset));
  }
  return out;
}

net::middleware middleware(limiter& l, middleware_options options) {
  proxy_trust trust{.hops = options.trusted_hops, .header = options.forwarded_header};
  for (const auto& text : options.trusted_proxies) {
    auto range = address_range::parse(text);
    if (!range) {
      throw boost::system::system_error(
          range.error(), "middleware_options::trusted_proxies: \"" + text +
                             "\" is neither an address nor a CIDR such as 10.0.0.0/8 or 2001:db8::/32");
    }
    trust.proxies.push_back(*range);
  }
  const bool any_trusted = !trust.proxies.empty() || trust.hops > 0;
  const std::string_view header_name =
      trust.header == forwarding_header::forwarded ? "Forwarded" : "X-Forwarded-For";
  return [&l, options = std::move(options), trust = std::move(trust), any_trusted, header_name](
             net::request& req, const net::next_handler& next) -> net::response {
    std::string client;  // attrs.ip views it
    request_attributes attrs;
    if (options.attributes) {
      attrs = options.attributes(req);
    } else {
      attrs.ip = req.remote_address;
      if (any_trusted) {
        // Every field of the name, in order: a proxy may add its own line after the client's.
        std::string forwarded;
        for (const auto& [name, value] : req.headers) {
          if (!equals_ignoring_case(name, header_name)) continue;
          if (!forwarded.empty()) forwarded += ',';
          forwarded += value;
        }
        client = client_address(trust, req.remote_address, forwarded);
        attrs.ip = client;
      }
      attrs.user = req.attribute("user").value_or("");
      attrs.tenant = req.attribute("tenant").value_or("");
      attrs.api_key = req.headers.get("X-API-Key").value_or("");
      attrs.route = req.route;
    }
    if (attrs.path.empty()) attrs.path = req.path;
    const std::uint64_t cost = options.cost ? options.cost(req) : 1;
    const verdict v = l.check(attrs, cost);

    if (v.outcome == outcome::refused) {
      return net::error_response(net::status::forbidden, "forbidden", "this client is on the deny list");
    }
    const bool show =
        v.report_count > 0 && (options.headers == header_mode::always ||
                               (options.headers == header_mode::when_limited &&
                                (v.outcome == outcome::denied || v.outcome == outcome::warned)));
    auto decorate = [&](net::response& res) {
      if (!show) return;
      if (auto policy = ratelimit_policy_header(v); !policy.empty()) {
        res.headers.set("RateLimit-Policy", policy);
        res.headers.set("RateLimit", ratelimit_header(v));
      }
    };
    if (v.outcome == outcome::denied) {
      const std::int64_t retry = std::max<std::int64_t>(ceil_seconds(v.retry_after()), 1);
      const auto* binding = v.binding();
      const std::string policy =
          binding != nullptr ? std::string(binding->policy) : std::string("rate limit");
      net::response res = net::error_response(
          net::status::too_many_requests, "too many requests",
          "rate limit \"" + policy + "\" exceeded; retry after " + std::to_string(retry) + " s");
      res.headers.set("Retry-After", std::to_string(retry));
      decorate(res);
      return res;
    }
    if (v.outcome == outcome::warned) {
      if (const auto* binding = v.binding())
        req.attributes["ratelimit.warning"] = std::string(binding->policy);
    }
    net::response res = next(req);
    decorate(res);
    return res;
  };
}

}  // namespace keel::ratelimit
