// A worker process for the reliability tests (jobs_test.cpp starts it, kills it, restarts
// Postgres under it). Usage: keel_jobs_test_worker work|periodic <conninfo>. SIGTERM stops it
// gracefully.
#include <keel/jobs.hpp>

#include <cstdio>
#include <optional>
#include <string>

#include <signal.h>
#include <unistd.h>

namespace {

using namespace std::chrono_literals;
namespace jobs = keel::jobs;

// Records one execution on this handler thread's own connection.
jobs::job_result record(const std::string& conninfo, std::string_view sql, const jobs::job_context& ctx) {
  thread_local std::optional<keel::pg::connection> c;
  if (!c || !c->is_open()) {
    auto opened = keel::pg::connection::connect(conninfo);
    if (!opened) return jobs::job_result::fail("cannot connect: " + opened.error().message());
    c.emplace(std::move(*opened));
  }
  auto done =
      c->query(sql, ctx.id, static_cast<std::int32_t>(ctx.attempt), static_cast<std::int32_t>(::getpid()));
  if (!done) return jobs::job_result::fail("recording the run failed: " + c->last_error().to_string());
  return jobs::job_result::done();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: keel_jobs_test_worker work|periodic <conninfo>\n");
    return 2;
  }
  const std::string mode = argv[1];
  const std::string conninfo = argv[2];
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // inherited by the worker's threads

  jobs::worker_options options{.conninfo = conninfo,
                               .concurrency = 8,
                               .poll_interval = 200ms,
                               .lease = 3000ms,
                               .shutdown_timeout = 5000ms,
                               .maintenance_interval = 200ms};
  if (mode == "work") {
    options.queues = {{.name = "reliability"}};
  } else if (mode == "periodic") {
    options.periodic = {{.name = "tick", .every = 500ms, .job = {.kind = "tick"}}};
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  jobs::worker w(options);
  w.handle("record", [&](const jobs::job_context& ctx) {
    return record(conninfo, "INSERT INTO test_runs (job_id, attempt, pid) VALUES ($1, $2, $3)", ctx);
  });
  w.handle("tick", [&](const jobs::job_context& ctx) {
    return record(conninfo, "INSERT INTO test_ticks (job_id, slot, pid) VALUES ($1, $2::text, $3)", ctx);
  });
  if (auto started = w.start(); !started) {
    std::fprintf(stderr, "worker could not start: %s\n", started.error().message().c_str());
    return 1;
  }
  int signal = 0;
  sigwait(&stop_signals, &signal);
  w.stop();
  return 0;
}
