// keel::net server over loopback with real Beast HTTP and WebSocket clients. The one heavy TU of
// the net tests: every test that needs Beast lives here.
#include <keel/net.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <support/subprocess.hpp>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ws = beast::websocket;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using http_response = http::response<http::string_body>;

constexpr auto io_deadline = 10s;  // a guard against hangs; no test waits this long when it passes

/// Waits for `condition` without fixed sleeps longer than a millisecond; false on deadline.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds deadline = 5000ms) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

/// A server on an ephemeral loopback port with short limits, started by the constructor.
keel::net::server_options test_options() {
  return keel::net::server_options{
      .address = "127.0.0.1",
      .port = 0,
      .threads = 2,
      .max_connections = 64,
      .max_header_bytes = 4096,
      .max_body_bytes = 1024,
      .read_timeout = 300ms,
      .idle_timeout = 2s,
      .write_timeout = 2s,
      .shutdown_timeout = 5s,
  };
}

void start(keel::net::server& s) {
  const auto started = s.start();
  REQUIRE_MESSAGE(started.has_value(), started.error().message());
  REQUIRE(s.port() != 0);
}

/// A Beast HTTP client. Each call runs async operations on the client's own io_context with a
/// deadline, so a broken server fails the test instead of hanging it.
class http_client {
 public:
  /// Connects from `local_address` (any 127.0.0.0/8 address is loopback), so a test can play
  /// several clients.
  explicit http_client(std::uint16_t port, const char* local_address = nullptr) {
    if (local_address != nullptr) {
      auto& socket = stream_.socket();
      socket.open(tcp::v4());
      socket.bind(tcp::endpoint(asio::ip::make_address(local_address), 0));
    }
    stream_.expires_after(io_deadline);
    stream_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                          [this](beast::error_code ec) { ec_ = ec; });
    run();
  }

  [[nodiscard]] beast::error_code connect_error() const { return ec_; }

  /// Sends `req` (Host and Content-Length filled in) and reads the response.
  std::optional<http_response> send(http::request<http::string_body> req) {
    req.set(http::field::host, "127.0.0.1");
    req.prepare_payload();
    stream_.expires_after(io_deadline);
    http::async_write(stream_, req, [this](beast::error_code ec, std::size_t) { ec_ = ec; });
    run();
    if (ec_) return std::nullopt;
    return read(req.method() == http::verb::head);
  }

  std::optional<http_response> get(std::string target) {
    return send(http::request<http::string_body>(http::verb::get, target, 11));
  }

  std::optional<http_response> request(http::verb verb, std::string target, std::string body = {},
                                       std::string content_type = "application/json") {
    http::request<http::string_body> req(verb, target, 11);
    req.body() = std::move(body);
    if (!req.body().empty()) req.set(http::field::content_type, content_type);
    return send(std::move(req));
  }

  /// Writes bytes as they are, for requests no well-behaved client would send.
  beast::error_code write_raw(std::string bytes) {
    raw_ = std::move(bytes);
    stream_.expires_after(io_deadline);
    asio::async_write(stream_, asio::buffer(raw_), [this](beast::error_code ec, std::size_t) { ec_ = ec; });
    run();
    return ec_;
  }

  std::optional<http_response> read(bool head = false) {
    http::response_parser<http::string_body> parser;
    parser.skip(head);  // a response to HEAD has a Content-Length but no body
    parser.body_limit(64 * 1024 * 1024);
    stream_.expires_after(io_deadline);
    http::async_read(stream_, buffer_, parser, [this](beast::error_code ec, std::size_t) { ec_ = ec; });
    run();
    if (ec_) return std::nullopt;
    return parser.release();
  }

  /// True when the server closes the connection (EOF or reset) before the deadline.
  bool closed_by_server(std::chrono::milliseconds deadline = 5000ms) {
    stream_.expires_after(deadline);
    char byte = 0;
    stream_.async_read_some(asio::buffer(&byte, 1), [this](beast::error_code ec, std::size_t) { ec_ = ec; });
    run();
    return ec_ && ec_ != beast::error::timeout;
  }

  [[nodiscard]] beast::error_code last_error() const { return ec_; }

 private:
  void run() {
    ioc_.restart();
    ioc_.run();
  }

  asio::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buffer_;
  beast::error_code ec_;
  std::string raw_;
};

boost::json::object json_body(const http_response& res) {
  return boost::json::parse(res.body()).as_object();
}

/// A Beast WebSocket client driven the same way as http_client.
class ws_client {
 public:
  explicit ws_client(std::uint16_t port, std::string target = "/ws", std::optional<int> receive_buffer = {}) {
    auto& socket = beast::get_lowest_layer(ws_).socket();
    socket.open(tcp::v4());
    // A small receive buffer makes a client that stops reading fill up quickly.
    if (receive_buffer) socket.set_option(asio::socket_base::receive_buffer_size(*receive_buffer));
    beast::get_lowest_layer(ws_).expires_after(io_deadline);
    beast::get_lowest_layer(ws_).async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                                               [this](beast::error_code ec) { ec_ = ec; });
    run();
    if (ec_) return;
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(ws::stream_base::timeout{.handshake_timeout = io_deadline,
                                            .idle_timeout = ws::stream_base::none(),
                                            .keep_alive_pings = false});
    ws_.control_callback([this](ws::frame_type kind, beast::string_view) {
      if (kind == ws::frame_type::ping) pings.fetch_add(1);
    });
    ws_.async_handshake("127.0.0.1", target, [this](beast::error_code ec) { ec_ = ec; });
    run();
  }

  [[nodiscard]] beast::error_code error() const { return ec_; }

  beast::error_code write(const std::string& text) {
    ws_.async_write(asio::buffer(text), [this](beast::error_code ec, std::size_t) { ec_ = ec; });
    run();
    return ec_;
  }

  /// One message, or nullopt on error (see error() and close_code()).
  std::optional<std::string> read() {
    buffer_.clear();
    ws_.async_read(buffer_, [this](beast::error_code ec, std::size_t) { ec_ = ec; });
    if (!run_for(io_deadline)) return std::nullopt;
    if (ec_) return std::nullopt;
    return beast::buffers_to_string(buffer_.data());
  }

  [[nodiscard]] std::uint16_t close_code() const { return ws_.reason().code; }

  void close() {
    ws_.async_close(ws::close_code::normal, [this](beast::error_code ec) { ec_ = ec; });
    run_for(io_deadline);
  }

  std::atomic<int> pings{0};

 private:
  void run() {
    ioc_.restart();
    ioc_.run();
  }
  bool run_for(std::chrono::milliseconds d) {
    ioc_.restart();
    ioc_.run_for(d);
    if (ioc_.stopped()) return true;
    ec_ = beast::error::timeout;
    return false;
  }

  asio::io_context ioc_;
  ws::stream<beast::tcp_stream> ws_{ioc_};
  beast::flat_buffer buffer_;
  beast::error_code ec_;
};

/// Runs `promtool check metrics` on `text`; the test fails when promtool is missing.
int promtool_check(const std::string& text, std::string& output) {
  auto ran = keel::test::run_command("promtool check metrics", text);
  output += ran.output;
  return ran.status;
}

std::optional<std::string> metric_line(const std::string& text, const std::string& prefix) {
  std::size_t at = 0;
  while (at < text.size()) {
    const auto end = text.find('\n', at);
    const auto line = text.substr(at, end - at);
    if (line.rfind(prefix + " ", 0) == 0) return line.substr(prefix.size() + 1);
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return std::nullopt;
}

keel::net::response text(std::string body) {
  return keel::net::text_response(std::move(body));
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("routes dispatch by method and path with decoded parameters") {
    keel::net::server s(test_options());
    s.get("/jobs/{id}", [](const keel::net::request& r) {
      return text("job " + std::string(r.path_param("id").value_or("?")) +
                  " verbose=" + std::string(r.query_param("verbose").value_or("-")));
    });
    s.get("/jobs/stats", [](const keel::net::request&) { return text("stats"); });
    s.delete_("/jobs/{id}", [](const keel::net::request& r) {
      return keel::net::response{.status = keel::net::status::no_content, .headers = {}, .body = {}};
      (void)r;
    });
    s.post("/jobs", keel::net::json_handler([](const keel::net::request&, const boost::json::value& body) {
             return keel::net::json_response(boost::json::object{{"queued", body.at("kind")}},
                                             keel::net::status::created);
           }));
    s.get("/boom", [](const keel::net::request&) -> keel::net::response { throw std::runtime_error("bug"); });
    start(s);

    http_client c(s.port());
    auto res = c.get("/jobs/a%20b?verbose=yes%21&x=1");
    REQUIRE(res);
    CHECK(res->result_int() == 200);
    CHECK(res->body() == "job a b verbose=yes!");
    CHECK((*res)[http::field::content_type] == "text/plain; charset=utf-8");

    res = c.get("/jobs/stats");
    REQUIRE(res);
    CHECK(res->body() == "stats");

    res = c.request(http::verb::post, "/jobs", R"({"kind":"email"})");
    REQUIRE(res);
    CHECK(res->result_int() == 201);
    CHECK(res->body() == R"({"queued":"email"})");

    res = c.request(http::verb::delete_, "/jobs/7");
    REQUIRE(res);
    CHECK(res->result_int() == 204);

    res = c.send(http::request<http::string_body>(http::verb::head, "/jobs/1", 11));
    REQUIRE(res);
    CHECK(res->result_int() == 200);
    CHECK(res->body().empty());

    res = c.get("/boom");
    REQUIRE(res);
    CHECK(res->result_int() == 500);
    CHECK(json_body(*res).at("error").as_string() == "internal server error");

    CHECK(c.get("/healthz")->result_int() == 200);
  }

  TEST_CASE("bad requests get clear answers: 400, 404, 405, 413, 431") {
    keel::net::server s(test_options());
    s.get("/jobs/{id}", [](const keel::net::request&) { return text("job"); });
    s.delete_("/jobs/{id}", [](const keel::net::request&) { return text("gone"); });
    s.post("/echo", keel::net::json_handler([](const keel::net::request&, const boost::json::value& v) {
             return keel::net::json_response(v);
           }));
    start(s);

    SUBCASE("404 for an unknown path, with a JSON error") {
      http_client c(s.port());
      const auto res = c.get("/nope");
      REQUIRE(res);
      CHECK(res->result_int() == 404);
      CHECK((*res)[http::field::content_type] == "application/json");
      const auto body = json_body(*res);
      CHECK(body.at("error").as_string() == "not found");
      CHECK(body.at("detail").as_string().size() > 0);
      CHECK(c.get("/jobs/1")->result_int() == 200);  // the connection stays usable
    }
    SUBCASE("405 with Allow for a known path and a wrong method") {
      http_client c(s.port());
      const auto res = c.request(http::verb::put, "/jobs/1", "{}");
      REQUIRE(res);
      CHECK(res->result_int() == 405);
      CHECK((*res)[http::field::allow] == "GET, HEAD, DELETE");
      CHECK(json_body(*res).at("error").as_string() == "method not allowed");
    }
    SUBCASE("400 for a malformed JSON body") {
      http_client c(s.port());
      const auto res = c.request(http::verb::post, "/echo", R"({"a": )");
      REQUIRE(res);
      CHECK(res->result_int() == 400);
      CHECK(json_body(*res).at("error").as_string() == "invalid json");
    }
    SUBCASE("400 for a malformed request line, then the connection closes") {
      http_client c(s.port());
      REQUIRE_FALSE(c.write_raw("this is not http\r\n\r\n"));
      const auto res = c.read();
      REQUIRE(res);
      CHECK(res->result_int() == 400);
      CHECK(json_body(*res).at("error").as_string() == "bad request");
      CHECK_FALSE(res->keep_alive());
      CHECK(c.closed_by_server());
    }
    SUBCASE("413 for a body over max_body_bytes") {
      http_client c(s.port());
      const auto res = c.request(http::verb::post, "/echo", "[" + std::string(4000, ' ') + "]");
      REQUIRE(res);
      CHECK(res->result_int() == 413);
      CHECK(json_body(*res).at("detail").as_string().find("max_body_bytes") != std::string::npos);
    }
    SUBCASE("431 for headers over max_header_bytes") {
      http_client c(s.port());
      http::request<http::string_body> req(http::verb::get, "/jobs/1", 11);
      req.set("X-Large", std::string(8000, 'x'));
      const auto res = c.send(std::move(req));
      REQUIRE(res);
      CHECK(res->result_int() == 431);
    }
    SUBCASE("400 for a path that climbs out with '..', plain or encoded") {
      for (const auto* target : {"/jobs/../etc/passwd", "/jobs/%2e%2e/x", "/a/%2E%2E%2Fb"}) {
        http_client c(s.port());
        const auto res = c.get(target);
        REQUIRE(res);
        CHECK(res->result_int() == 400);
      }
    }
  }

  TEST_CASE("a client that stalls mid-request is closed after read_timeout") {
    keel::net::server s(test_options());
    s.get("/", [](const keel::net::request&) { return text("hi"); });
    start(s);
    http_client slow(s.port());
    const auto began = std::chrono::steady_clock::now();
    REQUIRE_FALSE(slow.write_raw("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: "));
    CHECK(slow.closed_by_server(3000ms));
    const auto waited = std::chrono::steady_clock::now() - began;
    CHECK(waited >= 250ms);
    CHECK(waited < 3000ms);

    // A connection that sends nothing at all is closed the same way.
    http_client silent(s.port());
    CHECK(silent.closed_by_server(3000ms));
    // Meanwhile the server answers others.
    http_client other(s.port());
    CHECK(other.get("/")->body() == "hi");
  }

  TEST_CASE("a client trickling one byte per 100 ms is cut off at the read deadline; others are served") {
    auto options = test_options();
    options.read_timeout = 600ms;
    keel::net::server s(options);
    std::atomic<int> calls{0};
    s.get("/", [&](const keel::net::request&) {
      calls.fetch_add(1);
      return text("hi");
    });
    start(s);
    const std::string request =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + std::string(40, 'p') + "\r\n\r\n";
    const auto began = std::chrono::steady_clock::now();
    auto trickle = std::async(std::launch::async, [&] {
      http_client slow(s.port());
      // Pacing is the behaviour under test here, not a wait for some state.
      for (const char byte : request) {
        if (slow.write_raw(std::string(1, byte))) return std::chrono::steady_clock::now() - began;
        std::this_thread::sleep_for(100ms);
      }
      return std::chrono::steady_clock::duration::max();  // sent the whole request: not cut off
    });
    int served = 0;
    while (trickle.wait_for(0ms) != std::future_status::ready) {
      http_client other(s.port());
      const auto res = other.get("/");
      REQUIRE(res);
      CHECK(res->body() == "hi");
      ++served;
    }
    const auto cut_after = trickle.get();
    CHECK(cut_after >= 550ms);
    CHECK(cut_after < 3000ms);  // the whole request would take 6 s
    CHECK(served > 0);
    CHECK(calls.load() == served);  // the trickled request never reached the handler
  }

  TEST_CASE("Transfer-Encoding other than a final chunked is refused: 400 and close, nothing smuggled") {
    keel::net::server s(test_options());
    std::atomic<int> smuggled{0};
    s.post("/echo", [](const keel::net::request& req) { return text(req.body); });
    s.get("/smuggled", [&](const keel::net::request&) {
      smuggled.fetch_add(1);
      return text("smuggled");
    });
    start(s);
    const std::string second = "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    const auto chunked_body = "5\r\nhello\r\n0\r\n\r\n";
    struct refused {
      const char* transfer_encoding;
      const char* extra_headers;
      unsigned status;
    };
    for (const refused& r :
         {refused{"xchunked", "", 400}, refused{"chunked, identity", "", 400}, refused{"identity", "", 400},
          refused{"chunked, chunked", "", 400}, refused{"gzip, chunked", "", 501},
          refused{"chunked", "Content-Length: 17\r\n", 400}, refused{";, chunked", "", 400},
          refused{";x=1 , chunked", "", 400}, refused{"chunked;x=1", "", 400}, refused{", chunked", "", 400},
          refused{"chunked,", "", 400}}) {
      INFO("Transfer-Encoding: ", r.transfer_encoding, " ", r.extra_headers);
      http_client c(s.port());
      REQUIRE_FALSE(c.write_raw(std::string("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: ") +
                                r.transfer_encoding + "\r\n" + r.extra_headers + "\r\n" + chunked_body +
                                second));
      const auto res = c.read();
      REQUIRE(res);
      CHECK(res->result_int() == r.status);
      CHECK_FALSE(res->keep_alive());
      CHECK(c.closed_by_server());
    }
    // Two Transfer-Encoding lines are one list: "chunked" then "xchunked" is not final chunked.
    {
      http_client c(s.port());
      REQUIRE_FALSE(
          c.write_raw("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                      "Transfer-Encoding: xchunked\r\n\r\n" +
                      second));
      const auto res = c.read();
      REQUIRE(res);
      CHECK(res->result_int() == 400);
      CHECK(c.closed_by_server());
    }
    CHECK(smuggled.load() == 0);
    // A plain chunked body still works, and so does the connection after it.
    http_client ok(s.port());
    REQUIRE_FALSE(ok.write_raw(
        std::string("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: Chunked\r\n\r\n") +
        chunked_body));
    const auto res = ok.read();
    REQUIRE(res);
    CHECK(res->result_int() == 200);
    CHECK(res->body() == "hello");
    CHECK(ok.get("/smuggled")->result_int() == 200);
  }

  TEST_CASE("HTTP/1.1 needs exactly one Host header; HTTP/1.0 may omit it") {
    keel::net::server s(test_options());
    s.get("/", [](const keel::net::request&) { return text("hi"); });
    start(s);
    for (const char* head :
         {"GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
          "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
          "GET / HTTP/1.1\r\nHost: x/y@z\r\n\r\n", "GET / HTTP/1.1\r\nHost: example.com:80x\r\n\r\n",
          "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", "GET / HTTP/1.1\r\nHost: ex%zzample\r\n\r\n"}) {
      INFO(head);
      http_client c(s.port());
      REQUIRE_FALSE(c.write_raw(head));
      const auto res = c.read();
      REQUIRE(res);
      CHECK(res->result_int() == 400);
      CHECK(json_body(*res).at("detail").as_string().find("Host") != std::string::npos);
      CHECK(c.closed_by_server());
    }
    for (const char* host :
         {"127.0.0.1:8080", "[::1]:443", "example.com", "xn--bcher-kva.example", "a%41b", ""}) {
      INFO("Host: ", host);
      http_client c(s.port());
      REQUIRE_FALSE(c.write_raw(std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\n\r\n"));
      const auto res = c.read();
      REQUIRE(res);
      CHECK(res->result_int() == 200);
    }
    http_client old(s.port());
    REQUIRE_FALSE(old.write_raw("GET / HTTP/1.0\r\n\r\n"));
    const auto res = old.read();
    REQUIRE(res);
    CHECK(res->result_int() == 200);
  }

  TEST_CASE("keep-alive serves many requests on one connection") {
    keel::net::server s(test_options());
    std::atomic<int> calls{0};
    s.get("/n", [&](const keel::net::request&) { return text(std::to_string(calls.fetch_add(1))); });
    start(s);
    http_client c(s.port());
    for (int i = 0; i < 200; ++i) {
      const auto res = c.get("/n");
      REQUIRE(res);
      CHECK(res->keep_alive());
      CHECK(res->body() == std::to_string(i));
    }
    CHECK(s.connections() == 1);
  }

  TEST_CASE("connections over max_connections are answered 503") {
    auto options = test_options();
    options.max_connections = 2;
    keel::net::server s(options);
    s.get("/", [](const keel::net::request&) { return text("hi"); });
    start(s);
    auto a = std::make_unique<http_client>(s.port());
    http_client b(s.port());
    REQUIRE(a->get("/"));
    REQUIRE(b.get("/"));
    REQUIRE(eventually([&] { return s.connections() == 2; }));
    {
      http_client c(s.port());
      const auto res = c.get("/");
      REQUIRE(res);
      CHECK(res->result_int() == 503);
      CHECK(json_body(*res).at("detail").as_string().find("max_connections") != std::string::npos);
    }
    a.reset();
    REQUIRE(eventually([&] { return s.connections() == 1; }));
    http_client d(s.port());
    const auto res = d.get("/");
    REQUIRE(res);
    CHECK(res->result_int() == 200);
    CHECK(s.metrics().expose().find("http_connections_rejected_total 1\n") != std::string::npos);
  }

  TEST_CASE("a connection over max_connections is refused at accept, before it sends anything") {
    auto options = test_options();
    options.max_connections = 2;
    options.read_timeout = 30s;  // idle sockets would hold their slots this long
    keel::net::server s(options);
    s.get("/", [](const keel::net::request&) { return text("hi"); });
    start(s);
    http_client a(s.port());
    http_client b(s.port());
    REQUIRE(eventually([&] { return s.connections() == 2; }));
    // Hundreds of silent sockets over the cap are answered and closed at once: none of them
    // holds a slot, so the count stays at the two admitted connections.
    std::vector<std::unique_ptr<http_client>> flood;
    for (int i = 0; i < 300; ++i) flood.push_back(std::make_unique<http_client>(s.port()));
    for (auto& c : flood) {
      const auto res = c->read();
      REQUIRE(res);
      CHECK(res->result_int() == 503);
      CHECK(c->closed_by_server());
    }
    CHECK(s.connections() == 2);
    CHECK(s.metrics().expose().find("http_connections_rejected_total 300\n") != std::string::npos);
  }

  TEST_CASE("max_connections_per_client keeps one address from taking every slot") {
    auto options = test_options();
    options.max_connections = 64;
    options.max_connections_per_client = 8;
    options.read_timeout = 30s;
    keel::net::server s(options);
    s.get("/healthz-like", [](const keel::net::request&) { return text("alive"); });
    start(s);
    std::vector<std::unique_ptr<http_client>> idle;
    for (int i = 0; i < 8; ++i) idle.push_back(std::make_unique<http_client>(s.port(), "127.0.0.1"));
    REQUIRE(eventually([&] { return s.connections() == 8; }));
    std::vector<std::unique_ptr<http_client>> flood;
    for (int i = 0; i < 200; ++i) flood.push_back(std::make_unique<http_client>(s.port(), "127.0.0.1"));
    for (auto& c : flood) {
      const auto res = c->read();
      REQUIRE(res);
      CHECK(res->result_int() == 429);
      CHECK(json_body(*res).at("detail").as_string().find("max_connections_per_client") != std::string::npos);
      CHECK(c->closed_by_server());
    }
    CHECK(s.connections() == 8);
    // Another client is served at once.
    http_client other(s.port(), "127.0.0.2");
    const auto res = other.get("/healthz-like");
    REQUIRE(res);
    CHECK(res->body() == "alive");
    // A slot given back is usable by the same address again.
    idle.pop_back();
    REQUIRE(eventually([&] { return s.connections() == 8; }));  // seven idle and `other`
    http_client again(s.port(), "127.0.0.1");
    CHECK(again.get("/healthz-like")->body() == "alive");
  }

  TEST_CASE("graceful shutdown finishes in-flight requests and refuses new connections") {
    keel::net::server s(test_options());
    std::mutex m;
    std::condition_variable cv;
    bool entered = false;
    bool release = false;
    s.get("/slow", [&](const keel::net::request&) {
      std::unique_lock lock(m);
      entered = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      return text("finished");
    });
    s.get("/fast", [](const keel::net::request&) { return text("fast"); });
    start(s);
    const auto port = s.port();

    http_client idle(port);
    REQUIRE(idle.get("/fast"));
    auto in_flight = std::async(std::launch::async, [port] {
      http_client c(port);
      return c.get("/slow");
    });
    {
      std::unique_lock lock(m);
      REQUIRE(cv.wait_for(lock, 5s, [&] { return entered; }));
    }
    s.stop();
    // The idle keep-alive connection is closed, and new connections are refused.
    CHECK(idle.closed_by_server());
    CHECK(eventually([&] { return static_cast<bool>(http_client(port).connect_error()); }));
    {
      std::lock_guard lock(m);
      release = true;
    }
    cv.notify_all();
    const auto res = in_flight.get();
    REQUIRE(res);
    CHECK(res->result_int() == 200);
    CHECK(res->body() == "finished");
    CHECK_FALSE(res->keep_alive());
    s.wait();
    CHECK(s.connections() == 0);
  }

  TEST_CASE("SIGTERM stops a server that opted in to signal handling") {
    auto options = test_options();
    options.handle_signals = true;
    keel::net::server s(options);
    start(s);
    std::raise(SIGTERM);
    s.wait();
    CHECK(static_cast<bool>(http_client(s.port()).connect_error()));
  }

  TEST_CASE("static files have content types and validators, and refuse traversal") {
    const auto root = std::filesystem::temp_directory_path() /
                      ("keel_net_static_" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(root / "ui" / "css");
    const auto write = [](const std::filesystem::path& p, const std::string& content) {
      std::ofstream out(p, std::ios::binary);
      out << content;
    };
    write(root / "ui" / "index.html", "<h1>jobs</h1>");
    write(root / "ui" / "app.js", "console.log(1)");
    write(root / "ui" / "css" / "site.css", "body{}");
    write(root / "ui" / "blob.bin", std::string("\0\1\2", 3));
    write(root / "secret.txt", "do not serve");

    keel::net::server s(test_options());
    s.serve_static("/ui", root / "ui");
    start(s);
    http_client c(s.port());

    auto res = c.get("/ui/");
    REQUIRE(res);
    CHECK(res->result_int() == 200);
    CHECK(res->body() == "<h1>jobs</h1>");
    CHECK((*res)[http::field::content_type] == "text/html; charset=utf-8");
    res = c.get("/ui/app.js");
    CHECK((*res)[http::field::content_type] == "text/javascript; charset=utf-8");
    res = c.get("/ui/css/site.css");
    CHECK((*res)[http::field::content_type] == "text/css; charset=utf-8");
    res = c.get("/ui/blob.bin");
    CHECK((*res)[http::field::content_type] == "application/octet-stream");
    CHECK(res->body().size() == 3);

    const std::string etag((*res)[http::field::etag]);
    CHECK_FALSE(etag.empty());
    CHECK_FALSE((*res)[http::field::last_modified].empty());
    http::request<http::string_body> conditional(http::verb::get, "/ui/blob.bin", 11);
    conditional.set(http::field::if_none_match, etag);
    res = c.send(conditional);
    REQUIRE(res);
    CHECK(res->result_int() == 304);
    CHECK(res->body().empty());

    CHECK(c.get("/ui/missing.js")->result_int() == 404);
    CHECK(c.request(http::verb::post, "/ui/app.js", "{}")->result_int() == 405);
    for (const auto* target : {"/ui/../secret.txt", "/ui/%2e%2e/secret.txt", "/ui/css/../../secret.txt"}) {
      http_client t(s.port());
      const auto refused = t.get(target);
      REQUIRE(refused);
      CHECK(refused->result_int() == 400);
      CHECK(refused->body().find("do not serve") == std::string::npos);
    }
    s.stop();
    s.wait();
    std::filesystem::remove_all(root);
  }

  TEST_CASE("middleware run in order and can short-circuit") {
    keel::net::server s(test_options());
    std::mutex m;
    std::vector<std::string> trace;
    const auto note = [&](std::string what) {
      std::lock_guard lock(m);
      trace.push_back(std::move(what));
    };
    s.use([&](keel::net::request& req, const keel::net::next_handler& next) {
      note("outer in " + req.route);
      auto res = next(req);
      res.headers.set("X-Outer", "1");
      note("outer out");
      return res;
    });
    s.use([&](keel::net::request& req, const keel::net::next_handler& next) {
      note("auth");
      if (req.headers.get("Authorization") != "Bearer good") {
        return keel::net::error_response(keel::net::status::unauthorized, "unauthorized", "send a token");
      }
      req.attributes["user"] = "ada";
      return next(req);
    });
    s.get("/me", [&](const keel::net::request& req) {
      note("handler");
      return text(std::string(req.attribute("user").value_or("nobody")));
    });
    start(s);
    http_client c(s.port());

    http::request<http::string_body> req(http::verb::get, "/me", 11);
    req.set(http::field::authorization, "Bearer good");
    auto res = c.send(req);
    REQUIRE(res);
    CHECK(res->body() == "ada");
    CHECK((*res)["X-Outer"] == "1");
    {
      std::lock_guard lock(m);
      CHECK(trace == std::vector<std::string>{"outer in /me", "auth", "handler", "outer out"});
      trace.clear();
    }

    res = c.get("/me");
    REQUIRE(res);
    CHECK(res->result_int() == 401);
    CHECK((*res)["X-Outer"] == "1");
    {
      std::lock_guard lock(m);
      CHECK(trace == std::vector<std::string>{"outer in /me", "auth", "outer out"});
      trace.clear();
    }

    // Unknown paths go through the chain too (route is empty), so limits and auth apply to them.
    res = c.get("/unknown");
    REQUIRE(res);
    CHECK(res->result_int() == 401);
    std::lock_guard lock(m);
    CHECK(trace.front() == "outer in ");
  }

  TEST_CASE("readiness checks decide /readyz; /healthz is liveness") {
    keel::net::server s(test_options());
    std::atomic<bool> database_up{false};
    s.add_readiness_check("database", [&] {
      return database_up.load() ? keel::net::readiness{.ready = true, .detail = {}}
                                : keel::net::readiness{.ready = false, .detail = "connection refused"};
    });
    start(s);
    http_client c(s.port());
    auto res = c.get("/readyz");
    REQUIRE(res);
    CHECK(res->result_int() == 503);
    CHECK(json_body(*res).at("checks").at("database").as_string() == "connection refused");
    database_up = true;
    res = c.get("/readyz");
    CHECK(res->result_int() == 200);
    CHECK(json_body(*res).at("status").as_string() == "ready");
    CHECK(c.get("/healthz")->result_int() == 200);
  }

  TEST_CASE("state owned by handlers is destroyed while the server's metrics are still alive") {
    // A background worker kept alive by a route reports to a metrics family until it is stopped
    // in its destructor; under ASan a wrong destruction order is a use-after-free here.
    struct reporter {
      keel::metrics::counter_family& finished;
      ~reporter() { finished.labels({"stopped"}).inc(); }
    };
    bool destroyed = false;
    {
      keel::net::server s(test_options());
      auto owned = std::shared_ptr<reporter>(
          new reporter{s.metrics().add_counter("test_workers_total", "Workers stopped.", {"how"})},
          [&destroyed](reporter* r) {
            delete r;
            destroyed = true;
          });
      s.get("/owned", [owned](const keel::net::request&) { return keel::net::text_response("ok"); });
    }
    CHECK(destroyed);
  }

  TEST_CASE("start reports bad addresses and ports in use") {
    auto options = test_options();
    options.address = "not an address";
    keel::net::server bad(options);
    const auto r = bad.start();
    REQUIRE(r.has_error());
    CHECK(r.error() == keel::net::errc::invalid_address);

    keel::net::server first(test_options());
    start(first);
    CHECK(first.start().error() == keel::net::errc::already_started);
    options = test_options();
    options.port = first.port();
    keel::net::server second(options);
    CHECK(second.start().has_error());
  }

  TEST_CASE("metrics: exact counts after known requests, and promtool accepts the format") {
    keel::net::server s(test_options());
    s.get("/jobs/{id}", [](const keel::net::request&) { return text("job"); });
    auto& custom = s.metrics().add_counter("keel_test_events_total", "Events with awkward labels.", {"kind"});
    custom.labels({"quote\" backslash\\ newline\n"}).inc(2);
    s.metrics().add_histogram("keel_test_sizes_bytes", "Sizes.", {}, {10, 100}).get().observe(50);
    start(s);
    http_client c(s.port());
    for (int i = 0; i < 3; ++i) REQUIRE(c.get("/jobs/" + std::to_string(i))->result_int() == 200);
    REQUIRE(c.get("/nope")->result_int() == 404);
    REQUIRE(c.request(http::verb::post, "/jobs/1", "{}")->result_int() == 405);

    const auto res = c.get("/metrics");
    REQUIRE(res);
    CHECK((*res)[http::field::content_type] == "text/plain; version=0.0.4; charset=utf-8");
    const auto& body = res->body();
    CHECK(metric_line(body, R"(http_requests_total{method="GET",route="/jobs/{id}",status="200"})") == "3");
    CHECK(metric_line(body, R"(http_requests_total{method="GET",route="unmatched",status="404"})") == "1");
    CHECK(metric_line(body, R"(http_requests_total{method="POST",route="unmatched",status="405"})") == "1");
    CHECK(metric_line(body, R"(http_request_duration_seconds_count{method="GET",route="/jobs/{id}"})") ==
          "3");
    CHECK(metric_line(body,
                      R"(http_request_duration_seconds_bucket{method="GET",route="/jobs/{id}",le="+Inf"})") ==
          "3");
    CHECK(metric_line(body, "http_open_connections") == "1");
    CHECK(metric_line(body, R"(keel_test_events_total{kind="quote\" backslash\\ newline\n"})") == "2");
    CHECK(metric_line(body, R"(keel_test_sizes_bytes_bucket{le="10"})") == "0");
    CHECK(metric_line(body, R"(keel_test_sizes_bytes_bucket{le="100"})") == "1");
    CHECK(metric_line(body, R"(keel_test_sizes_bytes_sum)") == "50");
    CHECK(body.find("# TYPE http_request_duration_seconds histogram\n") != std::string::npos);

    std::string output;
    const int status = promtool_check(body, output);
    INFO("promtool output: " << output);
    REQUIRE_MESSAGE(status != -1, "could not run promtool; ./keel setup installs it");
    CHECK_MESSAGE(status == 0,
                  "promtool check metrics failed (exit status " << status << "); is promtool installed?");
  }

  TEST_CASE("WebSocket echoes 10,000 messages in order") {
    keel::net::server s(test_options());
    s.websocket("/ws", keel::net::websocket_handler{
                           .on_open = {},
                           .on_message =
                               [](const keel::net::websocket_connection& c, std::string_view msg, bool) {
                                 // A dropped echo shows below as a missing message.
                                 static_cast<void>(c.send(std::string(msg)));
                               },
                           .on_close = {}});
    start(s);
    ws_client c(s.port());
    REQUIRE_FALSE(c.error());
    for (int i = 0; i < 10'000; ++i) {
      const auto msg = "message " + std::to_string(i);
      REQUIRE_FALSE(c.write(msg));
      const auto echo = c.read();
      REQUIRE(echo);
      REQUIRE(*echo == msg);
    }
    c.close();

    // A plain GET to a WebSocket route is told to upgrade.
    http_client plain(s.port());
    CHECK(plain.get("/ws")->result_int() == 426);
  }

  TEST_CASE("a slow consumer is closed with 1008 while the room keeps receiving broadcasts") {
    auto options = test_options();
    options.websocket.max_queued_messages = 32;
    keel::net::server s(options);
    std::atomic<int> opened{0};
    s.websocket("/ws", keel::net::websocket_handler{.on_open =
                                                        [&](const keel::net::websocket_connection& c) {
                                                          c.join("room");
                                                          opened.fetch_add(1);
                                                        },
                                                    .on_message = {},
                                                    .on_close = {}});
    start(s);
    auto& slow_closed = s.metrics()
                            .add_counter("websocket_slow_consumers_closed_total",
                                         "WebSocket connections closed with 1008 because their write "
                                         "queue was full.")
                            .get();

    ws_client slow(s.port(), "/ws", 4096);
    REQUIRE_FALSE(slow.error());
    std::atomic<int> received{0};
    std::atomic<bool> good_closed{false};
    auto good = std::make_unique<ws_client>(s.port());
    REQUIRE_FALSE(good->error());
    REQUIRE(eventually([&] { return opened.load() == 2; }));
    std::thread reader([&] {
      while (good->read()) received.fetch_add(1);
      good_closed = true;
    });

    // Broadcast until the slow client (which never reads) overflows its queue; the good client
    // paces the loop so that only the slow one can fall behind.
    const std::string payload(2048, 'x');
    int sent = 0;
    while (slow_closed.value() == 0 && sent < 50'000) {
      s.broadcast("room", payload);
      ++sent;
      REQUIRE(eventually([&] { return received.load() >= sent - 8 || good_closed.load(); }));
      REQUIRE_FALSE(good_closed.load());
    }
    REQUIRE(slow_closed.value() == 1);
    // The room goes on: every further broadcast reaches the good client, and only it.
    for (int i = 0; i < 100; ++i) {
      CHECK(s.broadcast("room", "after " + std::to_string(i)) == 1);
      ++sent;
      REQUIRE(eventually([&] { return received.load() >= sent - 8; }));
    }
    CHECK(eventually([&] { return received.load() == sent; }));

    // When the slow client reads again it finds what was in flight, then a 1008 close.
    int drained = 0;
    while (slow.read()) ++drained;
    CHECK(slow.error() == ws::error::closed);
    CHECK(slow.close_code() == 1008);
    CHECK(drained < sent);

    s.stop();
    reader.join();
    CHECK(good->close_code() == 1001);  // going away: the server shut down
  }

  TEST_CASE("WebSocket pings keep a responsive client connected and drop an unresponsive one") {
    auto options = test_options();
    options.websocket.idle_timeout = 200ms;
    keel::net::server s(options);
    s.websocket("/ws", keel::net::websocket_handler{});
    start(s);
    ws_client responsive(s.port());
    REQUIRE_FALSE(responsive.error());
    // Reading lets the client answer pings; it sends nothing for many idle timeouts.
    std::thread reader([&] {
      while (responsive.read()) {
      }
    });
    {
      // This one never reads, so it never answers a ping: the server drops it.
      ws_client unresponsive(s.port());
      REQUIRE_FALSE(unresponsive.error());
      CHECK(eventually([&] { return s.connections() == 2; }));
      CHECK(eventually([&] { return s.connections() == 1; }, 3000ms));
    }
    CHECK(eventually([&] { return responsive.pings.load() >= 4; }, 5000ms));
    CHECK(s.connections() == 1);
    // The server's shutdown close (1001) reaching the client proves it was still connected.
    s.stop();
    reader.join();
    CHECK(responsive.close_code() == 1001);
  }
}
