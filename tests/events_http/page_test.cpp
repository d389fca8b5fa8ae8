// The mounted /events page and its API against a real Postgres: the JSON routes (pg), and the
// page in a real headless Chromium (browser): readers with their lag, consumer groups, streams, a stream's
// events.
#include <keel/events.hpp>
#include <keel/events_http.hpp>
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include <support/browser.hpp>
#include <support/http_client.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>

namespace {

namespace ev = keel::events;

// A scratch schema with events in it, and the page mounted on a server.
struct mounted {
  keel::test::scratch_schema schema;
  keel::pg::connection db = schema.connect();
  ev::store store;
  keel::pg::pool pool{{.conninfo = schema.conninfo, .max_size = 2}};
  keel::net::server server{{.address = "127.0.0.1", .port = 0, .threads = 2}};

  explicit mounted(keel::events_http::options opts = {}) {
    REQUIRE(ev::migrate(db));
    REQUIRE(
        store.append(db, "order-1", ev::expected_version::no_stream(),
                     {{.type = "order_placed", .data = R"({"total_cents": 1250})"}, {.type = "order_paid"}}));
    REQUIRE(store.append(db, "order-2", ev::expected_version::no_stream(), {{.type = "order_placed"}}));
    // A reader that handled the first event only: two behind.
    auto first = store.read_all(db, {.max_count = 1}).value();
    REQUIRE(store.save_checkpoint(db, "receipts", first.events.at(0).position));
    keel::events_http::mount(server, pool, std::move(opts));
    REQUIRE(server.start());
  }
  ~mounted() { server.stop(); }
  [[nodiscard]] std::string base() const { return "http://127.0.0.1:" + std::to_string(server.port()); }
};

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("the API lists streams, a stream's events and the readers with their lag; bad input is 400") {
    mounted m;
    auto streams = keel::test::http_get(m.server.port(), "/api/events/streams");
    REQUIRE(streams.status == 200);
    auto list = boost::json::parse(streams.body).at("streams").as_array();
    REQUIRE(list.size() == 2);
    CHECK(list[0].at("name").as_string() == "order-1");
    CHECK(list[0].at("version").as_int64() == 1);

    auto one = keel::test::http_get(m.server.port(), "/api/events/streams/order-1");
    REQUIRE(one.status == 200);
    const auto events = boost::json::parse(one.body).at("events").as_array();
    REQUIRE(events.size() == 2);
    CHECK(events[0].at("data").at("total_cents").as_int64() == 1250);
    CHECK(events[1].at("type").as_string() == "order_paid");

    auto readers = keel::test::http_get(m.server.port(), "/api/events/readers");
    REQUIRE(readers.status == 200);
    const auto body = boost::json::parse(readers.body);
    REQUIRE(body.at("readers").as_array().size() == 1);
    CHECK(body.at("readers").at(0).at("name").as_string() == "receipts");
    CHECK(body.at("readers").at(0).at("lag_events").as_int64() == 2);
    CHECK(body.at("horizon").at("events_waiting").as_int64() == 0);

    // A consumer group: its member owns every partition while it runs, none once it left.
    ev::consumer mailer(
        {.conninfo = m.schema.conninfo, .group = "mailer", .member = "mailer-a", .partitions = 4},
        [](const ev::recorded_event&) -> keel::result<void> { return {}; });
    REQUIRE(mailer.start());
    REQUIRE(mailer.wait_for_owned(4, std::chrono::seconds(20)));
    const auto owners = [&] {
      auto reply = keel::test::http_get(m.server.port(), "/api/events/groups");
      REQUIRE(reply.status == 200);
      const auto groups = boost::json::parse(reply.body).at("groups").as_array();
      REQUIRE(groups.size() == 1);
      CHECK(groups[0].at("name").as_string() == "mailer");
      CHECK(groups[0].at("partitions").as_int64() == 4);
      std::vector<std::string> out;
      for (const auto& member : groups[0].at("members").as_array())
        out.emplace_back(member.at("name").as_string());
      for (const auto& p : groups[0].at("partition_list").as_array()) {
        out.emplace_back(p.at("owner").as_string());
      }
      return out;
    };
    // The members, then each partition's owner.
    CHECK(owners() == std::vector<std::string>{"mailer-a", "mailer-a", "mailer-a", "mailer-a", "mailer-a"});
    mailer.stop();
    CHECK(owners() == std::vector<std::string>(4, ""));  // it left: no members, every partition free

    CHECK(keel::test::http_get(m.server.port(), "/api/events/streams/order-9").status == 404);
    CHECK(keel::test::http_get(m.server.port(), "/api/events/streams/$bad").status == 400);
    CHECK(keel::test::http_get(m.server.port(), "/api/events/streams?limit=0").status == 400);
    CHECK(keel::test::http_get(m.server.port(), "/api/events/streams?category=a-b").status == 400);
  }

  TEST_CASE("an authorize hook that says no gets 403 on the page and the API") {
    mounted m({.authorize = [](const keel::net::request&) { return false; }});
    CHECK(keel::test::http_get(m.server.port(), "/events").status == 403);
    CHECK(keel::test::http_get(m.server.port(), "/api/events/readers").status == 403);
  }
}

TEST_SUITE("browser") {
  TEST_CASE("the page shows readers with their lag, the streams, and a stream's events when clicked") {
    mounted m;
    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE_MESSAGE(browser->navigate(m.base() + "/events"), browser->last_error());
    REQUIRE_MESSAGE(
        browser->wait_for(
            "document.querySelector('#readers tr[data-reader=\"receipts\"]')?.dataset.lag === '2'"),
        browser->last_error());
    CHECK(browser->wait_for(
        "document.querySelector('#readers tr[data-reader=\"receipts\"] td.lag.behind') !== null"));
    REQUIRE(browser->wait_for("document.querySelector('#streams tr[data-stream=\"order-2\"]') !== null"));
    REQUIRE_MESSAGE(browser->click("#streams tr[data-stream=\"order-1\"] a"), browser->last_error());
    REQUIRE_MESSAGE(
        browser->wait_for("document.querySelectorAll('#events tbody tr[data-version]').length === 2"),
        browser->last_error());
    auto type =
        browser->evaluate("document.querySelector('#events tr[data-version=\"1\"] td.type').textContent");
    REQUIRE(type);
    CHECK(type->as_string() == "order_paid");
    auto title = browser->evaluate("document.getElementById('events-title').textContent");
    REQUIRE(title);
    CHECK(title->as_string() == "Events of order-1 (active)");

    // The reader catches up: the page shows it without a reload.
    ev::all_position end;
    for (;;) {
      auto page = m.store.read_all(m.db, {.after = end}).value();
      end = page.events.empty() ? end : page.events.back().position;
      if (page.caught_up) break;
    }
    REQUIRE(m.store.save_checkpoint(m.db, "receipts", end));
    CHECK_MESSAGE(browser->wait_for(
                      "document.querySelector('#readers tr[data-reader=\"receipts\"]')?.dataset.lag === '0'"),
                  browser->last_error());

    // A consumer group appears with its member owning each partition.
    ev::consumer mailer(
        {.conninfo = m.schema.conninfo, .group = "mailer", .member = "mailer-a", .partitions = 4},
        [](const ev::recorded_event&) -> keel::result<void> { return {}; });
    REQUIRE(mailer.start());
    CHECK_MESSAGE(browser->wait_for("document.querySelectorAll('#groups section[data-group=\"mailer\"] "
                                    "tr[data-owner=\"mailer-a\"]').length === 4"),
                  browser->last_error());
    mailer.stop();
    CHECK(browser->console_errors().empty());
  }
}
