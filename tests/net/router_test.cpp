#include <keel/net/error.hpp>
#include <keel/net/json.hpp>
#include <keel/net/router.hpp>

#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

namespace {

keel::net::handler answer(std::string text) {
  return [text = std::move(text)](const keel::net::request&) { return keel::net::text_response(text); };
}

std::string call(const keel::net::route_match& m) {
  REQUIRE(m.target != nullptr);
  return (*m.target)(keel::net::request{}).body;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("router matches literals and parameters, literals first") {
    using keel::net::method;
    keel::net::router r;
    r.add(method::get, "/jobs/{id}", answer("job"));
    r.add(method::get, "/jobs/stats", answer("stats"));
    r.add(method::delete_, "/jobs/{id}", answer("deleted"));
    r.add(method::get, "/", answer("root"));
    r.add(method::get, "/files/{path...}", answer("file"));

    auto m = r.match(method::get, "/jobs/42");
    CHECK(m.result == keel::net::route_match::outcome::found);
    CHECK(m.pattern == "/jobs/{id}");
    REQUIRE(m.params.size() == 1);
    CHECK(m.params[0] == std::pair<std::string, std::string>{"id", "42"});
    CHECK(call(r.match(method::get, "/jobs/stats")) == "stats");
    CHECK(call(r.match(method::delete_, "/jobs/stats")) == "deleted");
    CHECK(call(r.match(method::get, "/")) == "root");
    CHECK(call(r.match(method::head, "/jobs/1")) == "job");  // GET answers HEAD

    m = r.match(method::get, "/jobs/a%20b");
    CHECK(m.params[0].second == "a b");
    m = r.match(method::get, "/files/css/site.css");
    CHECK(m.params[0].second == "css/site.css");
    m = r.match(method::get, "/files");
    CHECK(m.params[0].second.empty());

    CHECK(r.match(method::get, "/jobs").result == keel::net::route_match::outcome::not_found);
    CHECK(r.match(method::get, "/jobs/").result == keel::net::route_match::outcome::not_found);
    CHECK(r.match(method::get, "/jobs/1/x").result == keel::net::route_match::outcome::not_found);
    m = r.match(method::post, "/jobs/1");
    CHECK(m.result == keel::net::route_match::outcome::method_not_allowed);
    CHECK(m.allowed == std::vector<method>{method::get, method::head, method::delete_});
  }

  TEST_CASE("router rejects malformed patterns and duplicates") {
    using keel::net::method;
    keel::net::router r;
    r.add(method::get, "/a/{id}", answer("x"));
    CHECK_THROWS_AS(r.add(method::get, "/a/{id}", answer("y")), std::invalid_argument);
    CHECK_THROWS_AS(r.add(method::get, "no-slash", answer("y")), std::invalid_argument);
    CHECK_THROWS_AS(r.add(method::get, "/a/x{id}", answer("y")), std::invalid_argument);
    CHECK_THROWS_AS(r.add(method::get, "/a/{rest...}/b", answer("y")), std::invalid_argument);
    CHECK_THROWS_AS(r.add(method::get, "/b", keel::net::handler{}), std::invalid_argument);
  }

  TEST_CASE("headers are case-insensitive and requests expose their parameters") {
    keel::net::headers h;
    h.set("Content-Type", "text/plain");
    h.add("Set-Cookie", "a=1");
    h.add("set-cookie", "b=2");
    CHECK(h.get("content-type") == "text/plain");
    CHECK(h.size() == 3);
    h.set("SET-COOKIE", "c=3");
    CHECK(h.size() == 2);
    CHECK(h.get("Set-Cookie") == "c=3");
    h.erase("content-TYPE");
    CHECK_FALSE(h.contains("Content-Type"));

    keel::net::request req;
    req.query = {{"q", "a b"}, {"q", "second"}};
    req.path_params = {{"id", "7"}};
    req.attributes["user"] = "ada";
    CHECK(req.query_param("q") == "a b");
    CHECK(req.path_param("id") == "7");
    CHECK(req.attribute("user") == "ada");
    CHECK_FALSE(req.query_param("missing"));

    CHECK(keel::net::percent_decode("%2Fa%20b+c") == "/a b+c");
    CHECK_FALSE(keel::net::percent_decode("%2"));
    CHECK_FALSE(keel::net::percent_decode("%zz"));
  }

  TEST_CASE("JSON helpers answer with a JSON body and reject malformed input") {
    const auto ok = keel::net::json_response(boost::json::object{{"id", 7}}, keel::net::status::created);
    CHECK(ok.status == keel::net::status::created);
    CHECK(ok.headers.get("Content-Type") == "application/json");
    CHECK(ok.body == R"({"id":7})");

    const auto err =
        keel::net::error_response(keel::net::status::not_found, make_error_code(keel::net::errc::not_found));
    const auto body = boost::json::parse(err.body).as_object();
    CHECK(body.at("error").as_string() == "not found");
    CHECK(body.at("detail").as_string() == "no route matches this path; check the URL");

    keel::net::request req;
    req.body = R"({"a": [1, 2}")";
    const auto parsed = keel::net::parse_json(req);
    REQUIRE(parsed.has_error());
    CHECK(parsed.error() == keel::net::errc::invalid_json);

    const auto wrapped = keel::net::json_handler(
        [](const keel::net::request&, const boost::json::value& v) { return keel::net::json_response(v); });
    CHECK(wrapped(req).status == keel::net::status::bad_request);
    req.body = R"({"a":[1,2]})";
    CHECK(wrapped(req).body == R"({"a":[1,2]})");
  }
}
