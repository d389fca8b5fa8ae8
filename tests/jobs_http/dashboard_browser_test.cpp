// The mounted /jobs dashboard in a real headless Chromium against a real Postgres: the Cancel
// and Discard buttons change a job's state, on the page and in the database.
#include <keel/jobs.hpp>
#include <keel/jobs_http.hpp>
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include <support/browser.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>

namespace {

using namespace std::chrono_literals;

// Polls the database until `id` is in `state`, or the deadline passes.
bool reaches(keel::pg::connection& db, std::int64_t id, keel::jobs::job_state state,
             std::chrono::milliseconds deadline = 15s) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (auto job = keel::jobs::get_job(db, id); job && job->state == state) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

}  // namespace

TEST_SUITE("browser") {
  TEST_CASE("the dashboard's Cancel and Discard buttons change the job, on the page and in the database") {
    keel::test::scratch_schema schema;
    auto db = schema.connect();
    REQUIRE(keel::jobs::migrate(db));
    const auto to_cancel =
        keel::jobs::enqueue(db, {.kind = "flaky", .queue = "demo", .max_attempts = 5}).value().id;
    const auto to_discard =
        keel::jobs::enqueue(db, {.kind = "flaky", .queue = "demo", .max_attempts = 5}).value().id;
    {
      // One failed attempt each, and a retry an hour away: both wait in retryable.
      keel::jobs::worker worker(
          {.conninfo = schema.conninfo, .queues = {{.name = "demo"}}, .concurrency = 2});
      worker.handle(
          "flaky",
          [](const keel::jobs::job_context&) { return keel::jobs::job_result::fail("upstream timed out"); },
          {.initial_backoff = std::chrono::hours(1), .jitter = 0.0});
      REQUIRE(worker.start());
      REQUIRE(reaches(db, to_cancel, keel::jobs::job_state::retryable));
      REQUIRE(reaches(db, to_discard, keel::jobs::job_state::retryable));
    }

    keel::pg::pool pool({.conninfo = schema.conninfo, .max_size = 2});
    keel::net::server server({.address = "127.0.0.1", .port = 0, .threads = 2});
    keel::jobs_http::mount(server, pool);
    REQUIRE(server.start());
    const std::string base = "http://127.0.0.1:" + std::to_string(server.port());

    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE_MESSAGE(browser->navigate(base + "/jobs"), browser->last_error());
    const auto row = [](std::int64_t id) { return "#failures tr[data-job=\"" + std::to_string(id) + "\"]"; };
    for (const auto id : {to_cancel, to_discard}) {
      REQUIRE_MESSAGE(
          browser->wait_for("document.querySelector('" + row(id) + "')?.dataset.state === 'retryable'"),
          browser->last_error());
    }
    auto error_text =
        browser->evaluate("document.querySelector('" + row(to_cancel) + " td.error').textContent");
    REQUIRE(error_text);
    CHECK(error_text->as_string() == "upstream timed out");

    // Cancel: the job leaves the failures table and the detail box shows it cancelled.
    REQUIRE_MESSAGE(browser->click(row(to_cancel) + " button[data-action=\"cancel\"]"),
                    browser->last_error());
    CHECK_MESSAGE(
        browser->wait_for(
            "document.querySelector('#detail [data-field=\"state\"]')?.textContent === 'cancelled'"),
        browser->last_error());
    CHECK(browser->wait_for("document.querySelector('" + row(to_cancel) + "') === null"));
    CHECK(keel::jobs::get_job(db, to_cancel).value().state == keel::jobs::job_state::cancelled);

    // Discard: the row stays among the failures, now discarded, with the dashboard's reason.
    REQUIRE_MESSAGE(browser->click(row(to_discard) + " button[data-action=\"discard\"]"),
                    browser->last_error());
    CHECK_MESSAGE(
        browser->wait_for("document.querySelector('" + row(to_discard) + "')?.dataset.state === 'discarded'"),
        browser->last_error());
    CHECK(browser->wait_for("document.querySelector('" + row(to_discard) +
                            " td.error').textContent === 'discarded from the dashboard'"));
    const auto discarded = keel::jobs::get_job(db, to_discard).value();
    CHECK(discarded.state == keel::jobs::job_state::discarded);
    CHECK(discarded.errors.back().error == "discarded from the dashboard");
    auto count = browser->evaluate(
        "document.querySelector('#queues tr[data-queue=\"demo\"] td.discarded').textContent");
    REQUIRE(count);
    CHECK(count->as_string() == "1");

    // The chart: depth and throughput sampled as the page refreshes, drawn as two lines.
    REQUIRE_MESSAGE(browser->wait_for("Number(document.getElementById('chart').dataset.samples) >= 2"),
                    browser->last_error());
    CHECK(browser->evaluate("document.getElementById('depth-line').points.numberOfItems >= 2").value() ==
          true);
    CHECK(browser->evaluate("document.getElementById('throughput-line').points.numberOfItems >= 2").value() ==
          true);
    CHECK(browser
              ->evaluate(
                  "/^[0-9,]+ \\(peak [0-9,]+\\)$/.test(document.getElementById('depth-now').textContent)")
              .value() == true);
    CHECK(browser->evaluate("document.querySelector('#chart-axis span:last-child').textContent").value() ==
          "now");
    CHECK(browser->console_errors().empty());
    server.stop();
  }
}
