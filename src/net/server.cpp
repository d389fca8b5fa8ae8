#include <keel/core/log.hpp>
#include <keel/net/error.hpp>
#include <keel/net/json.hpp>
#include <keel/net/server.hpp>

#include "static_files.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/object.hpp>

#include <charconv>
#include <csignal>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <variant>

namespace keel::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ws = beast::websocket;
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

namespace {

method from_verb(http::verb v) noexcept {
  switch (v) {
    case http::verb::get:
      return method::get;
    case http::verb::head:
      return method::head;
    case http::verb::post:
      return method::post;
    case http::verb::put:
      return method::put;
    case http::verb::delete_:
      return method::delete_;
    case http::verb::patch:
      return method::patch;
    case http::verb::options:
      return method::options;
    default:
      return method::other;
  }
}

std::string_view method_label(method m) noexcept {
  return m == method::other ? std::string_view("OTHER") : to_string(m);
}

// application/x-www-form-urlencoded component: '+' is a space.
std::optional<std::string> decode_query_component(std::string_view in) {
  std::string spaced(in);
  for (auto& c : spaced) {
    if (c == '+') c = ' ';
  }
  return percent_decode(spaced);
}

std::optional<std::vector<std::pair<std::string, std::string>>> parse_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    auto key = decode_query_component(part.substr(0, eq));
    auto value =
        decode_query_component(eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1));
    if (!key || !value) return std::nullopt;
    out.emplace_back(std::move(*key), std::move(*value));
  }
  return out;
}

// A decoded path is acceptable when absolute, without '..' segments and without NUL.
bool safe_path(std::string_view decoded) noexcept {
  if (decoded.empty() || decoded.front() != '/') return false;
  if (decoded.find('\0') != std::string_view::npos) return false;
  std::string_view rest = decoded.substr(1);
  while (true) {
    const auto slash = rest.find('/');
    if (rest.substr(0, slash) == "..") return false;
    if (slash == std::string_view::npos) return true;
    rest.remove_prefix(slash + 1);
  }
}

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// The framing checks of RFC 9112 that keep a request from being read two ways (request
// smuggling): a Transfer-Encoding list must be exactly "chunked" (the only coding decoded here)
// and may not come with Content-Length or in HTTP/1.0; HTTP/1.1 needs exactly one Host.
// Beast alone takes a list not ending in chunked as "no body" and reads the body as the next
// request. Returns the error to answer with, if any.
std::optional<errc> framing_error(const http::request_parser<http::string_body>::value_type& header) {
  std::size_t hosts = 0;
  std::size_t chunked = 0;
  bool other_coding = false;
  bool chunked_last = false;
  bool any_transfer_encoding = false;
  bool content_length = false;
  for (const auto& field : header) {
    if (field.name() == http::field::host) ++hosts;
    if (field.name() == http::field::content_length) content_length = true;
    if (field.name() != http::field::transfer_encoding) continue;
    any_transfer_encoding = true;
    std::string_view list(field.value().data(), field.value().size());
    while (true) {
      const auto comma = list.find(',');
      auto coding = trim_ows(list.substr(0, comma));
      coding = trim_ows(coding.substr(0, coding.find(';')));  // parameters do not change the coding
      if (!coding.empty()) {
        chunked_last = iequals(coding, "chunked");
        if (chunked_last) {
          ++chunked;
        } else {
          other_coding = true;
        }
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  if (header.version() >= 11 ? hosts != 1 : hosts > 1) return errc::bad_host;
  if (!any_transfer_encoding) return std::nullopt;
  if (content_length || header.version() < 11 || !chunked_last || chunked != 1) {
    return errc::bad_transfer_encoding;
  }
  if (other_coding) return errc::unsupported_transfer_coding;
  return std::nullopt;
}

status status_of(errc e) noexcept {
  switch (e) {
    case errc::unsupported_transfer_coding:
      return status::not_implemented;
    case errc::too_many_connections:
      return status::service_unavailable;
    case errc::too_many_client_connections:
      return status::too_many_requests;
    default:
      return status::bad_request;
  }
}

bool bodyless(unsigned code) noexcept {
  return (code >= 100 && code < 200) || code == 204 || code == 304;
}

}  // namespace

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
/// the connection that holds it ends.
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

response server::impl::run_step(const void* context, std::size_t index, request& req) {
  auto& ctx = *static_cast<dispatch_context*>(const_cast<void*>(context));
  const auto& self = *ctx.server;
  if (index < self.middlewares.size()) {
    return self.middlewares[index](req, next_handler(&run_step, context, index + 1));
  }
  const auto& match = *ctx.match;
  switch (match.result) {
    case route_match::outcome::found: {
      if (const auto ws_route = self.ws_routes.find(req.route); ws_route != self.ws_routes.end()) {
        if (!ctx.is_upgrade) {
          auto res = error_response(status::upgrade_required, make_error_code(errc::upgrade_required));
          res.headers.set("Upgrade", "websocket");
          return res;
        }
        ctx.upgrade_granted = true;
        return response{.status = status::switching_protocols, .headers = {}, .body = {}};
      }
      return (*match.target)(req);
    }
    case route_match::outcome::method_not_allowed: {
      auto res = error_response(status::method_not_allowed, make_error_code(errc::method_not_allowed));
      std::string allow;
      for (const auto m : match.allowed) {
        if (!allow.empty()) allow += ", ";
        allow += to_string(m);
      }
      res.headers.set("Allow", allow);
      return res;
    }
    case route_match::outcome::not_found:
      break;
  }
  return error_response(status::not_found, make_error_code(errc::not_found));
}

response server::impl::dispatch(request& req, std::string_view raw_path, bool is_upgrade,
                                bool& upgrade_granted) const {
  const auto match = routes.match(req.method, raw_path);
  if (match.result == route_match::outcome::found) {
    req.route = std::string(match.pattern);
    req.path_params = match.params;
  }
  dispatch_context ctx{.server = this, .match = &match, .is_upgrade = is_upgrade, .upgrade_granted = false};
  response res;
  try {
    res = run_step(&ctx, 0, req);
  } catch (const std::exception& e) {
    // A throwing handler is a bug in the handler; the server answers 500 and keeps serving.
    log::error("keel::net handler threw", {{"route", req.route}, {"path", req.path}, {"what", e.what()}});
    res = error_response(status::internal_server_error, make_error_code(errc::handler_failed));
  }
  upgrade_granted = ctx.upgrade_granted && res.status == status::switching_protocols;
  return res;
}

void server::impl::record(method m, std::string_view route, unsigned code, std::optional<double> seconds) {
  const auto route_label = route.empty() ? std::string_view("unmatched") : route;
  char status_text[8];
  const auto [end, ec] = std::to_chars(status_text, status_text + sizeof status_text, code);
  requests.labels({method_label(m), route_label, std::string_view(status_text, end)}).inc();
  if (seconds) durations.labels({method_label(m), route_label}).observe(*seconds);
}

// ---------------------------------------------------------------------------------------------
// WebSocket sessions

namespace detail {

class websocket_session : public session_base, public std::enable_shared_from_this<websocket_session> {
 public:
  websocket_session(std::shared_ptr<server::impl> srv, beast::tcp_stream stream, asio::any_io_executor ex,
                    const websocket_handler& handler, request req, connection_slot slot)
      : srv_(std::move(srv)),
        ex_(std::move(ex)),
        ws_(std::move(stream)),
        handler_(handler),
        req_(std::move(req)),
        id_(srv_->next_id.fetch_add(1)),
        slot_(std::move(slot)),
        close_timer_(ex_) {}

  ~websocket_session() override { srv_->unregister_session(id_); }

  void run(http::request<http::string_body> upgrade) {
    srv_->register_session(id_, weak_from_this());
    const auto& o = srv_->options.websocket;
    // Beast's own WebSocket timers replace the TCP stream's.
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(ws::stream_base::timeout{
        .handshake_timeout = o.handshake_timeout, .idle_timeout = o.idle_timeout, .keep_alive_pings = true});
    ws_.read_message_max(o.max_message_bytes);
    if (srv_->stopping.load()) {
      beast::get_lowest_layer(ws_).close();
      return;
    }
    upgrade_ = std::move(upgrade);
    ws_.async_accept(upgrade_, [self = shared_from_this()](beast::error_code ec) { self->on_accept(ec); });
  }

  bool enqueue(std::shared_ptr<const std::string> data, bool binary) {
    std::unique_lock lock(mutex_);
    if (closing_) return false;
    const auto& o = srv_->options.websocket;
    if (queue_.size() + 1 > o.max_queued_messages || queued_bytes_ + data->size() > o.max_queued_bytes) {
      // The peer is not reading fast enough: drop what waits and close with a policy code
      // rather than let memory grow without bound.
      const auto waiting = queue_.size();
      const auto waiting_bytes = queued_bytes_;
      closing_ = true;
      queue_.clear();
      queued_bytes_ = 0;
      queued_count_.store(0);
      pending_close_ = ws::close_reason(ws::close_code::policy_error, "slow consumer: write queue full");
      const bool idle = !writing_;
      if (idle) writing_ = true;
      lock.unlock();
      srv_->ws_slow_consumers.inc();
      log::warn(
          "keel::net closing a slow WebSocket consumer",
          {{"id", id_}, {"path", req_.path}, {"queued_messages", waiting}, {"queued_bytes", waiting_bytes}});
      arm_close_timer();
      if (idle) asio::post(ex_, [self = shared_from_this()] { self->write_next(); });
      return false;
    }
    queued_bytes_ += data->size();
    queue_.push_back({std::move(data), binary});
    queued_count_.store(queue_.size());
    if (writing_) return true;
    writing_ = true;
    lock.unlock();
    asio::post(ex_, [self = shared_from_this()] { self->write_next(); });
    return true;
  }

  void close(close_code code, std::string_view reason) {
    std::unique_lock lock(mutex_);
    if (closing_) return;
    closing_ = true;
    // A close frame's payload is at most 125 bytes: two for the code, the rest for the reason.
    pending_close_ = ws::close_reason(static_cast<ws::close_code>(code), reason.substr(0, 120));
    const bool idle = !writing_;
    if (idle) writing_ = true;
    lock.unlock();
    arm_close_timer();
    // Messages already queued are written first, then the close frame.
    if (idle) asio::post(ex_, [self = shared_from_this()] { self->write_next(); });
  }

  void join(std::string_view room) {
    {
      std::lock_guard lock(mutex_);
      if (closing_) return;
      rooms_.emplace(room);
    }
    std::lock_guard lock(srv_->rooms_mutex);
    auto it = srv_->rooms.find(room);
    if (it == srv_->rooms.end()) it = srv_->rooms.emplace(std::string(room), decltype(it->second){}).first;
    it->second[id_] = weak_from_this();
  }

  void leave(std::string_view room) {
    {
      std::lock_guard lock(mutex_);
      const auto it = rooms_.find(room);
      if (it == rooms_.end()) return;
      rooms_.erase(it);
    }
    leave_room(room);
  }

  void shutdown() override { close(close_code::going_away, "server shutting down"); }

  void force_close() override {
    asio::post(ex_, [self = shared_from_this()] {
      beast::error_code ec;
      beast::get_lowest_layer(self->ws_).socket().close(ec);
    });
  }

  [[nodiscard]] const request& upgrade_request() const noexcept { return req_; }
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  [[nodiscard]] std::size_t queued() const noexcept { return queued_count_.load(); }

 private:
  struct outgoing {
    std::shared_ptr<const std::string> data;
    bool binary;
  };

  websocket_connection handle() { return websocket_connection(shared_from_this()); }

  void leave_room(std::string_view room) {
    std::lock_guard lock(srv_->rooms_mutex);
    const auto it = srv_->rooms.find(room);
    if (it == srv_->rooms.end()) return;
    it->second.erase(id_);
    if (it->second.empty()) srv_->rooms.erase(it);
  }

  void arm_close_timer() {
    asio::post(ex_, [self = shared_from_this()] {
      if (self->finished_) return;
      // A peer that never reads would hold the close frame behind a pending write forever.
      self->close_timer_.expires_after(self->srv_->options.websocket.handshake_timeout);
      self->close_timer_.async_wait([self](beast::error_code ec) {
        if (ec) return;
        beast::get_lowest_layer(self->ws_).socket().close(ec);
      });
    });
  }

  void on_accept(beast::error_code ec) {
    if (ec) return;
    open_ = true;
    if (handler_.on_open) {
      try {
        handler_.on_open(handle());
      } catch (const std::exception& e) {
        log::error("keel::net WebSocket on_open threw", {{"path", req_.path}, {"what", e.what()}});
        close(close_code::internal_error, "handler failed");
      }
    }
    do_read();
  }

  void do_read() {
    ws_.async_read(in_,
                   [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec) {
      close_reason why{.code = 1006, .reason = {}};
      if (ec == ws::error::closed) {
        why.code = ws_.reason().code;
        why.reason = std::string(ws_.reason().reason.data(), ws_.reason().reason.size());
      } else if (ec == ws::error::message_too_big) {
        why.code = static_cast<std::uint16_t>(close_code::too_big);
      }
      finish(why);
      return;
    }
    const auto message = beast::buffers_to_string(in_.data());
    in_.consume(in_.size());
    if (handler_.on_message) {
      try {
        handler_.on_message(handle(), message, ws_.got_binary());
      } catch (const std::exception& e) {
        log::error("keel::net WebSocket on_message threw", {{"path", req_.path}, {"what", e.what()}});
        close(close_code::internal_error, "handler failed");
      }
    }
    do_read();
  }

  void finish(const close_reason& why) {
    std::set<std::string, std::less<>> rooms;
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
      queue_.clear();
      queued_bytes_ = 0;
      queued_count_.store(0);
      rooms.swap(rooms_);
    }
    for (const auto& room : rooms) leave_room(room);
    finished_ = true;
    close_timer_.cancel();
    if (handler_.on_close) {
      try {
        handler_.on_close(handle(), why);
      } catch (const std::exception& e) {
        log::error("keel::net WebSocket on_close threw", {{"path", req_.path}, {"what", e.what()}});
      }
    }
  }

  void write_next() {
    std::unique_lock lock(mutex_);
    if (queue_.empty()) {
      if (pending_close_ && !close_sent_) {
        close_sent_ = true;
        const auto reason = *pending_close_;
        lock.unlock();
        start_close(reason);
        return;
      }
      writing_ = false;
      return;
    }
    current_ = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= current_.data->size();
    queued_count_.store(queue_.size());
    lock.unlock();
    ws_.binary(current_.binary);
    ws_.async_write(asio::buffer(*current_.data),
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      self->current_.data.reset();
                      if (ec) {
                        {
                          std::lock_guard guard(self->mutex_);
                          self->closing_ = true;
                          self->queue_.clear();
                          self->queued_bytes_ = 0;
                          self->writing_ = false;
                        }
                        // The read side notices and reports the close.
                        beast::get_lowest_layer(self->ws_).socket().close(ec);
                        return;
                      }
                      self->srv_->ws_messages_sent.inc();
                      self->write_next();
                    });
  }

  void start_close(const ws::close_reason& reason) {
    if (!open_) {
      beast::error_code ec;
      beast::get_lowest_layer(ws_).socket().close(ec);
      return;
    }
    ws_.async_close(reason, [self = shared_from_this()](beast::error_code ec) {
      if (ec) {
        beast::get_lowest_layer(self->ws_).socket().close(ec);
      }
    });
  }

  std::shared_ptr<server::impl> srv_;
  asio::any_io_executor ex_;
  ws::stream<beast::tcp_stream> ws_;
  const websocket_handler& handler_;
  request req_;
  http::request<http::string_body> upgrade_;
  std::uint64_t id_;
  connection_slot slot_;
  asio::steady_timer close_timer_;
  beast::flat_buffer in_;
  bool open_ = false;      // strand only
  bool finished_ = false;  // strand only

  std::mutex mutex_;  // guards what follows; send() may come from any thread
  std::deque<outgoing> queue_;
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;  // a write_next() chain is running or posted
  bool closing_ = false;  // no more messages are accepted
  bool close_sent_ = false;
  std::optional<ws::close_reason> pending_close_;
  std::set<std::string, std::less<>> rooms_;
  outgoing current_;
  std::atomic<std::size_t> queued_count_{0};
};

}  // namespace detail

websocket_connection::websocket_connection(std::shared_ptr<detail::websocket_session> session) noexcept
    : session_(std::move(session)) {}

bool websocket_connection::send(std::string message) const {
  return session_->enqueue(std::make_shared<const std::string>(std::move(message)), false);
}

bool websocket_connection::send_binary(std::string message) const {
  return session_->enqueue(std::make_shared<const std::string>(std::move(message)), true);
}

void websocket_connection::close(close_code code, std::string_view reason) const {
  session_->close(code, reason);
}

void websocket_connection::join(std::string_view room) const {
  session_->join(room);
}

void websocket_connection::leave(std::string_view room) const {
  session_->leave(room);
}

const request& websocket_connection::upgrade_request() const noexcept {
  return session_->upgrade_request();
}

std::uint64_t websocket_connection::id() const noexcept {
  return session_->id();
}

std::size_t websocket_connection::queued_messages() const noexcept {
  return session_->queued();
}

// ---------------------------------------------------------------------------------------------
// HTTP sessions

namespace {

class http_session : public detail::session_base, public std::enable_shared_from_this<http_session> {
 public:
  http_session(std::shared_ptr<server::impl> srv, tcp::socket socket, connection_slot slot,
               std::string remote)
      : srv_(std::move(srv)),
        ex_(socket.get_executor()),
        stream_(std::move(socket)),
        id_(srv_->next_id.fetch_add(1)),
        slot_(std::move(slot)),
        remote_(std::move(remote)) {}

  ~http_session() override { srv_->unregister_session(id_); }

  void start() {
    srv_->register_session(id_, weak_from_this());
    asio::post(ex_, [self = shared_from_this()] { self->read_request(); });
  }

  void shutdown() override {
    asio::post(ex_, [self = shared_from_this()] {
      // Idle keep-alive connections close now; busy ones close after their response.
      if (self->state_ == state::idle) self->close_now();
    });
  }

  void force_close() override {
    asio::post(ex_, [self = shared_from_this()] { self->close_now(); });
  }

 private:
  enum class state : std::uint8_t { idle, reading, writing, lingering, done };

  void close_now() {
    if (state_ == state::done) return;
    state_ = state::done;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  void read_request() {
    if (srv_->stopping.load() && buffer_.size() == 0) {
      close_now();
      return;
    }
    parser_.emplace();
    framing_checked_ = false;
    parser_->header_limit(
        static_cast<std::uint32_t>(std::min<std::size_t>(srv_->options.max_header_bytes, UINT32_MAX)));
    parser_->body_limit(srv_->options.max_body_bytes);
    if (buffer_.size() > 0 || first_) {
      // The first request must arrive within read_timeout of the connection opening.
      begin_reading();
    } else {
      state_ = state::idle;
      stream_.expires_after(srv_->options.idle_timeout);
    }
    first_ = false;
    do_read();
  }

  void begin_reading() {
    state_ = state::reading;
    // One deadline for the whole request, so trickling bytes cannot extend it.
    stream_.expires_after(srv_->options.read_timeout);
  }

  void do_read() {
    http::async_read_some(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (state_ == state::done) return;
    if (ec) {
      if (ec == http::error::header_limit) {
        send_error(status::request_header_fields_too_large, errc::header_too_large);
      } else if (ec == http::error::body_limit) {
        send_error(status::payload_too_large, errc::body_too_large);
      } else if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
                 ec != http::error::end_of_stream && ec != http::error::partial_message) {
        send_error(status::bad_request, errc::malformed_request);
      } else {
        // Timeouts, resets and clients that went away: nothing useful can be sent.
        close_now();
      }
      return;
    }
    if (state_ == state::idle) begin_reading();
    if (!framing_checked_ && parser_->is_header_done()) {
      framing_checked_ = true;
      if (const auto e = framing_error(parser_->get())) {
        send_error(status_of(*e), *e);
        return;
      }
    }
    if (!parser_->is_done()) {
      do_read();
      return;
    }
    handle();
  }

  void handle() {
    auto msg = parser_->release();
    const auto started = std::chrono::steady_clock::now();
    request req;
    req.method = from_verb(msg.method());
    req.target = std::string(msg.target());
    req.remote_address = remote_;
    const bool keep_alive = msg.keep_alive();
    const std::string_view target = msg.target();
    const auto question = target.find('?');
    const auto raw_path = target.substr(0, question);
    auto decoded = percent_decode(raw_path);
    auto query =
        parse_query(question == std::string_view::npos ? std::string_view{} : target.substr(question + 1));
    if (!decoded || !safe_path(*decoded)) {
      srv_->record(req.method, {}, 400, std::nullopt);
      send_error(status::bad_request, errc::invalid_path);
      return;
    }
    if (!query) {
      srv_->record(req.method, {}, 400, std::nullopt);
      send_error(status::bad_request, errc::malformed_request);
      return;
    }
    req.path = std::move(*decoded);
    req.query = std::move(*query);
    for (const auto& field : msg) {
      req.headers.add(std::string_view(field.name_string().data(), field.name_string().size()),
                      std::string_view(field.value().data(), field.value().size()));
    }
    req.body = std::move(msg.body());
    const bool is_upgrade = ws::is_upgrade(msg);

    bool upgrade = false;
    auto res = srv_->dispatch(req, raw_path, is_upgrade, upgrade);
    const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    srv_->record(req.method, req.route, to_int(res.status), elapsed);

    if (upgrade) {
      const auto ws_route = srv_->ws_routes.find(req.route);
      state_ = state::done;
      stream_.expires_never();
      auto session = std::make_shared<detail::websocket_session>(
          srv_, std::move(stream_), ex_, ws_route->second, std::move(req), std::move(slot_));
      session->run(std::move(msg));
      return;
    }
    write(std::move(res), keep_alive && !srv_->stopping.load(), req.method == method::head);
  }

  void write(response res, bool keep_alive, bool head) {
    res_ = {};
    const auto code = to_int(res.status);
    res_.result(code);
    res_.version(11);
    for (const auto& [name, value] : res.headers) {
      // Framing is the server's job; a handler's Content-Length could only disagree with the body.
      const auto field = http::string_to_field(name);
      if (field == http::field::content_length || field == http::field::transfer_encoding ||
          field == http::field::connection) {
        continue;
      }
      res_.insert(name, value);
    }
    if (bodyless(code)) {
      res.body.clear();
    } else {
      res_.content_length(res.body.size());
      if (!head) res_.body() = std::move(res.body);
    }
    res_.keep_alive(keep_alive);
    state_ = state::writing;
    stream_.expires_after(srv_->options.write_timeout);
    http::async_write(stream_, res_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_write(ec); });
  }

  void send_error(status s, errc e) {
    // The request may be half read, so the connection cannot be reused.
    write(error_response(s, make_error_code(e)), false, false);
  }

  void on_write(beast::error_code ec) {
    if (state_ == state::done) return;
    if (ec) {
      close_now();
      return;
    }
    if (!res_.keep_alive() || srv_->stopping.load()) {
      linger();
      return;
    }
    read_request();
  }

  // Closing with unread input makes the kernel send a reset that can destroy the response
  // before the client reads it, so stop sending, then read and discard briefly.
  void linger() {
    state_ = state::lingering;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(
        std::min<std::chrono::milliseconds>(srv_->options.read_timeout, std::chrono::seconds(2)));
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec || self->state_ == state::done) {
                                self->close_now();
                                return;
                              }
                              self->drain();
                            });
  }

  std::shared_ptr<server::impl> srv_;
  asio::any_io_executor ex_;
  beast::tcp_stream stream_;
  std::uint64_t id_;
  connection_slot slot_;
  bool first_ = true;
  bool framing_checked_ = false;
  state state_ = state::idle;
  std::string remote_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  std::array<char, 4096> discard_{};
};

// A connection refused at accept: it is answered at once, before anything is read, and holds
// no slot, so a flood of idle sockets cannot keep admitted clients out. It lingers briefly
// after the answer, as http_session does, so that unread input does not reset the answer away.
class refused_connection : public std::enable_shared_from_this<refused_connection> {
 public:
  refused_connection(tcp::socket socket, errc why) : stream_(std::move(socket)) {
    auto res = error_response(status_of(why), make_error_code(why));
    res_.result(to_int(res.status));
    res_.version(11);
    for (const auto& [name, value] : res.headers) res_.insert(name, value);
    res_.body() = std::move(res.body);
    res_.content_length(res_.body().size());
    res_.keep_alive(false);
  }

  void start() {
    stream_.expires_after(std::chrono::seconds(1));
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
      self->drain();
    });
  }

 private:
  void drain() {
    stream_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (!ec) self->drain();
                            });
  }

  beast::tcp_stream stream_;
  http::response<http::string_body> res_;
  std::array<char, 1024> discard_{};
};

}  // namespace

void server::impl::do_accept() {
  acceptor.async_accept(asio::make_strand(ioc), [self = shared_from_this()](beast::error_code ec,
                                                                            tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors, typically: back off briefly instead of spinning.
      log::warn("keel::net accept failed", {{"error", ec.message()}});
      self->accept_retry.expires_after(std::chrono::milliseconds(50));
      self->accept_retry.async_wait([self](beast::error_code wait_ec) {
        if (!wait_ec && self->acceptor.is_open()) self->do_accept();
      });
      return;
    }
    if (self->stopping.load()) return;
    beast::error_code peer_ec;
    const auto peer = socket.remote_endpoint(peer_ec);
    std::string remote = peer_ec ? std::string() : peer.address().to_string();
    auto admitted = connection_slot::admit(self.get(), remote);
    if (auto* slot = std::get_if<connection_slot>(&admitted)) {
      std::make_shared<http_session>(self, std::move(socket), std::move(*slot), std::move(remote))->start();
    } else {
      const errc why = std::get<errc>(admitted);
      (why == errc::too_many_connections ? self->rejected : self->rejected_per_client).inc();
      std::make_shared<refused_connection>(std::move(socket), why)->start();
    }
    self->do_accept();
  });
}

void server::impl::begin_stop() {
  asio::post(control, [self = shared_from_this()] {
    beast::error_code ec;
    self->acceptor.close(ec);
    self->accept_retry.cancel();
    if (self->signals) {
      self->signals->cancel(ec);
      self->signals->clear(ec);
    }
    self->shutdown_timer.expires_after(self->options.shutdown_timeout);
    self->shutdown_timer.async_wait([self](beast::error_code wait_ec) {
      if (wait_ec) return;
      log::warn("keel::net shutdown timeout: closing the remaining connections");
      for (auto& s : self->live_sessions()) s->force_close();
    });
    const auto live = self->live_sessions();
    for (const auto& s : live) s->shutdown();
    if (live.empty()) self->shutdown_timer.cancel();
  });
}

// ---------------------------------------------------------------------------------------------
// server

server::server(server_options options) : impl_(std::make_shared<impl>(std::move(options))) {
  auto& o = impl_->options;
  if (o.threads == 0) throw std::invalid_argument("keel::net::server: threads must be at least 1");
  if (!o.metrics_path.empty()) {
    get(o.metrics_path, [registry = impl_->registry](const request&) {
      return text_response(registry->expose(), status::ok, metrics::content_type);
    });
  }
  if (!o.health_path.empty()) {
    get(o.health_path, [](const request&) { return json_response(boost::json::object{{"status", "ok"}}); });
  }
  if (!o.ready_path.empty()) {
    get(o.ready_path, [weak = std::weak_ptr<impl>(impl_)](const request&) {
      const auto self = weak.lock();
      if (!self || self->stopping.load()) {
        return json_response(boost::json::object{{"status", "shutting down"}}, status::service_unavailable);
      }
      boost::json::object checks;
      bool ready = true;
      for (const auto& [name, check] : self->checks) {
        readiness r;
        try {
          r = check();
        } catch (const std::exception& e) {
          r = readiness{.ready = false, .detail = e.what()};
        }
        ready = ready && r.ready;
        checks[name] = r.ready ? (r.detail.empty() ? std::string("ok") : r.detail)
                               : (r.detail.empty() ? std::string("failed") : r.detail);
      }
      return json_response(boost::json::object{{"status", ready ? "ready" : "not ready"}, {"checks", checks}},
                           ready ? status::ok : status::service_unavailable);
    });
  }
}

server::~server() {
  stop();
  wait();
}

server& server::route(method m, std::string_view pattern, handler h) {
  impl_->require_not_started("route()");
  impl_->routes.add(m, pattern, std::move(h));
  return *this;
}

server& server::use(middleware m) {
  impl_->require_not_started("use()");
  if (!m) throw std::invalid_argument("keel::net::server: empty middleware");
  impl_->middlewares.push_back(std::move(m));
  return *this;
}

server& server::serve_static(std::string_view prefix, std::filesystem::path root, static_options options) {
  impl_->require_not_started("serve_static()");
  std::string pattern(prefix);
  while (!pattern.empty() && pattern.back() == '/') pattern.pop_back();
  pattern += "/{path...}";
  impl_->routes.add(method::get, pattern, detail::make_static_handler(std::move(root), std::move(options)));
  return *this;
}

server& server::websocket(std::string_view pattern, websocket_handler h) {
  impl_->require_not_started("websocket()");
  // The route's handler is never called: the dispatcher answers upgrades to it itself.
  impl_->routes.add(method::get, pattern, [](const request&) { return response{}; });
  impl_->ws_routes.emplace(std::string(pattern), std::move(h));
  return *this;
}

server& server::add_readiness_check(std::string name, readiness_check check) {
  impl_->require_not_started("add_readiness_check()");
  impl_->checks.emplace_back(std::move(name), std::move(check));
  return *this;
}

result<void> server::start() {
  auto& s = *impl_;
  if (s.started.exchange(true)) return errc::already_started;
  if (s.stopping.load()) return errc::shutting_down;
  beast::error_code ec;
  const auto address = asio::ip::make_address(s.options.address, ec);
  if (ec) {
    s.started.store(false);
    return errc::invalid_address;
  }
  const tcp::endpoint endpoint(address, s.options.port);
  const auto fail = [&](const beast::error_code& e) -> result<void> {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    s.started.store(false);
    return e;
  };
  s.acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail(ec);
  s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return fail(ec);
  s.acceptor.bind(endpoint, ec);
  if (ec) return fail(ec);
  s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec);
  s.bound_port.store(s.acceptor.local_endpoint().port());
  if (s.options.handle_signals) {
    s.signals.emplace(s.control, SIGINT, SIGTERM);
    s.signals->async_wait([self = impl_](beast::error_code wait_ec, int signal) {
      if (wait_ec) return;
      log::info("keel::net stopping on signal", {{"signal", signal}});
      self->stopping.store(true);
      self->begin_stop();
    });
  }
  s.do_accept();
  s.running.store(true);
  std::lock_guard lock(s.threads_mutex);
  for (unsigned i = 0; i < s.options.threads; ++i) {
    s.threads.emplace_back([self = impl_.get()] {
      while (true) {
        try {
          self->ioc.run();
          return;
        } catch (const std::exception& e) {
          log::error("keel::net I/O thread caught an exception", {{"what", e.what()}});
        }
      }
    });
  }
  return {};
}

std::uint16_t server::port() const noexcept {
  return impl_->bound_port.load();
}

void server::stop() {
  if (impl_->stopping.exchange(true)) return;
  if (!impl_->running.load()) return;
  impl_->begin_stop();
}

void server::wait() {
  std::lock_guard lock(impl_->threads_mutex);
  for (const auto& t : impl_->threads) {
    if (t.get_id() == std::this_thread::get_id()) {
      throw std::logic_error(
          "keel::net::server::wait() called from a server thread; it would wait for itself");
    }
  }
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

result<void> server::run() {
  auto started = start();
  if (!started) return started;
  wait();
  return {};
}

std::size_t server::broadcast(std::string_view room, std::string message) {
  std::vector<std::shared_ptr<detail::websocket_session>> members;
  {
    std::lock_guard lock(impl_->rooms_mutex);
    const auto it = impl_->rooms.find(room);
    if (it == impl_->rooms.end()) return 0;
    members.reserve(it->second.size());
    for (const auto& [id, weak] : it->second) {
      if (auto s = weak.lock()) members.push_back(std::move(s));
    }
  }
  // One copy of the message, shared by every recipient's queue.
  const auto shared = std::make_shared<const std::string>(std::move(message));
  std::size_t delivered = 0;
  for (const auto& m : members) delivered += m->enqueue(shared, false) ? 1U : 0U;
  return delivered;
}

metrics::registry& server::metrics() noexcept {
  return *impl_->registry;
}

std::size_t server::connections() const noexcept {
  return impl_->open.load();
}

}  // namespace keel::net
