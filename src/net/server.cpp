// keel::net::server: configuration, start and stop, accepting connections under the limits,
// the middleware chain and routing, metrics, and broadcasts. Sessions live in http_session.cpp
// and websocket_session.cpp.
#include "server_impl.hpp"
#include "static_files.hpp"

#include <boost/asio/post.hpp>
#include <boost/json/object.hpp>

#include <charconv>
#include <csignal>
#include <stdexcept>

namespace keel::net {

namespace {

// Whom max_connections_per_client counts a connection against: its IPv4 address, or the /64
// of its IPv6 address, since one IPv6 host usually holds a whole /64 to pick sources from.
std::string client_key(const asio::ip::address& a) {
  if (a.is_v6() && !a.to_v6().is_v4_mapped()) {
    auto bytes = a.to_v6().to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);
    return asio::ip::address_v6(bytes).to_string() + "/64";
  }
  if (a.is_v6()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
  return a.to_string();
}

std::string_view method_label(method m) noexcept {
  return m == method::other ? std::string_view("OTHER") : to_string(m);
}

}  // namespace

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

void server::impl::do_accept() {
  acceptor.async_accept(
      asio::make_strand(ioc), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
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
        auto admitted = connection_slot::admit(self.get(), client_key(peer.address()));
        if (auto* slot = std::get_if<connection_slot>(&admitted)) {
          detail::start_http_session(self, std::move(socket), std::move(*slot), std::move(remote));
        } else {
          const errc why = std::get<errc>(admitted);
          (why == errc::too_many_connections ? self->rejected : self->rejected_per_client).inc();
          detail::refuse_connection(self, std::move(socket), why);
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

server::~server() {  // NOLINT(bugprone-exception-escape): see the declaration
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

server& server::serve_static(std::string_view prefix, const std::filesystem::path& root,
                             static_options options) {
  impl_->require_not_started("serve_static()");
  std::string pattern(prefix);
  while (!pattern.empty() && pattern.back() == '/') pattern.pop_back();
  pattern += "/{path...}";
  impl_->routes.add(method::get, pattern, detail::make_static_handler(root, std::move(options)));
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
  for (const auto& m : members) delivered += detail::enqueue_broadcast(*m, shared) ? 1U : 0U;
  return delivered;
}

metrics::registry& server::metrics() noexcept {
  return *impl_->registry;
}

std::size_t server::connections() const noexcept {
  return impl_->open.load();
}

}  // namespace keel::net
