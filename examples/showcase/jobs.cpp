// keel::jobs in the showcase: the job tables, a demo worker with kinds that fail now and then,
// a feeder that keeps it busy, job metrics on /metrics, and the dashboard at /jobs backed by a
// JSON API under /api/jobs.
#include <keel/jobs.hpp>
#include <keel/net.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

namespace {

using namespace std::chrono_literals;
namespace jobs = keel::jobs;
namespace net = keel::net;

// The demo worker and the feeder that keeps giving it work; stopped when the server's routes
// are destroyed (before main's Postgres cluster goes away).
struct demo {
  std::unique_ptr<jobs::worker> worker;
  std::thread feeder;
  std::mutex mutex;
  std::condition_variable cv;
  bool stopping = false;

  ~demo() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    cv.notify_all();
    if (feeder.joinable()) feeder.join();
    if (worker) worker->stop();
  }
};

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

}  // namespace

namespace showcase {

extern const char* const jobs_dashboard_html;  // jobs_dashboard.cpp

keel::result<void> mount_jobs(context& ctx) {
  {
    auto c = ctx.pool.acquire();
    if (!c) return c.error();
    if (auto migrated = jobs::migrate(**c); !migrated) return migrated.error();
  }
  auto& registry = ctx.server.metrics();
  auto observer = std::make_shared<jobs::metrics_observer>(registry);

  // The demo: a worker with kinds that behave like real ones, and a trickle of new jobs.
  auto d = std::make_shared<demo>();
  d->worker =
      std::make_unique<jobs::worker>(jobs::worker_options{.conninfo = ctx.conninfo,
                                                          .queues = {{.name = "default"}, {.name = "demo"}},
                                                          .concurrency = 4,
                                                          .keep_completed = std::chrono::hours(1),
                                                          .observer = observer});
  d->worker->handle(
      "thumbnail",
      [](const jobs::job_context& job) {
        thread_local std::mt19937 random{std::random_device{}()};
        std::this_thread::sleep_for(std::chrono::milliseconds(20 + random() % 200));
        if (random() % 5 == 0)
          return jobs::job_result::fail("image service answered 503 for job " + std::to_string(job.id));
        return jobs::job_result::done();
      },
      {.initial_backoff = 2s, .max_backoff = 30s});
  d->worker->handle("email", [](const jobs::job_context&) { return jobs::job_result::done(); });
  // Fails until its attempt reaches args.succeed_on_attempt: with max_attempts 1 it lands in
  // discarded, and a retry from the dashboard makes it complete.
  d->worker->handle(
      "charge",
      [](const jobs::job_context& job) {
        const auto succeed_on = boost::json::value_to<std::int64_t>(job.args->at("succeed_on_attempt"));
        if (job.attempt < succeed_on)
          return jobs::job_result::fail("card declined (attempt " + std::to_string(job.attempt) + ")");
        return jobs::job_result::done();
      },
      {.initial_backoff = 1s});
  if (auto started = d->worker->start(); !started) return started.error();
  d->feeder = std::thread([d_raw = d.get(), conninfo = ctx.conninfo, observer] {
    std::optional<keel::pg::connection> c;
    std::mt19937 random{std::random_device{}()};
    std::unique_lock lock(d_raw->mutex);
    while (!d_raw->cv.wait_for(lock, 2s, [&] { return d_raw->stopping; })) {
      if (!c || !c->is_open()) {
        auto opened = keel::pg::connection::connect(conninfo);
        if (!opened) continue;
        c.emplace(std::move(*opened));
      }
      std::vector<jobs::new_job> batch;
      for (unsigned i = 0; i < 1 + random() % 4; ++i) {
        batch.push_back({.kind = "thumbnail",
                         .args = R"({"image": )" + std::to_string(random() % 1000) + "}",
                         .queue = "demo",
                         .max_attempts = 3});
      }
      batch.push_back({.kind = "email", .queue = "demo"});
      (void)jobs::enqueue_many(*c, batch, {.observer = observer.get()});  // retried at the next round
    }
  });

  // Queue depth is read from the table when /metrics is scraped.
  ctx.server.use([&pool = ctx.pool, observer](net::request& req, const net::next_handler& next) {
    if (req.path == "/metrics") {
      if (auto c = pool.acquire(); c) (void)observer->refresh_depth(**c);  // else the last values stay
    }
    return next(req);
  });

  ctx.server.get("/jobs", [d](const net::request&) {  // the route holds the demo alive
    return net::text_response(jobs_dashboard_html, net::status::ok, "text/html; charset=utf-8");
  });

  ctx.server.get("/api/jobs/queues", [&pool = ctx.pool](const net::request&) {
    auto c = pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    auto summaries = jobs::queue_summaries(**c);
    if (!summaries) return job_error(summaries.error());
    boost::json::array out;
    for (const auto& s : *summaries) {
      boost::json::object counts;
      for (int i = 0; i < 8; ++i) counts[jobs::to_string(static_cast<jobs::job_state>(i))] = s.counts[i];
      out.push_back({{"queue", s.queue},
                     {"paused", s.paused},
                     {"counts", counts},
                     {"completed_last_minute", s.completed_last_minute},
                     {"failed_last_minute", s.failed_last_minute}});
    }
    return net::json_response(boost::json::object{{"queues", out}});
  });

  ctx.server.get("/api/jobs/failures", [&pool = ctx.pool](const net::request& req) {
    auto c = pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    boost::json::array out;
    for (const auto state : {jobs::job_state::discarded, jobs::job_state::retryable}) {
      auto found =
          jobs::list_jobs(**c, {.state = state, .queue = std::nullopt, .kind = std::nullopt, .limit = 25});
      if (!found) return job_error(found.error());
      for (const auto& j : *found) out.push_back(to_json(j));
    }
    (void)req;
    return net::json_response(boost::json::object{{"jobs", out}});
  });

  ctx.server.get("/api/jobs/list", [&pool = ctx.pool](const net::request& req) {
    auto c = pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    jobs::job_filter filter;
    if (auto s = req.query_param("state")) {
      filter.state = jobs::parse_job_state(*s);
      if (!filter.state)
        return net::error_response(net::status::bad_request, "unknown state", "use available, running, ...");
    }
    if (auto q = req.query_param("queue")) filter.queue = std::string(*q);
    if (auto k = req.query_param("kind")) filter.kind = std::string(*k);
    auto found = jobs::list_jobs(**c, filter);
    if (!found) return job_error(found.error());
    boost::json::array out;
    for (const auto& j : *found) out.push_back(to_json(j));
    return net::json_response(boost::json::object{{"jobs", out}});
  });

  ctx.server.get("/api/jobs/job/{id}", [&pool = ctx.pool](const net::request& req) {
    const auto id = id_of(req);
    if (!id) return net::error_response(net::status::bad_request, "invalid job id", "use a number");
    auto c = pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    auto job = jobs::get_job(**c, *id);
    if (!job) return job_error(job.error());
    return net::json_response(to_json(*job));
  });

  using action = keel::result<void> (*)(keel::pg::connection&, std::int64_t);
  const std::pair<const char*, action> actions[] = {
      {"retry", &jobs::retry_job},
      {"cancel", &jobs::cancel_job},
      {"discard", [](keel::pg::connection& c,
                     std::int64_t id) { return jobs::discard_job(c, id, "discarded from the dashboard"); }},
  };
  for (const auto& [name, run] : actions) {
    ctx.server.post(
        std::string("/api/jobs/job/{id}/") + name, [&pool = ctx.pool, run = run](const net::request& req) {
          const auto id = id_of(req);
          if (!id) return net::error_response(net::status::bad_request, "invalid job id", "use a number");
          auto c = pool.acquire();
          if (!c) return net::error_response(net::status::service_unavailable, c.error());
          if (auto done = run(**c, *id); !done) return job_error(done.error());
          auto job = jobs::get_job(**c, *id);
          if (!job) return job_error(job.error());
          return net::json_response(to_json(*job));
        });
  }

  for (const bool pause : {true, false}) {
    ctx.server.post(std::string("/api/jobs/queues/{queue}/") + (pause ? "pause" : "resume"),
                    [&pool = ctx.pool, pause](const net::request& req) {
                      const auto queue = req.path_param("queue").value_or("");
                      auto c = pool.acquire();
                      if (!c) return net::error_response(net::status::service_unavailable, c.error());
                      auto done = pause ? jobs::pause_queue(**c, queue) : jobs::resume_queue(**c, queue);
                      if (!done) return job_error(done.error());
                      return net::json_response(boost::json::object{{"queue", queue}, {"paused", pause}});
                    });
  }

  ctx.server.post(
      "/api/jobs",
      net::json_handler([&pool = ctx.pool, observer](const net::request&, const boost::json::value& body) {
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
      }));

  ctx.endpoints.push_back({"GET", "/jobs", "job queue dashboard (keel::jobs)"});
  ctx.endpoints.push_back({"GET", "/api/jobs/queues", "job queues with counts by state and throughput"});
  ctx.endpoints.push_back({"GET", "/api/jobs/failures", "recently failed jobs with their errors"});
  ctx.endpoints.push_back({"GET", "/api/jobs/list", "jobs, filtered by ?state=&queue=&kind="});
  ctx.endpoints.push_back({"GET", "/api/jobs/job/{id}", "one job with its attempts"});
  ctx.endpoints.push_back({"POST", "/api/jobs/job/{id}/retry", "retry (also cancel, discard)"});
  ctx.endpoints.push_back({"POST", "/api/jobs/queues/{queue}/pause", "pause a queue (also resume)"});
  ctx.endpoints.push_back({"POST", "/api/jobs", "enqueue {\"kind\", \"args\", \"queue\", \"max_attempts\"}"});
  return {};
}

}  // namespace showcase
