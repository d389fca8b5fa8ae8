// keel::jobs in the showcase: the job tables, a demo worker with kinds that fail now and then,
// a feeder that keeps it busy, job metrics on /metrics, and keel::jobs_http's dashboard at /jobs
// with its JSON API under /api/jobs.
#include <keel/jobs.hpp>
#include <keel/jobs_http.hpp>
#include <keel/net.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <atomic>
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

}  // namespace

namespace showcase {

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
  // The middleware holds the demo alive until the server's routes are destroyed.
  ctx.server.use([&pool = ctx.pool, observer, d](net::request& req, const net::next_handler& next) {
    if (req.path == "/metrics") {
      if (auto c = pool.acquire(); c) (void)observer->refresh_depth(**c);  // else the last values stay
    }
    return next(req);
  });

  // The page and the API; actions from loopback only, the library's default.
  keel::jobs_http::mount(ctx.server, ctx.pool, {.observer = observer});

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
