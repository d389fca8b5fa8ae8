// keel::ratelimit in the showcase: every /api route is limited per client address (generous,
// so normal use never meets it), and /api/ratelimit/demo has a tight limit to watch 429s,
// soft-limit warnings and the RateLimit headers. Metrics appear on the server's /metrics.
// With KEEL_RATELIMIT_POLICIES=<file.json> the policies come from that file instead, and
// POST /api/ratelimit/reload reads it again (a bad file is answered 400 naming the field; the
// policies in force stay).
#include <keel/ratelimit_http.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

namespace showcase {
namespace {

struct ratelimit_part {
  keel::ratelimit::memory_backend store;
  keel::ratelimit::limiter limiter;

  explicit ratelimit_part(keel::metrics::registry& metrics)
      : store(), limiter(store, {.metrics = &metrics, .cache_blocked_keys = false}) {}
};

keel::ratelimit::policy_set showcase_policies() {
  using keel::ratelimit::algorithm;
  using namespace std::chrono_literals;
  keel::ratelimit::policy_set set;
  set.policies.push_back({.name = "api",
                          .key_by = {keel::ratelimit::attribute::ip},
                          .routes = {"/api/*"},
                          .limits = {{.algorithm = algorithm::gcra, .count = 50, .period = 1s, .burst = 200},
                                     {.algorithm = algorithm::sliding_window, .count = 20'000, .period = 1h}},
                          .warn_at = 0.9});
  set.policies.push_back({.name = "demo",
                          .key_by = {keel::ratelimit::attribute::ip},
                          .routes = {"/api/ratelimit/demo"},
                          .limits = {{.algorithm = algorithm::sliding_log, .count = 5, .period = 10s}},
                          .warn_at = 0.6});
  return set;
}

constexpr std::string_view ratelimit_body = R"html(
<h1>Rate limits</h1>
<p class="note">keel::ratelimit decides every <code>/api</code> request of this server, per client address, in
process (memory backend; the same policies run on Redis or Postgres). Denied requests get 429 with the IETF
RateLimit headers and Retry-After.</p>
<h2>Policies in force</h2>
<table id="policies"><thead><tr><th>policy</th><th>routes</th><th>limits</th><th>warns at</th></tr></thead><tbody></tbody></table>
<h2>Meet a limit</h2>
<p><button id="burst">send 8 requests to /api/ratelimit/demo</button> <span id="summary"></span></p>
<table id="requests"><thead><tr><th>#</th><th>status</th><th>RateLimit</th><th>Retry-After</th></tr></thead><tbody></tbody></table>
)html";

constexpr std::string_view ratelimit_script = R"js(
function cell(tr, text, cls) { const td = tr.appendChild(document.createElement("td")); td.textContent = text; if (cls) td.className = cls; return td; }
function period(ms) {
  if (ms % 3600000 === 0) return ms / 3600000 === 1 ? "hour" : (ms / 3600000) + " h";
  if (ms % 60000 === 0) return ms / 60000 === 1 ? "minute" : (ms / 60000) + " min";
  return ms % 1000 === 0 ? (ms === 1000 ? "second" : (ms / 1000) + " s") : ms + " ms";
}
async function loadPolicies() {
  const d = await (await fetch("/api/ratelimit/policies")).json();
  const body = document.querySelector("#policies tbody");
  body.replaceChildren();
  for (const p of d.policies) {
    const tr = body.appendChild(document.createElement("tr"));
    tr.dataset.policy = p.name;
    cell(tr, p.name);
    cell(tr, p.routes.join(", ") || "every route");
    cell(tr, p.limits.map(l => l.limit.toLocaleString("en-US") + " per " + period(l.period_ms) +
                          (l.burst > l.limit ? " (bursts of " + l.burst.toLocaleString("en-US") + ")" : "") +
                          ", " + l.algorithm.replace("_", " ")).join("; "));
    cell(tr, p.warn_at > 0 ? Math.round(p.warn_at * 100) + " % used" : "—");
  }
}
document.getElementById("burst").addEventListener("click", async () => {
  const body = document.querySelector("#requests tbody");
  body.replaceChildren();
  let allowed = 0, limited = 0;
  for (let k = 1; k <= 8; ++k) {
    const r = await fetch("/api/ratelimit/demo");
    const tr = body.appendChild(document.createElement("tr"));
    tr.dataset.status = r.status;
    cell(tr, k, "num");
    cell(tr, r.status === 200 ? "200 allowed" : r.status + " limited", r.status === 200 ? "ok" : "bad");
    cell(tr, r.headers.get("RateLimit") || "");
    cell(tr, r.headers.get("Retry-After") ? r.headers.get("Retry-After") + " s" : "");
    if (r.status === 200) ++allowed; else ++limited;
  }
  const summary = document.getElementById("summary");
  summary.textContent = allowed + " allowed, " + limited + " limited";
  summary.dataset.allowed = allowed;
  summary.dataset.limited = limited;
});
loadPolicies();
)js";

}  // namespace

keel::result<void> mount_ratelimit(context& ctx) {
  // The part lives as long as the server's middleware and handlers that share it.
  auto part = std::make_shared<ratelimit_part>(ctx.server.metrics());
  const char* file = std::getenv("KEEL_RATELIMIT_POLICIES");
  const std::string policy_file = file != nullptr ? file : "";
  if (policy_file.empty()) {
    if (auto installed = part->limiter.set_policies(showcase_policies()); !installed) return installed;
  } else if (std::string problem; !part->limiter.load_file(policy_file, &problem)) {
    std::fprintf(stderr, "KEEL_RATELIMIT_POLICIES: %s\n", problem.c_str());
    return keel::ratelimit::errc::invalid_policy;
  }
  ctx.server.post("/api/ratelimit/reload", [part, policy_file](const keel::net::request&) {
    if (policy_file.empty()) {
      return keel::net::error_response(
          keel::net::status::conflict, "no policy file",
          "start the showcase with KEEL_RATELIMIT_POLICIES=<file.json> to reload");
    }
    std::string problem;
    if (!part->limiter.load_file(policy_file, &problem)) {
      return keel::net::error_response(keel::net::status::bad_request,
                                       "policy file rejected; previous policies stay", problem);
    }
    return keel::net::json_response(boost::json::object{{"reloaded", true}});
  });
  ctx.server.use([part, mw = keel::ratelimit::middleware(part->limiter)](
                     keel::net::request& req, const keel::net::next_handler& next) { return mw(req, next); });

  ctx.server.get("/api/ratelimit/demo", [](const keel::net::request& req) {
    const auto warning = req.attribute("ratelimit.warning");
    return keel::net::json_response(boost::json::object{
        {"ok", true},
        {"warning", warning ? boost::json::value(std::string(*warning)) : boost::json::value(nullptr)},
        {"hint", "5 requests per 10 s per client; the 6th is answered 429 with Retry-After"}});
  });
  ctx.server.get("/api/ratelimit/policies", [part](const keel::net::request&) {
    boost::json::array list;
    for (const auto& p : part->limiter.policies()->policies) {
      boost::json::array limits;
      for (const auto& l : p.limits) {
        limits.push_back(
            {{"algorithm", keel::ratelimit::to_string(l.algorithm)},
             {"limit", l.count},
             {"period_ms", std::chrono::duration_cast<std::chrono::milliseconds>(l.period).count()},
             {"burst", l.capacity()}});
      }
      boost::json::array routes;
      for (const auto& r : p.routes) routes.push_back(boost::json::value(r));
      list.push_back({{"name", p.name}, {"routes", routes}, {"limits", limits}, {"warn_at", p.warn_at}});
    }
    return keel::net::json_response(boost::json::object{{"backend", "memory"}, {"policies", list}});
  });
  ctx.server.get("/ratelimit",
                 [html = page("rate limits", ratelimit_body, ratelimit_script)](const keel::net::request&) {
                   return keel::net::text_response(html, keel::net::status::ok, "text/html; charset=utf-8");
                 });
  ctx.endpoints.push_back(
      {"GET", "/ratelimit", "the rate-limit page: policies, and a burst meeting a limit"});
  ctx.endpoints.push_back({"GET", "/api/ratelimit/demo", "rate limited: 5 per 10 s per client (then 429)"});
  ctx.endpoints.push_back({"GET", "/api/ratelimit/policies", "the rate-limit policies in force"});
  ctx.endpoints.push_back({"POST", "/api/ratelimit/reload", "re-reads KEEL_RATELIMIT_POLICIES (when set)"});
  return {};
}

}  // namespace showcase
