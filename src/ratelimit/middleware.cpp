#include <keel/net/json.hpp>
#include <keel/ratelimit/middleware.hpp>

#include <string>

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

std::string_view first_forwarded(std::string_view header) noexcept {
  const auto comma = header.find(',');
  std::string_view first = header.substr(0, comma);
  while (!first.empty() && first.front() == ' ') first.remove_prefix(1);
  while (!first.empty() && first.back() == ' ') first.remove_suffix(1);
  return first;
}

}  // namespace

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
  return
      [&l, options = std::move(options)](net::request& req, const net::next_handler& next) -> net::response {
        std::string forwarded;
        request_attributes attrs;
        if (options.attributes) {
          attrs = options.attributes(req);
        } else {
          attrs.ip = req.remote_address;
          if (options.trust_forwarded_for) {
            if (const auto xff = req.headers.get("X-Forwarded-For")) {
              forwarded = first_forwarded(*xff);
              if (!forwarded.empty()) attrs.ip = forwarded;
            }
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
