// The showcase's keel::tsdb page in a real headless Chromium: the SVG plot is drawn, raw and
// LTTB-downsampled, with the asked-for number of points and no page errors.
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>

#include "showcase.hpp"

#include <doctest/doctest.h>

#include <string>

#include <support/browser.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>

TEST_SUITE("browser") {
  TEST_CASE("the tsdb page plots the demo series raw and LTTB-downsampled") {
    keel::test::scratch_schema schema;
    keel::pg::pool pool({.conninfo = schema.conninfo, .max_size = 2});
    keel::net::server server({.address = "127.0.0.1", .port = 0});
    showcase::context ctx{.server = server, .pool = pool, .conninfo = schema.conninfo, .endpoints = {}};
    REQUIRE(showcase::mount_tsdb(ctx));
    REQUIRE(server.start());
    const std::string base = "http://127.0.0.1:" + std::to_string(server.port());

    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "could not start chromium");
    for (const int points : {250, 40}) {
      CAPTURE(points);
      REQUIRE_MESSAGE(browser->navigate(base + "/tsdb?points=" + std::to_string(points)),
                      browser->last_error());
      REQUIRE_MESSAGE(browser->wait_for("document.getElementById('plot').dataset.ready === 'true'"),
                      browser->last_error());
      CHECK(browser->evaluate("document.getElementById('raw').points.numberOfItems").value() == 10080);
      CHECK(browser->evaluate("document.getElementById('lttb').points.numberOfItems").value() == points);
      CHECK(browser->evaluate("Number(document.getElementById('lttb-count').textContent)").value() == points);
      // Drawn, not just present: the line spans the plot's width and has height.
      CHECK(browser->evaluate("document.getElementById('lttb').getBBox().width > 850").value() == true);
      CHECK(browser->evaluate("document.getElementById('raw').getBBox().height > 100").value() == true);
      CHECK(browser->evaluate("getComputedStyle(document.getElementById('lttb')).stroke").value() ==
            "rgb(21, 101, 192)");
    }
    CHECK(browser->console_errors().empty());
    server.stop();
  }
}
