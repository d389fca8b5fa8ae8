// The /jobs page and the /api/jobs routes: thin handlers over keel::jobs's administrative
// calls, each checking the authorization hook first.
#include <keel/core/utf8.hpp>
#include <keel/jobs_http/dashboard.hpp>
#include <keel/net/json.hpp>
#include <keel/net/trust.hpp>
#include <keel/pg/error.hpp>

#include "page.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

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

// Only an unreachable or overloaded database is 503: a client retrying the same bad request
// later must not be told it might work then.
net::response job_error(const keel::error_code& ec, const pg::connection* c = nullptr) {
  if (ec == jobs::errc::job_not_found) return net::error_response(net::status::not_found, ec);
  if (ec == jobs::errc::invalid_state) return net::error_response(net::status::conflict, ec);
  if (ec.category() == jobs::jobs_category()) return net::error_response(net::status::bad_request, ec);
  if (ec == pg::errc::connection_failed || ec == pg::errc::connection_lost || ec == pg::errc::pool_timeout ||
      ec == pg::errc::pool_closed || ec == pg::errc::query_canceled) {
    return net::error_response(net::status::service_unavailable, ec);
  }
  // The connection's diagnostics describe this failure only when the server reported it.
  const bool from_server = c != nullptr && ec.category() == pg::pg_category() &&
                           static_cast<pg::errc>(ec.value()) <= pg::errc::server_error;
  const std::string sqlstate = from_server ? c->last_error().sqlstate : std::string();
  const std::string said = from_server ? c->last_error().message : ec.message();
  // Class 22 (data exception) and 54 (program limit exceeded): the value sent cannot be stored.
  if (sqlstate.starts_with("22") || sqlstate.starts_with("54")) {
    return net::error_response(net::status::bad_request, "invalid value",
                               "the database refused a value of this request (SQLSTATE " + sqlstate + ": " +
                                   said + "); change the value and send it again");
  }
  return net::error_response(net::status::internal_server_error, "database error",
                             (sqlstate.empty() ? std::string() : "SQLSTATE " + sqlstate + ": ") + said);
}

// Why `value` cannot be a queue or kind name, or nullopt when it can. Postgres text holds
// neither NUL nor invalid UTF-8; refusing them here answers 400 instead of a database error.
std::optional<std::string> name_problem(std::string_view field, std::string_view value) {
  const auto rule = std::string(field) + " must be 1 to " + std::to_string(max_queue_name_bytes) +
                    " bytes of UTF-8 without NUL";
  if (value.empty()) return rule + ", got an empty name";
  if (value.size() > max_queue_name_bytes) {
    return std::string(field) + " must be at most " + std::to_string(max_queue_name_bytes) + " bytes, got " +
           std::to_string(value.size());
  }
  if (value.find('\0') != std::string_view::npos) return rule + ", got a NUL character";
  if (!keel::valid_utf8(value)) return rule + ", got bytes that are not UTF-8";
  return std::nullopt;
}

net::response invalid_job(std::string_view detail) {
  return net::error_response(net::status::bad_request, "invalid job", detail);
}

std::string_view type_name(const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::null:
      return "null";
    case boost::json::kind::bool_:
      return "a boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
      return "an integer";
    case boost::json::kind::double_:
      return "a number with a fraction or exponent";
    case boost::json::kind::string:
      return "a string";
    case boost::json::kind::array:
      return "an array";
    case boost::json::kind::object:
      return "an object";
  }
  return "a value";
}

// The integer `field` within [low, high], or why not. JSON numbers are read exactly, so a value
// out of range is refused instead of being cut to fit.
std::optional<std::string> read_integer(const boost::json::value& v, std::string_view field, std::int64_t low,
                                        std::int64_t high, std::int64_t& out) {
  const auto rule = std::string(field) + " must be an integer from " + std::to_string(low) + " to " +
                    std::to_string(high) + ", got ";
  if (v.is_uint64()) return rule + std::to_string(v.as_uint64());
  if (!v.is_int64()) return rule + std::string(type_name(v));
  const auto n = v.as_int64();
  if (n < low || n > high) return rule + std::to_string(n);
  out = n;
  return std::nullopt;
}

// A new job from POST /api/jobs's body, or the 400 answer saying which field is wrong and why.
std::variant<jobs::new_job, net::response> read_new_job(const boost::json::value& body) {
  static constexpr std::string_view example = R"(send {"kind": "email", "args": {...}, "queue": "demo"})";
  const auto* o = body.if_object();
  if (o == nullptr) {
    return invalid_job("the body must be an object, got " + std::string(type_name(body)) + ": " +
                       std::string(example));
  }
  for (const auto& field : *o) {
    const auto key = field.key();
    if (key != "kind" && key != "args" && key != "queue" && key != "priority" && key != "max_attempts") {
      return invalid_job("unknown field \"" + std::string(key) +
                         "\": the fields are kind, args, queue, priority and max_attempts");
    }
  }
  jobs::new_job job;
  const auto* kind = o->if_contains("kind");
  if (kind == nullptr) return invalid_job("kind is missing: " + std::string(example));
  if (!kind->is_string()) return invalid_job("kind must be a string, got " + std::string(type_name(*kind)));
  job.kind = std::string(kind->as_string());
  if (auto problem = name_problem("kind", job.kind)) return invalid_job(*problem);
  if (const auto* args = o->if_contains("args")) job.args = boost::json::serialize(*args);
  if (const auto* q = o->if_contains("queue")) {
    if (!q->is_string()) return invalid_job("queue must be a string, got " + std::string(type_name(*q)));
    job.queue = std::string(q->as_string());
    if (auto problem = name_problem("queue", job.queue)) return invalid_job(*problem);
  }
  std::int64_t n = 0;
  if (const auto* p = o->if_contains("priority")) {
    if (auto problem = read_integer(*p, "priority", INT16_MIN, INT16_MAX, n)) return invalid_job(*problem);
    job.priority = static_cast<std::int16_t>(n);
  }
  if (const auto* m = o->if_contains("max_attempts")) {
    if (auto problem = read_integer(*m, "max_attempts", 1, INT32_MAX, n)) return invalid_job(*problem);
    job.max_attempts = static_cast<std::int32_t>(n);
  }
  return job;
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

// What the chart on /jobs draws: the queues' depth and throughput, sampled when the queues are
// read (the page reads them every second), at most one sample a second, the last ten minutes.
class queue_history {
 public:
  struct sample {
    std::int64_t at_ms;
    std::int64_t waiting;  // available + scheduled + retryable + pending
    std::int64_t running;
    std::int64_t completed_last_minute;
    std::int64_t failed_last_minute;
  };
  static constexpr std::size_t capacity = 600;

  void record(const std::vector<jobs::queue_summary>& queues) {
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    sample s{now_ms, 0, 0, 0, 0};
    for (const auto& q : queues) {
      s.waiting += q.count(jobs::job_state::available) + q.count(jobs::job_state::scheduled) +
                   q.count(jobs::job_state::retryable) + q.count(jobs::job_state::pending);
      s.running += q.count(jobs::job_state::running);
      s.completed_last_minute += q.completed_last_minute;
      s.failed_last_minute += q.failed_last_minute;
    }
    const std::lock_guard lock(mutex_);
    if (!samples_.empty() && now_ms - samples_.back().at_ms < 1000) return;
    if (samples_.size() == capacity) samples_.erase(samples_.begin());
    samples_.push_back(s);
  }
  [[nodiscard]] std::vector<sample> samples() const {
    const std::lock_guard lock(mutex_);
    return samples_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<sample> samples_;
};

}  // namespace

authorize_fn default_authorization(std::string action_token) {
  return [token = std::move(action_token)](const net::request& req, access wanted) {
    return wanted == access::read || net::local_or_token(req, token);
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

  auto history = std::make_shared<queue_history>();
  server.get("/api/jobs/queues", readable([&pool, history](const net::request&) {
               auto c = pool.acquire();
               if (!c) return net::error_response(net::status::service_unavailable, c.error());
               auto summaries = jobs::queue_summaries(**c);
               if (!summaries) return job_error(summaries.error(), &**c);
               history->record(*summaries);
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

  // The chart's data: samples of depth and throughput over all queues, oldest first.
  server.get("/api/jobs/history", readable([history](const net::request&) {
               boost::json::array out;
               for (const auto& s : history->samples()) {
                 out.push_back({{"at", s.at_ms},
                                {"waiting", s.waiting},
                                {"running", s.running},
                                {"completed_last_minute", s.completed_last_minute},
                                {"failed_last_minute", s.failed_last_minute}});
               }
               return net::json_response(boost::json::object{{"samples", out}});
             }));

  server.get("/api/jobs/failures", readable([&pool](const net::request&) {
               auto c = pool.acquire();
               if (!c) return net::error_response(net::status::service_unavailable, c.error());
               boost::json::array out;
               for (const auto state : {jobs::job_state::discarded, jobs::job_state::retryable}) {
                 auto found = jobs::list_jobs(
                     **c, {.state = state, .queue = std::nullopt, .kind = std::nullopt, .limit = 25});
                 if (!found) return job_error(found.error(), &**c);
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
                 if (!filter.state) {
                   return net::error_response(net::status::bad_request, "unknown state",
                                              "use available, running, ...");
                 }
               }
               if (auto q = req.query_param("queue")) {
                 if (auto problem = name_problem("queue", *q))
                   return net::error_response(net::status::bad_request, "invalid queue", *problem);
                 filter.queue = std::string(*q);
               }
               if (auto k = req.query_param("kind")) {
                 if (auto problem = name_problem("kind", *k))
                   return net::error_response(net::status::bad_request, "invalid kind", *problem);
                 filter.kind = std::string(*k);
               }
               auto found = jobs::list_jobs(**c, filter);
               if (!found) return job_error(found.error(), &**c);
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
               if (!job) return job_error(job.error(), &**c);
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
                  if (auto done = run(**c, *id); !done) return job_error(done.error(), &**c);
                  auto job = jobs::get_job(**c, *id);
                  if (!job) return job_error(job.error(), &**c);
                  return net::json_response(to_json(*job));
                }));
  }

  for (const bool pause : {true, false}) {
    server.post(std::string("/api/jobs/queues/{queue}/") + (pause ? "pause" : "resume"),
                acting([&pool, pause](const net::request& req) {
                  const auto queue = req.path_param("queue").value_or("");
                  // Resuming notifies workers with the name as payload, which Postgres caps near
                  // 8000 bytes: one limit for both keeps every paused queue resumable.
                  if (auto problem = name_problem("queue", queue))
                    return net::error_response(net::status::bad_request, "invalid queue", *problem);
                  auto c = pool.acquire();
                  if (!c) return net::error_response(net::status::service_unavailable, c.error());
                  auto done = pause ? jobs::pause_queue(**c, queue) : jobs::resume_queue(**c, queue);
                  if (!done) return job_error(done.error(), &**c);
                  return net::json_response(boost::json::object{{"queue", queue}, {"paused", pause}});
                }));
  }

  server.post(
      "/api/jobs",
      acting(net::json_handler([&pool, observer](const net::request&, const boost::json::value& body) {
        auto read = read_new_job(body);
        if (auto* refused = std::get_if<net::response>(&read)) return std::move(*refused);
        const auto& job = std::get<jobs::new_job>(read);
        auto c = pool.acquire();
        if (!c) return net::error_response(net::status::service_unavailable, c.error());
        auto put = jobs::enqueue(**c, job, {.observer = observer.get()});
        if (!put) return job_error(put.error(), &**c);
        return net::json_response(boost::json::object{{"id", put->id}, {"duplicate", put->duplicate}},
                                  net::status::created);
      })));
}

}  // namespace keel::jobs_http
