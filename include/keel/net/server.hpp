#pragma once
/// @file keel/net/server.hpp
/// @brief The HTTP/1.1 + WebSocket server: routes, middleware, static files, health and
/// metrics endpoints, limits, timeouts and graceful shutdown.
#include <keel/core/metrics.hpp>
#include <keel/core/result.hpp>
#include <keel/net/http.hpp>
#include <keel/net/router.hpp>
#include <keel/net/websocket.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace keel::net {

/// How a server listens, what it accepts and how long it waits.
struct server_options {
  /// The IP address to listen on. Loopback by default; "0.0.0.0" or "::" for every interface.
  std::string address = "127.0.0.1";
  /// The TCP port; 0 picks a free one (see server::port()).
  std::uint16_t port = 8080;
  /// Threads running I/O and handlers. A handler that blocks occupies one of them.
  unsigned threads = 4;
  /// Open connections (HTTP and WebSocket) beyond which a new one is answered 503 and closed
  /// at once, before anything is read from it.
  std::size_t max_connections = 1024;
  /// Open connections from one remote address beyond which a new one from it is answered 429
  /// and closed at once; 0 for no per-address limit. Behind a reverse proxy every client has the
  /// proxy's address: raise this or set it to 0 there.
  std::size_t max_connections_per_client = 256;
  /// Request line plus headers; larger requests are answered 431.
  std::size_t max_header_bytes = std::size_t{16} * 1024;
  /// Request body; larger bodies are answered 413.
  std::size_t max_body_bytes = std::size_t{1024} * 1024;
  /// Time from a request's first byte to its last. A client that stalls mid-request is closed.
  std::chrono::milliseconds read_timeout = std::chrono::seconds(10);
  /// Time a keep-alive connection may wait for its next request.
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(30);
  /// Time to write one response.
  std::chrono::milliseconds write_timeout = std::chrono::seconds(10);
  /// On stop(), time in-flight requests get to finish before every connection is cut.
  std::chrono::milliseconds shutdown_timeout = std::chrono::seconds(10);
  /// Stop gracefully on SIGINT and SIGTERM. Off by default: a library does not take signals
  /// unless asked.
  bool handle_signals = false;
  /// Paths of the built-in endpoints; an empty path turns the endpoint off.
  std::string metrics_path = "/metrics";
  std::string health_path = "/healthz";
  std::string ready_path = "/readyz";
  /// Where metrics live; the server makes its own registry when null. Share one to expose
  /// metrics of other components at the same /metrics.
  std::shared_ptr<metrics::registry> metrics{};
  websocket_options websocket{};
};

/// What a readiness check found; `detail` is shown in the /readyz answer.
struct readiness {
  bool ready = true;
  std::string detail{};
};

/// A readiness check, e.g. "database reachable". It runs on a server thread for each /readyz
/// request, so it should answer within a fraction of a second.
using readiness_check = std::function<readiness()>;

/// Static file serving options.
struct static_options {
  /// Served for a directory (including the mount point itself).
  std::string index = "index.html";
  /// Cache-Control of every file; empty for none. Files carry an ETag and Last-Modified, and a
  /// matching If-None-Match is answered 304.
  std::string cache_control = "no-cache";
};

/// An HTTP/1.1 and WebSocket server on a pool of threads.
///
/// Configure routes, middleware and WebSocket routes, then start(). Requests are parsed with
/// limits and timeouts (see server_options); bad ones get a JSON error
/// `{"error":"...","detail":"..."}`: 400 malformed, 404 unknown path, 405 wrong method (with
/// Allow), 413 body too large, 431 headers too large, 503 too many connections. Built-in
/// endpoints: /metrics (Prometheus), /healthz (liveness), /readyz (readiness checks).
class server {
 public:
  explicit server(server_options options = {});
  /// Stops (as stop()) and waits for the threads. A failure to lock or join there leaves
  /// threads running on freed state: terminating is the only safe outcome.
  ~server();  // NOLINT(bugprone-exception-escape)
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Adds a route (see router for patterns). Routes, middleware and static mounts are set up
  /// before start(); adding one later throws std::logic_error.
  server& route(method m, std::string_view pattern, handler h);
  server& get(std::string_view pattern, handler h) { return route(method::get, pattern, std::move(h)); }
  server& post(std::string_view pattern, handler h) { return route(method::post, pattern, std::move(h)); }
  server& put(std::string_view pattern, handler h) { return route(method::put, pattern, std::move(h)); }
  server& patch(std::string_view pattern, handler h) { return route(method::patch, pattern, std::move(h)); }
  // `delete` is a keyword, so the method takes a trailing underscore.
  server& delete_(std::string_view pattern, handler h) {  // NOLINT(readability-identifier-naming)
    return route(method::delete_, pattern, std::move(h));
  }
  /// Appends a middleware; the first added runs outermost.
  server& use(middleware m);
  /// Serves the files under `root` at `prefix` ("/ui"), GET and HEAD, with content types from
  /// the file extension. Paths with '..' segments are refused; files are read per request.
  server& serve_static(std::string_view prefix, const std::filesystem::path& root,
                       static_options options = {});
  /// A WebSocket route. Middleware see the upgrade request; if they answer anything but the
  /// upgrade (401, say) that answer is sent instead. A plain request to it is answered 426.
  server& websocket(std::string_view pattern, websocket_handler h);
  /// Registers a readiness check shown at /readyz under `name`.
  server& add_readiness_check(std::string name, readiness_check check);

  /// Binds, listens and starts the threads. @returns errc::invalid_address, errc::already_started
  /// or the system error of bind/listen (e.g. address in use).
  [[nodiscard]] result<void> start();
  /// The port listened on (useful with port 0), or 0 before start().
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// Graceful shutdown: stops accepting, closes idle connections, lets in-flight requests finish
  /// (answered with Connection: close), closes WebSockets with 1001, and cuts what is left after
  /// shutdown_timeout. Returns at once; thread-safe, idempotent, callable from a handler.
  void stop();
  /// Blocks until the server has stopped and its threads have ended. Must not be called from a
  /// handler (it would wait for itself): that throws std::logic_error.
  void wait();
  /// start() then wait(): the whole life of a server in main().
  [[nodiscard]] result<void> run();

  /// Sends a text message to every connection in `room`. @returns how many accepted it.
  std::size_t broadcast(std::string_view room, std::string message);
  /// The registry behind /metrics, with the built-in http_* metrics.
  [[nodiscard]] metrics::registry& metrics() noexcept;
  /// Open connections, HTTP and WebSocket.
  [[nodiscard]] std::size_t connections() const noexcept;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace keel::net
