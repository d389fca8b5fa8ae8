// keel::net pages in a real headless Chromium: the page's script calls the JSON API and the DOM
// shows the answer. Also checks the browser driver the other components' page tests rely on.
#include <keel/net.hpp>

#include <doctest/doctest.h>

#include <string>

#include <support/browser.hpp>
#include <support/result.hpp>

namespace {

constexpr const char* counter_page = R"html(<!doctype html>
<html><head><meta charset="utf-8"><title>counter</title></head><body>
<p>count: <span id="count">loading</span></p>
<button id="add">add</button>
<script>
async function show(response) { document.getElementById('count').textContent = (await response.json()).count; }
fetch('/api/count').then(show);
document.getElementById('add').addEventListener('click', () => fetch('/api/count', {method: 'POST'}).then(show));
</script></body></html>)html";

}  // namespace

TEST_SUITE("browser") {
  TEST_CASE("a keel::net page drives its JSON API from a real browser") {
    int count = 0;
    keel::net::server server({.address = "127.0.0.1", .port = 0});
    server.get("/", [](const keel::net::request&) {
      return keel::net::text_response(counter_page, keel::net::status::ok, "text/html; charset=utf-8");
    });
    server.get("/api/count", [&](const keel::net::request&) {
      return keel::net::json_response(boost::json::object{{"count", count}});
    });
    server.post("/api/count", [&](const keel::net::request&) {
      ++count;
      return keel::net::json_response(boost::json::object{{"count", count}});
    });
    REQUIRE(server.start());
    const std::string base = "http://127.0.0.1:" + std::to_string(server.port());

    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "could not start chromium");
    REQUIRE_MESSAGE(browser->navigate(base + "/"), browser->last_error());
    CHECK(browser->evaluate("document.title").value() == "counter");
    REQUIRE_MESSAGE(browser->wait_for("document.getElementById('count').textContent === '0'"),
                    browser->last_error());

    REQUIRE_MESSAGE(browser->click("#add"), browser->last_error());
    REQUIRE_MESSAGE(browser->click("#add"), browser->last_error());
    REQUIRE_MESSAGE(browser->wait_for("document.getElementById('count').textContent === '2'"),
                    browser->last_error());
    CHECK(count == 2);

    // Failures are reported, not hung on.
    CHECK_FALSE(browser->click("#missing"));
    CHECK(browser->last_error().find("#missing") != std::string::npos);
    auto thrown = browser->evaluate("(() => { throw new Error('boom'); })()");
    REQUIRE_FALSE(thrown);
    CHECK(browser->last_error().find("boom") != std::string::npos);
    CHECK_FALSE(browser->wait_for("false", std::chrono::milliseconds(200)));

    // Page errors are collected for tests to assert on.
    CHECK(browser->console_errors().empty());
    REQUIRE(
        browser->evaluate("console.error('visible', 42); setTimeout(() => { throw new Error('late'); }); 1"));
    REQUIRE(browser->wait_for("new Promise(r => setTimeout(() => r(true), 100))"));
    const auto errors = browser->console_errors();
    REQUIRE(errors.size() == 2);
    CHECK(errors[0] == "visible 42");
    CHECK(errors[1].find("late") != std::string::npos);

    auto png = browser->screenshot_png();
    REQUIRE(png);
    REQUIRE(png->size() > 8);
    CHECK((*png)[1] == 'P');
    server.stop();
  }
}
