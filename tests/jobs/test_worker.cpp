// A worker process for the reliability tests (jobs_test.cpp starts it, kills it, restarts
// Postgres under it). Usage: keel_jobs_test_worker work|periodic|cancel <conninfo>. SIGTERM stops
// it gracefully. Its worker id is "test-worker-<pid>", so a test can tell which process holds what.
#include <keel/jobs.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include <signal.h>
#include <unistd.h>

namespace {

using namespace std::chrono_literals;
namespace jobs = keel::jobs;

// This handler thread's own connection, or nullopt when Postgres cannot be reached.
keel::pg::connection* thread_connection(const std::string& conninfo) {
  thread_local std::optional<keel::pg::connection> c;
  if (!c || !c->is_open()) {
    auto opened = keel::pg::connection::connect(conninfo);
    if (!opened) return nullptr;
    c.emplace(std::move(*opened));
  }
  return &*c;
}

// Records one execution on this handler thread's own connection.
jobs::job_result record(const std::string& conninfo, std::string_view sql, const jobs::job_context& ctx) {
  auto* c = thread_connection(conninfo);
  if (c == nullptr) return jobs::job_result::fail("cannot connect to record the run");
  auto done =
      c->query(sql, ctx.id, static_cast<std::int32_t>(ctx.attempt), static_cast<std::int32_t>(::getpid()));
  if (!done) return jobs::job_result::fail("recording the run failed: " + c->last_error().to_string());
  return jobs::job_result::done();
}

// Records its start, then waits until the test opens the job's gate (a row in test_gates),
// ignoring cancellation: it only notes in test_saw_cancel that cancelled() turned true.
jobs::job_result gated(const std::string& conninfo, const jobs::job_context& ctx) {
  if (auto started =
          record(conninfo, "INSERT INTO test_runs (job_id, attempt, pid) VALUES ($1, $2, $3)", ctx);
      started.outcome() != jobs::job_result::kind::completed) {
    return started;
  }
  auto* c = thread_connection(conninfo);
  bool noted = false;
  while (true) {
    if (c == nullptr || !c->is_open()) return jobs::job_result::fail("lost Postgres while gated");
    if (!noted && ctx.cancelled()) {
      noted = static_cast<bool>(c->query("INSERT INTO test_saw_cancel (job_id) VALUES ($1)", ctx.id));
    }
    auto open = c->query("SELECT count(*) > 0 FROM test_gates WHERE job_id = $1", ctx.id);
    if (open && open->value<bool>() && *open->value<bool>()) return jobs::job_result::done();
    std::this_thread::sleep_for(5ms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: keel_jobs_test_worker work|periodic|cancel <conninfo>\n");
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
                               .maintenance_interval = 200ms,
                               .worker_id = "test-worker-" + std::to_string(::getpid())};
  if (mode == "work") {
    options.queues = {{.name = "reliability"}};
  } else if (mode == "cancel") {
    // One handler and four prefetched jobs behind it.
    options.queues = {{.name = "cancel"}};
    options.concurrency = 1;
    options.prefetch = 4;
    options.shutdown_timeout = 500ms;
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
  w.handle("gated", [&](const jobs::job_context& ctx) { return gated(conninfo, ctx); });
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
