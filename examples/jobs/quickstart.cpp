// docs/jobs.md quotes this file; ctest runs it (examples.jobs_quickstart).
#include <keel/jobs.hpp>
#include <keel/pg/local_cluster.hpp>
#include <keel/pg/transaction.hpp>

#include <chrono>
#include <cstdio>

int main() {
  auto cluster = keel::pg::local_cluster::start().value();
  auto c = keel::pg::connection::connect(cluster.conninfo()).value();
  keel::jobs::migrate(c).value();

  // The job exists exactly when this transaction commits, like the rows written beside it.
  auto tx = keel::pg::transaction::begin(c).value();
  auto job = keel::jobs::enqueue(c, {.kind = "welcome_email", .args = R"({"user": 42})"}).value();
  tx.commit().value();

  keel::jobs::worker worker({.conninfo = cluster.conninfo(), .concurrency = 4});
  worker.handle("welcome_email",
                [](const keel::jobs::job_context& ctx) {
                  std::printf("welcome, user %lld\n",
                              static_cast<long long>(ctx.args->at("user").as_int64()));
                  return keel::jobs::job_result::done();  // or fail("why"): retried with backoff
                },
                {.initial_backoff = std::chrono::seconds(5), .timeout = std::chrono::minutes(1)});
  worker.start().value();

  // Woken by the worker when it records the job finished.
  const auto finished = keel::jobs::wait_for_job(c, job.id, std::chrono::seconds(30)).value();
  worker.stop();  // graceful: running jobs finish, the rest go back to the queue
  return finished.state == keel::jobs::job_state::completed ? 0 : 1;
}
