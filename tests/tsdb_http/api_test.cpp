// keel::tsdb_http's JSON routes over real HTTP against a real Postgres: malformed input is
// answered 400 saying what to send, and the authorization hook decides reads and writes.
#include "tsdb_http_test_support.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <string>

using keel::test::http_get;
using keel::test::http_request;
// Not `access`: unistd.h declares a function of that name.
using tsdb_access = keel::tsdb_http::access;

namespace {

std::string detail_of(const keel::test::http_reply& r) {
  const auto parsed = boost::json::parse(r.body).as_object();
  return parsed.contains("detail") ? std::string(parsed.at("detail").as_string()) : std::string();
}

keel::net::request request_from(std::string remote, std::string host) {
  keel::net::request req;
  req.remote_address = std::move(remote);
  req.headers.set("Host", host);
  return req;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("default_authorization: reads for all, writes for loopback by name or the bearer token") {
    const auto open = keel::tsdb_http::default_authorization();
    CHECK(open(request_from("192.0.2.1", "example.com"), tsdb_access::read));
    CHECK_FALSE(open(request_from("192.0.2.1", "example.com"), tsdb_access::write));
    CHECK(open(request_from("127.0.0.1", "127.0.0.1:8080"), tsdb_access::write));
    CHECK(open(request_from("::1", "[::1]:8080"), tsdb_access::write));
    CHECK(open(request_from("::ffff:127.0.0.1", "localhost:8080"), tsdb_access::write));
    // A rebound DNS name reaching loopback is not loopback by name.
    CHECK_FALSE(open(request_from("127.0.0.1", "rebound.example:8080"), tsdb_access::write));
    CHECK_FALSE(open(request_from("127.0.0.1", "[::1]evil"), tsdb_access::write));
    auto cross_site = request_from("127.0.0.1", "127.0.0.1:8080");
    cross_site.headers.set("Origin", "http://evil.example");
    CHECK_FALSE(open(cross_site, tsdb_access::write));
    auto same_site = request_from("127.0.0.1", "127.0.0.1:8080");
    same_site.headers.set("Origin", "http://127.0.0.1:8080");
    CHECK(open(same_site, tsdb_access::write));

    const auto with_token = keel::tsdb_http::default_authorization("s3cret");
    auto bearer = request_from("192.0.2.1", "tsdb.example");
    bearer.headers.set("Authorization", "Bearer s3cret");
    CHECK(with_token(bearer, tsdb_access::write));
    bearer.headers.set("Authorization", "Bearer s3creT");
    CHECK_FALSE(with_token(bearer, tsdb_access::write));
    bearer.headers.set("Authorization", "Bearer s3cret2");
    CHECK_FALSE(with_token(bearer, tsdb_access::write));
    CHECK_FALSE(open(bearer, tsdb_access::write));  // no token configured: a bearer header is not enough
  }
}

TEST_SUITE("pg") {
  TEST_CASE("ingest stores points, lists the series and answers malformed bodies 400 with nothing stored") {
    keel::test::mounted_tsdb m;
    const auto put =
        http_request(m.port(), "POST", "/api/tsdb/ingest",
                     R"({"metric":"room_temp","labels":{"room":"lab"},"points":[[0,20.5],[60000,21]]})");
    REQUIRE(put.status == 201);
    const auto created = boost::json::parse(put.body).as_object();
    CHECK(created.at("accepted").to_number<std::int64_t>() == 2);
    const auto id = created.at("series").to_number<std::int64_t>();

    struct refusal {
      const char* body;
      const char* says;
    };
    for (const auto& refused_case : {
             refusal{R"([1,2])", "send {\"metric\""},
             refusal{R"({"metric":"room_temp"})", "send {\"metric\""},
             refusal{R"({"metric":7,"points":[]})", "send {\"metric\""},
             refusal{R"({"metric":"room_temp","points":[[1]]})", "each point is [time_ms, value]"},
             refusal{R"({"metric":"room_temp","points":[["x",1]]})", "each point is [time_ms, value]"},
             refusal{R"({"metric":"room_temp","points":[[1.5,1]]})", "times are integers"},
             refusal{R"({"metric":"room_temp","points":[[1e30,1]]})", "times are integers"},
             refusal{R"({"metric":"room_temp","labels":["room"],"points":[[120000,1]]})",
                     "labels must be an object"},
             refusal{R"({"metric":"room_temp","labels":{"room":1},"points":[[120000,1]]})",
                     "label values must be strings"},
         }) {
      const std::string body = refused_case.body;
      const std::string_view says = refused_case.says;
      CAPTURE(body);
      const auto refused = http_request(m.port(), "POST", "/api/tsdb/ingest", body);
      CHECK(refused.status == 400);
      CHECK(detail_of(refused).find(says) != std::string::npos);
    }
    const auto listed = http_get(m.port(), "/api/tsdb/series?metric=room_temp");
    REQUIRE(listed.status == 200);
    const auto series = boost::json::parse(listed.body).at("series").as_array();
    REQUIRE(series.size() == 1);
    CHECK(series[0].at("id").to_number<std::int64_t>() == id);
    CHECK(series[0].at("labels").at("room").as_string() == "lab");
    // Only the two accepted points are stored.
    const auto all =
        http_get(m.port(), "/api/tsdb/query?series=" + std::to_string(id) + "&from=0&to=240000&step=240000");
    REQUIRE(all.status == 200);
    CHECK(boost::json::parse(all.body).at("buckets").at(0).at("count").to_number<std::int64_t>() == 2);
    CHECK(http_get(m.port(), "/api/tsdb/series").status == 400);
  }

  TEST_CASE("query and plot parameters that are not what they must be are answered 400, naming them") {
    keel::test::mounted_tsdb m;
    const std::string series = "series=" + std::to_string(m.demo_series);
    struct refusal {
      std::string target;
      const char* says;
    };
    for (const auto& refused_case : {
             refusal{"/api/tsdb/query?" + series + "&from=0&to=10", "pass series, from, to"},
             refusal{"/api/tsdb/query?" + series + "&from=0x10&to=100&step=1", "pass series, from, to"},
             refusal{"/api/tsdb/query?series=1&from=0&to=99999999999999999999&step=1",
                     "pass series, from, to"},
             refusal{"/api/tsdb/query?" + series + "&from=0&to=100&step=10&fill=spline",
                     "fill must be none, locf or linear"},
             refusal{"/api/tsdb/query?" + series + "&from=0&to=100&step=10&max_gap=-1", "max_gap must be 0"},
             refusal{"/api/tsdb/query?" + series + "&from=0&to=100&step=10&max_gap=two",
                     "max_gap must be an integer"},
             refusal{"/api/tsdb/plot?series=demo", "series must be an integer"},
             refusal{"/api/tsdb/plot?points=many", "points must be an integer"},
             refusal{"/tsdb?series=1.5", "series must be an integer"},
             refusal{"/tsdb?points=", "points must be an integer"},
         }) {
      const std::string& target = refused_case.target;
      const std::string_view says = refused_case.says;
      CAPTURE(target);
      const auto refused = http_get(m.port(), target);
      CHECK(refused.status == 400);
      CHECK(detail_of(refused).find(says) != std::string::npos);
    }
    // Within range, absent parameters take their defaults: the demo series, 300 points.
    const auto plot = http_get(m.port(), "/api/tsdb/plot");
    REQUIRE(plot.status == 200);
    const auto plotted = boost::json::parse(plot.body);
    CHECK(plotted.at("raw_points").to_number<std::int64_t>() == 10080);
    CHECK(plotted.at("lttb").as_array().size() == 300);
    // A count out of range is clamped, not refused.
    CHECK(
        boost::json::parse(http_get(m.port(), "/api/tsdb/plot?points=1").body).at("lttb").as_array().size() ==
        3);
    const auto filled =
        http_get(m.port(), "/api/tsdb/query?" + series + "&from=0&to=100&step=10&fill=locf&max_gap=2");
    CHECK(filled.status == 200);
  }

  TEST_CASE("without a default series, a plot that names none is 400") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(keel::tsdb::migrate(c));
    auto store = keel::tsdb::store::open(schema.conninfo).value();
    keel::net::server server({.address = "127.0.0.1", .port = 0});
    keel::tsdb_http::mount(server, store);
    REQUIRE(server.start());
    for (const char* target : {"/tsdb", "/api/tsdb/plot"}) {
      CAPTURE(target);
      const auto refused = http_get(server.port(), target);
      CHECK(refused.status == 400);
      CHECK(detail_of(refused).find("pass ?series=") != std::string::npos);
    }
    const auto unknown = http_get(server.port(), "/tsdb?series=5");
    CHECK(unknown.status == 200);
    CHECK(unknown.body.find("id=\"empty\"") != std::string::npos);
    server.stop();
  }

  TEST_CASE("the authorize hook decides reads and writes; a refused write is 403 and stores nothing") {
    keel::test::mounted_tsdb m({.authorize =
                                    [](const keel::net::request& req, tsdb_access wanted) {
                                      return wanted == tsdb_access::read ? req.query_param("key") == "reader"
                                                                         : false;
                                    },
                                .write_token = {},
                                .default_series = std::nullopt});
    CHECK(http_get(m.port(), "/tsdb").status == 403);
    CHECK(http_get(m.port(), "/api/tsdb/plot").status == 403);
    CHECK(http_get(m.port(), "/api/tsdb/series?metric=demo_temperature").status == 403);
    CHECK(http_get(m.port(), "/api/tsdb/series?metric=demo_temperature&key=reader").status == 200);
    const auto refused = http_request(m.port(), "POST", "/api/tsdb/ingest?key=reader",
                                      R"({"metric":"intruder","points":[[0,1]]})");
    CHECK(refused.status == 403);
    CHECK(detail_of(refused).find("writing points is not allowed") != std::string::npos);
    const auto none = http_get(m.port(), "/api/tsdb/series?metric=intruder&key=reader");
    REQUIRE(none.status == 200);
    CHECK(boost::json::parse(none.body).at("series").as_array().empty());
  }

  TEST_CASE("the default authorization lets loopback write, but not for a page of another origin") {
    keel::test::mounted_tsdb m;
    const std::string body = R"({"metric":"door","points":[[0,1]]})";
    CHECK(http_request(m.port(), "POST", "/api/tsdb/ingest", body, {{"Origin", "http://evil.example"}})
              .status == 403);
    CHECK(boost::json::parse(http_get(m.port(), "/api/tsdb/series?metric=door").body)
              .at("series")
              .as_array()
              .empty());
    CHECK(http_request(m.port(), "POST", "/api/tsdb/ingest", body).status == 201);
    CHECK(boost::json::parse(http_get(m.port(), "/api/tsdb/series?metric=door").body)
              .at("series")
              .as_array()
              .size() == 1);
  }
}
