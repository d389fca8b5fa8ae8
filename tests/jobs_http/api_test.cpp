// keel::jobs_http's JSON API over real HTTP (a Beast client on loopback) against a real
// Postgres: input validation, status codes, queue names, and the authorization hook. The one
// heavy TU of these tests: everything that needs Beast lives here.
#include <keel/jobs.hpp>
#include <keel/jobs_http.hpp>
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>

#include <support/http_client.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;

using reply = keel::test::http_reply;

reply send(std::uint16_t port, http::verb verb, const std::string& target, const std::string& body = {},
           const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return keel::test::http_send(port, verb, target, body, headers);
}

/// The dashboard's routes on a fresh schema, on a free loopback port.
struct mounted {
  keel::test::scratch_schema schema;
  keel::pg::connection db = schema.connect();
  keel::pg::pool pool{{.conninfo = schema.conninfo, .max_size = 2}};
  keel::net::server server{{.address = "127.0.0.1", .port = 0, .threads = 2}};

  explicit mounted(keel::jobs_http::options opts = {}) {
    REQUIRE(keel::jobs::migrate(db));
    keel::jobs_http::mount(server, pool, std::move(opts));
    REQUIRE(server.start());
  }
  ~mounted() { server.stop(); }

  reply post(const std::string& target, const std::string& body = {},
             const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    return send(server.port(), http::verb::post, target, body, headers);
  }
  reply get(const std::string& target) { return send(server.port(), http::verb::get, target); }

  std::size_t stored_jobs() { return keel::jobs::list_jobs(db, {.limit = 1000}).value().size(); }
};

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("POST /api/jobs rejects max_attempts out of range instead of narrowing it") {
    mounted m;
    for (const char* value : {"4294967297", "0", "-1", "2147483648", "18446744073709551615"}) {
      const std::string sent = value;
      CAPTURE(sent);
      const auto r = m.post("/api/jobs", std::string(R"({"kind":"email","max_attempts":)") + value + "}");
      CHECK(r.status == 400);
      CHECK(contains(r.detail(), "max_attempts"));
      CHECK(contains(r.detail(), "1 to 2147483647"));
    }
    CHECK(m.stored_jobs() == 0);
    const auto ok = m.post("/api/jobs", R"({"kind":"email","max_attempts":2147483647})");
    REQUIRE(ok.status == 201);
    const auto job = keel::jobs::get_job(m.db, ok.json().at("id").as_int64()).value();
    CHECK(job.max_attempts == 2147483647);
  }

  TEST_CASE("POST /api/jobs rejects wrong JSON types and unknown fields, naming the field") {
    mounted m;
    struct bad {
      const char* body;
      const char* field;
      const char* expected;
    };
    for (const auto& b :
         {bad{R"({"kind":"email","max_attempts":"5"})", "max_attempts", "an integer"},
          bad{R"({"kind":"email","max_attempts":5.5})", "max_attempts", "an integer"},
          bad{R"({"kind":"email","queue":7})", "queue", "a string"}, bad{R"({"kind":7})", "kind", "a string"},
          bad{R"({"kind":"email","priority":"high"})", "priority", "an integer"},
          bad{R"({"kind":"email","colour":"red"})", "colour", "unknown field"},
          bad{R"(["email"])", "body", "an object"}}) {
      const std::string sent = b.body;
      CAPTURE(sent);
      const auto r = m.post("/api/jobs", b.body);
      CHECK(r.status == 400);
      CHECK(contains(r.detail(), b.field));
      CHECK(contains(r.detail(), b.expected));
    }
    CHECK(m.stored_jobs() == 0);
    const auto ok = m.post("/api/jobs", R"({"kind":"email","queue":"mail","priority":-3,"args":{"to":"a"}})");
    REQUIRE(ok.status == 201);
    const auto job = keel::jobs::get_job(m.db, ok.json().at("id").as_int64()).value();
    CHECK(job.queue == "mail");
    CHECK(job.priority == -3);
  }

  TEST_CASE("malformed input is answered 400, a missing job 404; only an unreachable database 503") {
    mounted m;
    // Text Postgres cannot store: a NUL in a string, bytes that are not UTF-8.
    for (const char* body : {R"({"kind":"a\u0000b"})", R"({"kind":"email","queue":"q\u0000"})"}) {
      const std::string sent = body;
      CAPTURE(sent);
      const auto r = m.post("/api/jobs", body);
      CHECK(r.status == 400);
    }
    // jsonb has no NUL either: the database's data error (class 22) is the client's, with its SQLSTATE.
    const auto args = m.post("/api/jobs", R"({"kind":"email","args":{"note":"\u0000"}})");
    CHECK(args.status == 400);
    CHECK(contains(args.detail(), "SQLSTATE 22"));
    CHECK(m.post("/api/jobs/queues/%FF/pause").status == 400);
    CHECK(m.post("/api/jobs/queues/%FF/resume").status == 400);
    CHECK(m.get("/api/jobs/list?queue=%FF").status == 400);
    CHECK(m.get("/api/jobs/list?kind=%00").status == 400);
    CHECK(m.stored_jobs() == 0);
    CHECK(m.get("/api/jobs/job/999999").status == 404);
    CHECK(m.post("/api/jobs/job/999999/cancel").status == 404);
    CHECK(m.get("/api/jobs/job/99999999999999999999").status == 400);

    // A finished job cannot be cancelled: a conflict, not an outage.
    const auto id = keel::jobs::enqueue(m.db, {.kind = "email"}).value().id;
    REQUIRE(keel::jobs::discard_job(m.db, id));
    CHECK(m.post("/api/jobs/job/" + std::to_string(id) + "/cancel").status == 409);

    // Nothing listens on port 1: that is the database being unavailable.
    keel::pg::pool unreachable({.conninfo = "host=127.0.0.1 port=1 connect_timeout=1", .max_size = 1});
    keel::net::server server({.address = "127.0.0.1", .port = 0, .threads = 1});
    keel::jobs_http::mount(server, unreachable);
    REQUIRE(server.start());
    CHECK(send(server.port(), http::verb::get, "/api/jobs/queues").status == 503);
    CHECK(send(server.port(), http::verb::post, "/api/jobs", R"({"kind":"email"})").status == 503);
    server.stop();
  }

  TEST_CASE("pause and resume accept exactly the same queue names") {
    mounted m;
    const std::string longest(keel::jobs_http::max_queue_name_bytes, 'q');
    CHECK(m.post("/api/jobs/queues/" + longest + "/pause").status == 200);
    CHECK(keel::jobs::queue_summaries(m.db).value().at(0).paused);
    CHECK(m.post("/api/jobs/queues/" + longest + "/resume").status == 200);
    CHECK_FALSE(keel::jobs::queue_summaries(m.db).value().at(0).paused);

    for (const std::size_t size : {keel::jobs_http::max_queue_name_bytes + 1, std::size_t{9000}}) {
      CAPTURE(size);
      const std::string name(size, 'q');
      const auto paused = m.post("/api/jobs/queues/" + name + "/pause");
      const auto resumed = m.post("/api/jobs/queues/" + name + "/resume");
      CAPTURE(resumed.body);
      CHECK(paused.status == resumed.status);
      CHECK(paused.status == 400);
      CHECK(contains(paused.detail(), "at most 255 bytes"));
      const auto enqueued = m.post("/api/jobs", R"({"kind":"email","queue":")" + name + R"("})");
      CHECK(enqueued.status == 400);
    }
    // The rejected names left nothing behind: only the longest accepted one is there.
    CHECK(keel::jobs::queue_summaries(m.db).value().size() == 1);
  }

  TEST_CASE("the authorize hook decides reads and actions; a denied action is 403 and changes nothing") {
    mounted m({.authorize = [](const keel::net::request& req, keel::jobs_http::access wanted) {
      return wanted == keel::jobs_http::access::read || req.headers.get("X-Role") == "operator";
    }});
    const auto id = keel::jobs::enqueue(m.db, {.kind = "email"}).value().id;
    const auto target = "/api/jobs/job/" + std::to_string(id) + "/cancel";
    const auto denied = m.post(target);
    CHECK(denied.status == 403);
    CHECK(denied.json().at("error") == "forbidden");
    CHECK(contains(denied.detail(), "authorize hook"));
    CHECK(m.post("/api/jobs", R"({"kind":"email"})").status == 403);
    CHECK(m.post("/api/jobs/queues/default/pause").status == 403);
    CHECK(keel::jobs::get_job(m.db, id).value().state == keel::jobs::job_state::available);
    CHECK(m.stored_jobs() == 1);
    CHECK(m.get("/api/jobs/job/" + std::to_string(id)).status == 200);
    CHECK(m.get("/jobs").status == 200);

    const auto allowed = m.post(target, {}, {{"X-Role", "operator"}});
    CHECK(allowed.status == 200);
    CHECK(keel::jobs::get_job(m.db, id).value().state == keel::jobs::job_state::cancelled);
  }

  TEST_CASE("the default authorization lets loopback act, but not for a page of another origin") {
    mounted m;
    const auto id = keel::jobs::enqueue(m.db, {.kind = "email"}).value().id;
    const auto target = "/api/jobs/job/" + std::to_string(id) + "/cancel";
    CHECK(m.post(target, {}, {{"Origin", "http://evil.example"}}).status == 403);
    CHECK(keel::jobs::get_job(m.db, id).value().state == keel::jobs::job_state::available);
    const auto same = "http://127.0.0.1:" + std::to_string(m.server.port());
    CHECK(m.post(target, {}, {{"Origin", same}}).status == 200);
    CHECK(keel::jobs::get_job(m.db, id).value().state == keel::jobs::job_state::cancelled);
  }
}

TEST_SUITE("unit") {
  TEST_CASE("default_authorization: reads for all, actions for loopback or the bearer token") {
    using keel::jobs_http::access;
    keel::net::request remote;
    remote.remote_address = "192.0.2.7";
    keel::net::request local;
    local.remote_address = "127.0.0.1";
    local.headers.set("Host", "127.0.0.1:8080");
    keel::net::request mapped;
    mapped.remote_address = "::ffff:127.0.0.1";
    mapped.headers.set("Host", "localhost");
    keel::net::request rebound;  // a page of another name that resolves to 127.0.0.1
    rebound.remote_address = "127.0.0.1";
    rebound.headers.set("Host", "attacker.example:8080");
    rebound.headers.set("Origin", "http://attacker.example:8080");

    const auto no_token = keel::jobs_http::default_authorization();
    CHECK(no_token(remote, access::read));
    CHECK_FALSE(no_token(remote, access::act));
    CHECK(no_token(local, access::act));
    CHECK(no_token(mapped, access::act));
    CHECK(no_token(rebound, access::read));
    CHECK_FALSE(no_token(rebound, access::act));

    const auto with_token = keel::jobs_http::default_authorization("s3cret");
    CHECK_FALSE(with_token(remote, access::act));
    remote.headers.set("Authorization", "Bearer s3cre");
    CHECK_FALSE(with_token(remote, access::act));
    remote.headers.set("Authorization", "Bearer s3cret");
    CHECK(with_token(remote, access::act));
    CHECK_FALSE(no_token(remote, access::act));  // a token nobody configured opens nothing
  }
}
