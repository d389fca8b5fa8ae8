// The /jobs dashboard of the showcase in a real headless Chromium: a failed job shows up, the
// retry button runs it again, and the page shows it completed. The showcase runs as its own
// process on a database of the test cluster, as `./keel demo` would.
#include <keel/jobs.hpp>
#include <keel/pg/local_cluster.hpp>

#include <doctest/doctest.h>

#include <string>

#include <support/browser.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>
#include <support/showcase.hpp>

TEST_SUITE("browser") {
  TEST_CASE("the dashboard shows a failed job; retry from the page runs it to completion") {
    std::string database = keel::test::server_conninfo();
    if (auto* cluster = keel::test::cluster()) {
      auto created = cluster->create_database("jobs_dashboard_" + std::to_string(::getpid()));
      REQUIRE(created);
      database = *created;
    }
    keel::test::showcase_process showcase(database);
    auto c = keel::pg::connection::connect(database).value();
    // A payment that fails on its only attempt: discarded, until someone retries it.
    const auto id =
        keel::jobs::enqueue(
            c, {.kind = "charge", .args = R"({"succeed_on_attempt": 2})", .queue = "demo", .max_attempts = 1})
            .value()
            .id;

    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE(browser->navigate(showcase.url + "/jobs"));
    const std::string row = "#failures tr[data-job=\"" + std::to_string(id) + "\"]";
    auto failed = browser->wait_for("document.querySelector('" + row + "')?.dataset.state === 'discarded'",
                                    std::chrono::seconds(15));
    REQUIRE_MESSAGE(failed, browser->last_error());
    auto error_text = browser->evaluate("document.querySelector('" + row + " td.error').textContent");
    REQUIRE(error_text);
    CHECK(error_text->as_string() == "card declined (attempt 1)");
    // The queue table counts it.
    auto discarded = browser->evaluate(
        "document.querySelector('#queues tr[data-queue=\"demo\"] td.discarded').textContent");
    REQUIRE(discarded);
    CHECK(discarded->as_string() != "0");

    REQUIRE(browser->click(row + " button[data-action=\"retry\"]"));
    auto completed = browser->wait_for(
        "document.querySelector('#detail [data-field=\"state\"]')?.textContent === 'completed'",
        std::chrono::seconds(15));
    REQUIRE_MESSAGE(completed, browser->last_error());
    auto attempts =
        browser->evaluate("document.querySelector('#detail [data-field=\"attempt\"]').textContent");
    REQUIRE(attempts);
    CHECK(attempts->as_string() == "2 of 2");
    auto job = keel::jobs::get_job(c, id).value();
    CHECK(job.state == keel::jobs::job_state::completed);
    CHECK(job.errors.size() == 1);
    CHECK(browser->console_errors().empty());
  }
}
