// The /jobs dashboard of the showcase in a real headless Chromium: a failed job shows up, the
// retry button runs it again, and the page shows it completed. The showcase runs as its own
// process on a database of the test cluster, as `./keel demo` would.
#include <keel/jobs.hpp>
#include <keel/pg/local_cluster.hpp>

#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include <signal.h>
#include <spawn.h>
#include <support/browser.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

// The showcase on a free port; its first line of output names the port.
struct showcase_process {
  pid_t pid = -1;
  std::FILE* output = nullptr;
  std::string url;

  explicit showcase_process(const std::string& database_url) {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string_view(*e).starts_with("KEEL_DATABASE_URL=")) continue;
      env_strings.emplace_back(*e);
    }
    env_strings.push_back("KEEL_DATABASE_URL=" + database_url);
    env_strings.emplace_back("KEEL_LOG=warn");
    std::vector<char*> env;
    for (auto& s : env_strings) env.push_back(s.data());
    env.push_back(nullptr);
    std::string exe = KEEL_SHOWCASE_EXECUTABLE;
    std::string port_flag = "--port", port = "0";
    char* argv[] = {exe.data(), port_flag.data(), port.data(), nullptr};
    REQUIRE(::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, env.data()) == 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    output = ::fdopen(pipe_fds[0], "r");
    char line[512];
    while (std::fgets(line, sizeof line, output) != nullptr) {
      const std::string text = line;
      if (const auto at = text.find("http://"); at != std::string::npos) {
        url = text.substr(at, text.find('/', at + 7) - at);
        break;
      }
    }
    REQUIRE_MESSAGE(!url.empty(), "the showcase did not start");
  }
  ~showcase_process() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
    if (output != nullptr) std::fclose(output);
  }
};

}  // namespace

TEST_SUITE("browser") {
  TEST_CASE("the dashboard shows a failed job; retry from the page runs it to completion") {
    std::string database = keel::test::server_conninfo();
    if (auto* cluster = keel::test::cluster()) {
      auto created = cluster->create_database("jobs_dashboard_" + std::to_string(::getpid()));
      REQUIRE(created);
      database = *created;
    }
    showcase_process showcase(database);
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
