// The /jobs page and the /api/jobs routes: thin handlers over keel::jobs's administrative
// calls, each checking the authorization hook first.
#include <keel/jobs_http/dashboard.hpp>
#include <keel/net/json.hpp>

#include "page.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <cstdint>
#include <optional>
#include <utility>

namespace keel::jobs_http {

namespace {

boost::json::value to_json(const jobs::job_info& j) {
  auto time = [](const std::optional<keel::timestamp>& t) -> boost::json::value {
    if (!t) return nullptr;
    return std::chrono::duration_cast<std::chrono::milliseconds>(t->time_since_epoch()).count();
  };
  boost::json::array errors;
  for (const auto& e : j.errors) errors.push_back({{"attempt", e.attempt}, {"at", e.at}, {"error", e.error}});
  boost::json::array tags(j.tags.begin(), j.tags.end());
  boost::json::array deps(j.depends_on.begin(), j.depends_on.end());
  boost::system::error_code ec;
  auto args = boost::json::parse(j.args, ec);
  return {{"id", j.id},
          {"state", jobs::to_string(j.state)},
          {"queue", j.queue},
          {"kind", j.kind},
          {"args", ec ? boost::json::value(j.args) : args},
          {"priority", j.priority},
          {"attempt", j.attempt},
          {"max_attempts", j.max_attempts},
          {"run_at", time(j.run_at)},
          {"created_at", time(j.created_at)},
          {"attempted_at", time(j.attempted_at)},
          {"finished_at", time(j.finished_at)},
          {"worker_id", j.worker_id ? boost::json::value(*j.worker_id) : nullptr},
          {"unique_key", j.unique_key ? boost::json::value(*j.unique_key) : nullptr},
          {"tags", tags},
          {"depends_on", deps},
          {"cancel_requested", j.cancel_requested},
          {"errors", errors}};
}

std::optional<std::int64_t> id_of(const net::request& req) {
  const auto text = req.path_param("id").value_or("");
  std::int64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return id;
}

net::response job_error(const keel::error_code& ec) {
  if (ec == jobs::errc::job_not_found) return net::error_response(net::status::not_found, ec);
  if (ec == jobs::errc::invalid_state) return net::error_response(net::status::conflict, ec);
  if (ec.category() == jobs::jobs_category()) return net::error_response(net::status::bad_request, ec);
  return net::error_response(net::status::service_unavailable, ec);
}

bool is_loopback(std::string_view address) {
  if (address.starts_with("::ffff:")) address.remove_prefix(7);  // an IPv4 peer on a v6 socket
  return address.starts_with("127.") || address == "::1";
}

// Constant time in the token's length, so timing does not reveal how much of a guess matched.
bool same_secret(std::string_view given, std::string_view secret) {
  if (given.size() != secret.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < secret.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ secret[i]);
  return diff == 0;
}

// A browser names the page that made a request in Origin; one from another site must not act
// with the rights of the browser's loopback address.
bool same_origin_or_none(const net::request& req) {
  const auto origin = req.headers.get("Origin");
  if (!origin) return true;
  const auto host = req.headers.get("Host").value_or("");
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (origin->starts_with(scheme) && origin->substr(scheme.size()) == host) return true;
  }
  return false;
}

// Wraps a handler with the authorization check.
net::handler guarded(const std::shared_ptr<const authorize_fn>& authorize, access wanted, net::handler h) {
  return [authorize, wanted, h = std::move(h)](const net::request& req) {
    if (!(*authorize)(req, wanted)) {
      return net::error_response(
          net::status::forbidden, "forbidden",
          wanted == access::act
              ? "this dashboard action is not allowed for this request: act from loopback, send the "
                "configured bearer token, or widen the authorize hook"
              : "this dashboard is not readable for this request: see the authorize hook");
    }
    return h(req);
  };
}

}  // namespace

authorize_fn default_authorization(std::string action_token) {
  return [token = std::move(action_token)](const net::request& req, access wanted) {
    if (wanted == access::read) return true;
    if (!same_origin_or_none(req)) return false;
    if (!token.empty()) {
      const auto header = req.headers.get("Authorization").value_or("");
      constexpr std::string_view bearer = "Bearer ";
      if (header.starts_with(bearer) && same_secret(header.substr(bearer.size()), token)) return true;
    }
    return is_loopback(req.remote_address);
  };
}

void mount(net::server& server, pg::pool& pool, options opts) {
  auto authorize = std::make_shared<const authorize_fn>(
      opts.authorize ? std::move(opts.authorize) : default_authorization(std::move(opts.action_token)));
  auto observer = std::move(opts.observer);
  const auto readable = [&](net::handler h) { return guarded(authorize, access::read, std::move(h)); };
  const auto acting = [&](net::handler h) { return guarded(authorize, access::act, std::move(h)); };

  server.get("/jobs", readable([](const net::request&) {
               return net::text_response(detail::dashboard_html, net::status::ok, "text/html; charset=utf-8");
             }));

  server.get("/api/jobs/queues", readable([&pool](const net::request&) {
               auto c = pool.acquire();
               if (!c) return net::error_response(net::status::service_unavailable, c.error());
               auto summaries = jobs::queue_summaries(**c);
               if (!summaries) return job_error(summaries.error());
               boost::json::array out;
               for (const auto& s : *summaries) {
                 boost::json::object counts;
                 for (int i = 0; i < 8; ++i)
                   counts[jobs::to_string(static_cast<jobs::job_state>(i))] = s.counts[i];
                 out.push_back({{"queue", s.queue},
                                {"paused", s.paused},
                                {"counts", counts},
                                {"completed_last_minute", s.completed_last_minute},
                                {"failed_last_minute", s.failed_last_minute}});
               }
               return net::json_response(boost::json::object{{"queues", out}});
             }));

  server.get("/api/jobs/failures", readable([&pool](const net::request&) {
               auto c = pool.acquire();
               if (!c) return net::error_response(net::status::service_unavailable, c.error());
               boost::json::array out;
               for (const auto state : {jobs::job_state::discarded, jobs::job_state::retryable}) {
                 auto found = jobs::list_jobs(
                     **c, {.state = state, .queue = std::nullopt, .kind = std::nullopt, .limit = 25});
                 if (!found) return job_error(found.error());
                 for (const auto& j : *found) out.push_back(to_json(j));
               }
               return net::json_response(boost::json::object{{"jobs", out}});
             }));

  server.get("/api/jobs/list", readable([&pool](const net::request& req) {
               auto c = pool.acquire();
               if (!c) return net::error_response(net::status::service_unavailable, c.error());
               jobs::job_filter filter;
               if (auto s = req.query_param("state")) {
                 filter.state = jobs::parse_job_state(*s);
                 if (!filter.state)
                   return net::error_response(net::status::bad_request, "unknown state",
                                              "use available, running, ...");
               }
               if (auto q = req.query_param("queue")) filter.queue = std::string(*q);
               if (auto k = req.query_param("kind")) filter.kind = std::string(*k);
               auto found = jobs::list_jobs(**c, filter);
               if (!found) return job_error(found.error());
               boost::json::array out;
               for (const auto& j : *found) out.push_back(to_json(j));
               return net::json_response(boost::json::object{{"jobs", out}});
             }));

  server.get("/api/jobs/job/{id}", readable([&pool](const net::request& req) {
               const auto id = id_of(req);
               if (!id)
                 return net::error_response(net::status::bad_request, "invalid job id", "use a number");
               auto c = pool.acquire();
               if (!c) return net::error_response(net::status::service_unavailable, c.error());
               auto job = jobs::get_job(**c, *id);
               if (!job) return job_error(job.error());
               return net::json_response(to_json(*job));
             }));

  using action = keel::result<void> (*)(keel::pg::connection&, std::int64_t);
  const std::pair<const char*, action> actions[] = {
      {"retry", &jobs::retry_job},
      {"cancel", &jobs::cancel_job},
      {"discard", [](keel::pg::connection& c,
                     std::int64_t id) { return jobs::discard_job(c, id, "discarded from the dashboard"); }},
  };
  for (const auto& [name, run] : actions) {
    server.post(std::string("/api/jobs/job/{id}/") + name,
                acting([&pool, run = run](const net::request& req) {
                  const auto id = id_of(req);
                  if (!id)
                    return net::error_response(net::status::bad_request, "invalid job id", "use a number");
                  auto c = pool.acquire();
                  if (!c) return net::error_response(net::status::service_unavailable, c.error());
                  if (auto done = run(**c, *id); !done) return job_error(done.error());
                  auto job = jobs::get_job(**c, *id);
                  if (!job) return job_error(job.error());
                  return net::json_response(to_json(*job));
                }));
  }

  for (const bool pause : {true, false}) {
    server.post(std::string("/api/jobs/queues/{queue}/") + (pause ? "pause" : "resume"),
                acting([&pool, pause](const net::request& req) {
                  const auto queue = req.path_param("queue").value_or("");
                  auto c = pool.acquire();
                  if (!c) return net::error_response(net::status::service_unavailable, c.error());
                  auto done = pause ? jobs::pause_queue(**c, queue) : jobs::resume_queue(**c, queue);
                  if (!done) return job_error(done.error());
                  return net::json_response(boost::json::object{{"queue", queue}, {"paused", pause}});
                }));
  }

  server.post(
      "/api/jobs",
      acting(net::json_handler([&pool, observer](const net::request&, const boost::json::value& body) {
        const auto* o = body.if_object();
        const auto* kind = o != nullptr ? o->if_contains("kind") : nullptr;
        if (kind == nullptr || !kind->is_string()) {
          return net::error_response(net::status::bad_request, "invalid job",
                                     R"(send {"kind": "email", "args": {...}, "queue": "demo"})");
        }
        jobs::new_job job{.kind = std::string(kind->as_string())};
        if (const auto* args = o->if_contains("args")) job.args = boost::json::serialize(*args);
        if (const auto* q = o->if_contains("queue"); q != nullptr && q->is_string()) {
          job.queue = std::string(q->as_string());
        }
        if (const auto* m = o->if_contains("max_attempts"); m != nullptr && m->is_int64()) {
          job.max_attempts = static_cast<std::int32_t>(m->as_int64());
        }
        auto c = pool.acquire();
        if (!c) return net::error_response(net::status::service_unavailable, c.error());
        auto put = jobs::enqueue(**c, job, {.observer = observer.get()});
        if (!put) return job_error(put.error());
        return net::json_response(boost::json::object{{"id", put->id}, {"duplicate", put->duplicate}},
                                  net::status::created);
      })));
}

}  // namespace keel::jobs_http
