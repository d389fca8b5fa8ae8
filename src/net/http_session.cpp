// HTTP sessions: reading a request under the limits and the framing checks, dispatching it,
// writing the answer, keep-alive and the lingering close; and connections refused at accept.
#include "server_impl.hpp"
#include "text.hpp"

#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <algorithm>
#include <array>
#include <chrono>

namespace keel::net {

namespace ws = beast::websocket;

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

using detail::hex_value;
using detail::iequals;

bool is_tchar(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

bool is_hex(char c) noexcept {
  return hex_value(c) >= 0;
}

// RFC 9112 §3.2: Host = uri-host [ ":" port ]; uri-host is an IP literal in brackets, or a
// reg-name / IPv4 address of unreserved, sub-delims and percent-encoded characters.
bool valid_host_value(std::string_view host) noexcept {
  const auto digits = [](std::string_view port) {
    return std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!host.empty() && host.front() == '[') {
    const auto close = host.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    const auto literal = host.substr(1, close - 1);
    if (!std::all_of(literal.begin(), literal.end(),
                     [](char c) { return is_hex(c) || c == ':' || c == '.'; })) {
      return false;
    }
    const auto rest = host.substr(close + 1);
    return rest.empty() || (rest.front() == ':' && digits(rest.substr(1)));
  }
  const auto colon = host.rfind(':');
  if (colon != std::string_view::npos && !digits(host.substr(colon + 1))) return false;
  const auto name = host.substr(0, colon);
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '%') {
      if (i + 2 >= name.size() || !is_hex(name[i + 1]) || !is_hex(name[i + 2])) return false;
      i += 2;
    } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 std::string_view("-._~!$&'()*+,;=").find(c) != std::string_view::npos)) {
      return false;
    }
  }
  return true;
}

// The framing checks of RFC 9112 that keep a request from being read two ways (request
// smuggling). The only Transfer-Encoding accepted is the single coding `chunked` (what Beast
// decodes), with no parameters (chunked has none), no empty list members, no Content-Length
// beside it and not in HTTP/1.0: anything looser is a list Beast and a proxy in front could
// read differently — Beast alone takes a list not ending in chunked, or one it stops parsing
// early (`;, chunked`), as "no body" and reads the body as the next request. HTTP/1.1 needs
// exactly one Host, and a Host must be a host. Returns the error to answer with, if any.
std::optional<errc> framing_error(const http::request_parser<http::string_body>::value_type& header) {
  std::size_t hosts = 0;
  std::size_t codings = 0;
  std::size_t chunked = 0;
  bool malformed_list = false;
  bool chunked_last = false;
  bool any_transfer_encoding = false;
  bool content_length = false;
  for (const auto& field : header) {
    if (field.name() == http::field::host) {
      ++hosts;
      if (!valid_host_value(trim_ows(std::string_view(field.value().data(), field.value().size())))) {
        return errc::bad_host;
      }
    }
    if (field.name() == http::field::content_length) content_length = true;
    if (field.name() != http::field::transfer_encoding) continue;
    any_transfer_encoding = true;
    std::string_view list(field.value().data(), field.value().size());
    while (true) {
      const auto comma = list.find(',');
      const auto coding = trim_ows(list.substr(0, comma));
      if (!is_token(coding)) {
        malformed_list = true;  // empty, parameters, or not a coding name at all
      } else {
        ++codings;
        chunked_last = iequals(coding, "chunked");
        if (chunked_last) ++chunked;
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  if (header.version() >= 11 ? hosts != 1 : hosts > 1) return errc::bad_host;
  if (!any_transfer_encoding) return std::nullopt;
  if (malformed_list || content_length || header.version() < 11 || !chunked_last || chunked != 1) {
    return errc::bad_transfer_encoding;
  }
  if (codings != 1) return errc::unsupported_transfer_coding;
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

  // Unregistering locks the server's session table; a failing lock is unrecoverable.
  ~http_session() override { srv_->unregister_session(id_); }  // NOLINT(bugprone-exception-escape)

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
    // A method keel does not name (Vault's LIST, WebDAV's PROPFIND) cannot be routed; middleware
    // that serves one finds its name here.
    if (req.method == method::other) req.attributes.emplace("keel.method", std::string(msg.method_string()));
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
      detail::start_websocket_session(srv_, std::move(stream_), ex_, ws_route->second, std::move(req),
                                      std::move(slot_), std::move(msg));
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
  refused_connection(std::shared_ptr<server::impl> srv, tcp::socket socket, errc why, bool linger)
      : srv_(std::move(srv)), stream_(std::move(socket)), linger_(linger) {
    srv_->refusing.fetch_add(1);
    auto res = error_response(status_of(why), make_error_code(why));
    res_.result(to_int(res.status));
    res_.version(11);
    for (const auto& [name, value] : res.headers) res_.insert(name, value);
    res_.body() = std::move(res.body);
    res_.content_length(res_.body().size());
    res_.keep_alive(false);
  }

  ~refused_connection() { srv_->refusing.fetch_sub(1); }
  refused_connection(const refused_connection&) = delete;
  refused_connection& operator=(const refused_connection&) = delete;

  void start() {
    stream_.expires_after(std::chrono::seconds(1));
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
      if (self->linger_) self->drain();
    });
  }

 private:
  void drain() {
    stream_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (!ec) self->drain();
                            });
  }

  std::shared_ptr<server::impl> srv_;
  beast::tcp_stream stream_;
  bool linger_;
  http::response<http::string_body> res_;
  std::array<char, 1024> discard_{};
};

}  // namespace

namespace detail {

void start_http_session(std::shared_ptr<server::impl> srv, tcp::socket socket, connection_slot slot,
                        std::string remote) {
  std::make_shared<http_session>(std::move(srv), std::move(socket), std::move(slot), std::move(remote))
      ->start();
}

void refuse_connection(std::shared_ptr<server::impl> srv, tcp::socket socket, errc why) {
  // A lingering refusal holds a descriptor for up to a second; past this many at once, the
  // answer is written and the socket closed at once, so a flood cannot use up the descriptors
  // admitted clients need.
  const std::size_t most_lingering = std::max<std::size_t>(64, srv->options.max_connections / 4);
  const bool linger = srv->refusing.load() < most_lingering;
  std::make_shared<refused_connection>(std::move(srv), std::move(socket), why, linger)->start();
}

}  // namespace detail

}  // namespace keel::net
