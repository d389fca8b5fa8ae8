// keel::tsdb_http's page in a real headless Chromium: the SVG plot is drawn, raw and
// LTTB-downsampled, with the asked-for number of points and no page errors; and the query
// route's answers to hostile ranges.
#include "tsdb_http_test_support.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <string>

#include <support/browser.hpp>

using keel::test::http_get;

// HTTP only, no browser: the routes' answers to hostile parameters.
TEST_SUITE("pg") {
  TEST_CASE("tsdb query route: extreme ranges are answered exactly or refused with 400, never a crash") {
    keel::test::mounted_tsdb m;
    const std::string series = "series=" + std::to_string(m.demo_series);

    const auto crashed = http_get(m.port(), "/api/tsdb/query?" + series +
                                                "&from=-9000000000000000000&to=9000000000000000000"
                                                "&step=1000000000000000000");
    REQUIRE(crashed.status == 200);
    const auto buckets = boost::json::parse(crashed.body).at("buckets").as_array();
    REQUIRE(buckets.size() == 18);
    std::int64_t demo_points = 0;
    for (const auto& b : buckets) demo_points += b.at("count").to_number<std::int64_t>();
    CHECK(demo_points == 10080);
    for (const char* absurd :
         {"from=-9223372036854775808&to=9223372036854775807&step=1",
          "from=-9223372036854775808&to=0&step=1000000000000000000", "from=0&to=0&step=1",
          "from=10&to=0&step=1", "from=0&to=10&step=0", "from=0&to=10&step=-3"}) {
      CAPTURE(absurd);
      const auto refused = http_get(m.port(), "/api/tsdb/query?" + series + "&" + absurd);
      CHECK(refused.status == 400);
      CHECK(refused.body.find("bucket") != std::string::npos);
    }
    // Still serving, and the demo series is whole.
    const auto day = http_get(
        m.port(), "/api/tsdb/query?" + series + "&from=1700006400000&to=1700611200000&step=604800000");
    REQUIRE(day.status == 200);
    std::int64_t week = 0;
    const auto week_buckets = boost::json::parse(day.body);
    for (const auto& b : week_buckets.at("buckets").as_array())
      week += b.at("count").to_number<std::int64_t>();
    CHECK(week == 10080);
  }
}

TEST_SUITE("browser") {
  TEST_CASE("the tsdb page plots the demo series raw and LTTB-downsampled") {
    keel::test::mounted_tsdb m;
    const std::string base = "http://127.0.0.1:" + std::to_string(m.port());

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
    // A time axis in UTC (a week of data: a tick a day, at midnight) and a value axis in the
    // series' unit, from its "unit" label; the series named above the plot.
    const auto ticks =
        browser->evaluate("Array.from(document.querySelectorAll('#x-axis text'), e => e.textContent)");
    REQUIRE(ticks);
    REQUIRE(ticks->as_array().size() >= 7);
    CHECK(ticks->as_array()[0].as_string() == "Wed 15 Nov");
    CHECK(ticks->as_array()[1].as_string() == "Thu 16 Nov");
    const auto values =
        browser->evaluate("Array.from(document.querySelectorAll('#y-axis text'), e => e.textContent)");
    REQUIRE(values);
    REQUIRE(values->as_array().size() >= 3);
    for (const auto& label : values->as_array()) CHECK(std::string(label.as_string()).ends_with(" °C"));
    CHECK(browser->evaluate("document.getElementById('series').textContent").value() ==
          R"(demo_temperature{site="test", unit="celsius"})");
    CHECK(browser->evaluate("document.getElementById('raw-count').textContent").value() == "10,080");
    CHECK(browser->console_errors().empty());
  }
}
