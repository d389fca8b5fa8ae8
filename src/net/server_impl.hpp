#pragma once
// keel::net's server internals, shared by server.cpp, http_session.cpp and websocket_session.cpp:
// the server's state (server::impl), a connection's slot under the limits, and the entry points
// from one part to the next (accept → HTTP session → WebSocket session).
#include <keel/core/log.hpp>
#include <keel/net/error.hpp>
#include <keel/net/json.hpp>
#include <keel/net/server.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace keel::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace detail {

/// What the server can ask of every live connection when it stops.
class session_base {
 public:
  virtual ~session_base() = default;
  session_base() = default;
  session_base(const session_base&) = delete;
  session_base& operator=(const session_base&) = delete;
  /// Graceful: finish what is in flight, then close. Posts to the session's strand.
  virtual void shutdown() = 0;
  /// Cuts the connection now. Posts to the session's strand.
  virtual void force_close() = 0;
};

}  // namespace detail

struct server::impl : std::enable_shared_from_this<server::impl> {
  explicit impl(server_options opts)
      : options(std::move(opts)),
        registry(options.metrics ? options.metrics : std::make_shared<metrics::registry>()),
        requests(registry->add_counter("http_requests_total",
                                       "HTTP requests answered, by method, route and status.",
                                       {"method", "route", "status"})),
        durations(registry->add_histogram(
            "http_request_duration_seconds",
            "Time from a complete request to its response, by method and route.", {"method", "route"})),
        open_connections(
            registry->add_gauge("http_open_connections", "Open HTTP and WebSocket connections.").get()),
        rejected(registry
                     ->add_counter("http_connections_rejected_total",
                                   "Connections answered 503 because max_connections was reached.")
                     .get()),
        rejected_per_client(registry
                                ->add_counter("http_client_connections_rejected_total",
                                              "Connections answered 429 because their address reached "
                                              "max_connections_per_client.")
                                .get()),
        ws_slow_consumers(registry
                              ->add_counter("websocket_slow_consumers_closed_total",
                                            "WebSocket connections closed with 1008 because their write "
                                            "queue was full.")
                              .get()),
        ws_messages_sent(
            registry->add_counter("websocket_messages_sent_total", "WebSocket messages written.").get()) {}

  // The I/O context comes first so that it is destroyed last.
  asio::io_context ioc;
  server_options options;
  std::shared_ptr<metrics::registry> registry;
  metrics::counter_family& requests;
  metrics::histogram_family& durations;
  metrics::gauge& open_connections;
  metrics::counter& rejected;
  metrics::counter& rejected_per_client;
  metrics::counter& ws_slow_consumers;
  metrics::counter& ws_messages_sent;
  // Handlers come after the registry so they are destroyed before it: whatever a handler owns
  // (a background worker reporting to metrics() families, say) may use the metrics until then.
  router routes;
  std::vector<middleware> middlewares;
  std::map<std::string, websocket_handler, std::less<>> ws_routes;
  std::vector<std::pair<std::string, readiness_check>> checks;

  // The acceptor, the signal set and the shutdown timer live on one strand.
  asio::strand<asio::io_context::executor_type> control{asio::make_strand(ioc)};
  tcp::acceptor acceptor{control};
  std::optional<asio::signal_set> signals;
  asio::steady_timer shutdown_timer{control};
  asio::steady_timer accept_retry{control};

  std::mutex threads_mutex;
  std::vector<std::thread> threads;
  std::atomic<bool> started{false};
  std::atomic<bool> running{false};
  std::atomic<bool> stopping{false};
  std::atomic<std::uint16_t> bound_port{0};
  std::atomic<std::size_t> open{0};
  std::atomic<std::size_t> refusing{0};  // refused connections still being answered
  std::atomic<std::uint64_t> next_id{1};

  // Open connections per remote address, for max_connections_per_client.
  std::mutex clients_mutex;
  std::unordered_map<std::string, std::size_t> connections_per_client;

  std::mutex sessions_mutex;
  std::unordered_map<std::uint64_t, std::weak_ptr<detail::session_base>> sessions;

  std::mutex rooms_mutex;
  std::map<std::string, std::map<std::uint64_t, std::weak_ptr<detail::websocket_session>>, std::less<>> rooms;

  void require_not_started(std::string_view what) const {
    if (started.load()) {
      throw std::logic_error("keel::net::server: " + std::string(what) + " must be called before start()");
    }
  }

  void register_session(std::uint64_t id, std::weak_ptr<detail::session_base> s) {
    std::lock_guard lock(sessions_mutex);
    sessions.emplace(id, std::move(s));
  }

  void unregister_session(std::uint64_t id) {
    bool last = false;
    {
      std::lock_guard lock(sessions_mutex);
      sessions.erase(id);
      last = sessions.empty();
    }
    // Once the last connection has gone, nothing is left for the shutdown timer to cut.
    // A weak capture: a connection handle that outlives the server must not keep it alive
    // through a handler that will never run.
    if (last && stopping.load()) {
      asio::post(control, [weak = weak_from_this()] {
        if (const auto self = weak.lock()) self->shutdown_timer.cancel();
      });
    }
  }

  std::vector<std::shared_ptr<detail::session_base>> live_sessions() {
    std::vector<std::shared_ptr<detail::session_base>> out;
    std::lock_guard lock(sessions_mutex);
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) out.push_back(std::move(s));
    }
    return out;
  }

  void do_accept();
  void begin_stop();
  void record(method m, std::string_view route, unsigned code, std::optional<double> seconds);

  // The middleware chain and the final step (route, 404, 405, WebSocket upgrade).
  struct dispatch_context {
    const impl* server;
    const route_match* match;
    bool is_upgrade;
    bool upgrade_granted;
  };
  response dispatch(request& req, std::string_view raw_path, bool is_upgrade, bool& upgrade_granted) const;
  static response run_step(const void* context, std::size_t index, request& req);
};

/// A connection's place under max_connections and max_connections_per_client, given back when

class connection_slot {
 public:
  connection_slot() = default;
  /// Takes a place for a connection from `client`, or says which limit refuses it.
  static std::variant<connection_slot, errc> admit(server::impl* s, std::string client) {
    // Accepts run one at a time on the control strand, so the check and the increment of the
    // global count cannot interleave with another accept; a concurrent release only frees more.
    if (s->open.load() >= s->options.max_connections) return errc::too_many_connections;
    if (s->options.max_connections_per_client != 0) {
      std::lock_guard lock(s->clients_mutex);
      auto& count = s->connections_per_client[client];
      if (count >= s->options.max_connections_per_client) return errc::too_many_client_connections;
      ++count;
    }
    return connection_slot(s, std::move(client));
  }
  connection_slot(connection_slot&& other) noexcept
      : server_(std::exchange(other.server_, nullptr)), client_(std::move(other.client_)) {}
  connection_slot& operator=(connection_slot&&) = delete;
  connection_slot(const connection_slot&) = delete;
  connection_slot& operator=(const connection_slot&) = delete;
  ~connection_slot() {
    if (server_ == nullptr) return;
    server_->open.fetch_sub(1);
    server_->open_connections.dec();
    if (server_->options.max_connections_per_client != 0) {
      std::lock_guard lock(server_->clients_mutex);
      const auto it = server_->connections_per_client.find(client_);
      if (it != server_->connections_per_client.end() && --it->second == 0) {
        server_->connections_per_client.erase(it);
      }
    }
  }

 private:
  connection_slot(server::impl* s, std::string client) noexcept : server_(s), client_(std::move(client)) {
    server_->open.fetch_add(1);
    server_->open_connections.inc();
  }

  server::impl* server_ = nullptr;
  std::string client_;
};

namespace detail {

/// Serves HTTP on an admitted connection (http_session.cpp).
void start_http_session(std::shared_ptr<server::impl> srv, tcp::socket socket, connection_slot slot,
                        std::string remote);

/// Answers a connection refused at accept with the error's status and closes it; it holds no
/// slot (http_session.cpp).
void refuse_connection(std::shared_ptr<server::impl> srv, tcp::socket socket, errc why);

/// Takes over a connection whose upgrade request was granted (websocket_session.cpp).
void start_websocket_session(std::shared_ptr<server::impl> srv, beast::tcp_stream stream,
                             asio::any_io_executor ex, const websocket_handler& handler, request req,
                             connection_slot slot, http::request<http::string_body> upgrade);

/// Queues a broadcast message on one member of a room; false when it was not taken.
bool enqueue_broadcast(websocket_session& session, std::shared_ptr<const std::string> message);

}  // namespace detail

}  // namespace keel::net
