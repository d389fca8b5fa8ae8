#include <keel/core/backoff.hpp>
#include <keel/core/log.hpp>
#include <keel/pg/async.hpp>

#include "connection_state.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <optional>

#include <unistd.h>

namespace keel::pg {
namespace asio = boost::asio;

namespace {

// One async statement: send, flush as the socket allows, read until the last result.
struct query_operation : std::enable_shared_from_this<query_operation> {
  connection& c;
  std::string sql;
  params values;
  asio::posix::stream_descriptor socket;
  asio::any_completion_handler<void(error_code, rows)> handler;
  result<rows> outcome{rows{}};
  bool got_result = false;

  query_operation(const asio::any_io_executor& ex, connection& conn, std::string text, params p,
                  asio::any_completion_handler<void(error_code, rows)> h)
      : c(conn), sql(std::move(text)), values(std::move(p)), socket(ex), handler(std::move(h)) {}

  PGconn* conn() { return c.internals().conn; }

  void start() {
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) {
      slot.assign([this](asio::cancellation_type) { (void)c.cancel(); });
    }
    const int fd = ::dup(PQsocket(conn()));
    if (fd < 0 || PQstatus(conn()) != CONNECTION_OK) {
      if (fd >= 0) ::close(fd);
      return finish(c.internals().fail(errc::connection_lost, "connection is closed", sql));
    }
    socket.assign(fd);
    PQsetnonblocking(conn(), 1);
    if (PQsendQueryParams(conn(), sql.c_str(), static_cast<int>(values.size()), values.types(),
                          values.values(), values.lengths(), values.formats(), 1) != 1) {
      return finish(c.internals().fail_from_result(nullptr, sql));
    }
    flush();
  }

  void flush() {
    const int pending = PQflush(conn());
    if (pending < 0) return finish(c.internals().fail_from_result(nullptr, sql));
    if (pending == 0) return wait_for_results();
    socket.async_wait(asio::posix::stream_descriptor::wait_write, [self = shared_from_this()](error_code ec) {
      if (ec) return self->finish(ec);
      self->flush();
    });
  }

  void wait_for_results() {
    socket.async_wait(asio::posix::stream_descriptor::wait_read, [self = shared_from_this()](error_code ec) {
      if (ec) return self->finish(ec);
      self->read();
    });
  }

  void read() {
    if (PQconsumeInput(conn()) == 0) return finish(c.internals().fail_from_result(nullptr, sql));
    while (PQisBusy(conn()) == 0) {
      PGresult* r = PQgetResult(conn());
      if (r == nullptr) return finish({});
      // Keep the first failure, else the last result.
      auto taken = c.internals().take(r, sql);
      if (!got_result || outcome.has_value()) outcome = std::move(taken);
      got_result = true;
    }
    wait_for_results();
  }

  void finish(error_code ec) {
    PQsetnonblocking(conn(), 0);
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.clear();
    if (ec) outcome = result<rows>(boost::system::in_place_error, ec);
    const error_code error = outcome.has_value() ? error_code{} : outcome.error();
    rows value = outcome.has_value() ? std::move(*outcome) : rows{};
    // Completion always goes through the executor, never inside the initiating call.
    asio::post(socket.get_executor(), [done = std::move(handler), error, value = std::move(value)]() mutable {
      std::move(done)(error, std::move(value));
    });
  }
};

}  // namespace

void detail::start_async_query(const asio::any_io_executor& executor, connection& c, std::string sql,
                               params values, asio::any_completion_handler<void(error_code, rows)> handler) {
  auto op =
      std::make_shared<query_operation>(executor, c, std::move(sql), std::move(values), std::move(handler));
  asio::dispatch(op->socket.get_executor(), [op] { op->start(); });
}

struct listener::impl : std::enable_shared_from_this<impl> {
  asio::strand<asio::any_io_executor> strand;
  listener_options options;
  handler_type handler;
  std::optional<connection> conn;
  asio::posix::stream_descriptor socket;
  asio::steady_timer reconnect_timer;
  asio::steady_timer health_timer;
  backoff reconnect_delay;  // jittered, so listeners cut off together do not reconnect together
  bool ever_connected = false;
  bool stopped = false;
  std::atomic<std::uint64_t> reconnect_count{0};

  impl(const asio::any_io_executor& ex, listener_options o, handler_type h)
      : strand(asio::make_strand(ex)),
        options(std::move(o)),
        handler(std::move(h)),
        socket(strand),
        reconnect_timer(strand),
        health_timer(strand),
        reconnect_delay({.initial = options.min_reconnect_delay, .max = options.max_reconnect_delay}) {}

  void emit(const listener_event& event) {
    if (!stopped && handler) handler(event);
  }

  void connect() {
    if (stopped) return;
    diagnostics why;
    auto opened = connection::connect(options.conninfo, options.connect, &why);
    if (!opened) return lost(opened.error(), why.message);
    conn.emplace(std::move(*opened));
    for (const auto& channel : options.channels) {
      auto quoted = conn->quote_identifier(channel);
      if (!quoted) return lost(quoted.error(), "invalid channel name");
      // LISTEN takes no parameters; the channel is quoted as an identifier.
      if (auto r = conn->execute("LISTEN " + *quoted); !r) return lost(r.error(), conn->last_error().message);
    }
    const int fd = ::dup(PQsocket(conn->native()));
    if (fd < 0) return lost(errc::connection_lost, "could not watch the socket");
    socket.assign(fd);
    reconnect_delay.reset();
    if (ever_connected) {
      reconnect_count.fetch_add(1, std::memory_order_relaxed);
      log::info("listener reconnected; notifications may have been missed",
                {{"channels", options.channels.size()}});
      emit({listener_event::kind::reconnected, {}, {}});
    } else {
      ever_connected = true;
      emit({listener_event::kind::connected, {}, {}});
    }
    drain();  // anything that arrived while we set up
    wait();
    schedule_health_check();
  }

  void wait() {
    socket.async_wait(asio::posix::stream_descriptor::wait_read, [self = shared_from_this()](error_code ec) {
      if (ec == asio::error::operation_aborted || self->stopped) return;
      if (ec) return self->lost(ec, ec.message());
      if (PQconsumeInput(self->conn->native()) == 0) {
        return self->lost(errc::connection_lost, PQerrorMessage(self->conn->native()));
      }
      self->drain();
      if (!self->stopped && self->conn) self->wait();
    });
  }

  void drain() {
    if (!conn) return;
    while (PGnotify* n = PQnotifies(conn->native())) {
      listener_event event{listener_event::kind::notification, {n->relname, n->extra, n->be_pid}, {}};
      PQfreemem(n);
      emit(event);
      if (!conn) return;  // the handler may have stopped us
    }
  }

  void schedule_health_check() {
    health_timer.expires_after(options.health_check_interval);
    health_timer.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->stopped || !self->conn) return;
      if (auto r = self->conn->execute("SELECT 1"); !r) {
        return self->lost(r.error(), self->conn->last_error().message);
      }
      self->drain();
      self->schedule_health_check();
    });
  }

  void lost(error_code ec, const std::string& why) {
    if (stopped) return;
    error_code ignored;
    socket.close(ignored);
    health_timer.cancel();
    const bool was_connected = conn.has_value();
    conn.reset();
    if (was_connected) {
      log::warn("listener lost its connection; reconnecting", {{"reason", why}});
      emit({listener_event::kind::disconnected, {}, ec});
    }
    reconnect_timer.expires_after(reconnect_delay.next());
    reconnect_timer.async_wait([self = shared_from_this()](error_code timer_ec) {
      if (!timer_ec) self->connect();
    });
  }

  void shut_down() {
    stopped = true;
    error_code ignored;
    socket.close(ignored);
    reconnect_timer.cancel();
    health_timer.cancel();
    conn.reset();
  }
};

listener::listener(const asio::any_io_executor& executor, listener_options options, handler_type handler)
    : impl_(std::make_shared<impl>(executor, std::move(options), std::move(handler))) {}

listener::~listener() {  // NOLINT(bugprone-exception-escape): see the declaration
  stop();
}

void listener::start() {
  asio::post(impl_->strand, [self = impl_] { self->connect(); });
}

void listener::stop() {
  if (impl_->strand.running_in_this_thread()) {
    impl_->shut_down();
  } else {
    // Off the strand: mark stopped first so no new handler call starts, then clean up on it.
    asio::post(impl_->strand, [self = impl_] { self->shut_down(); });
  }
}

std::uint64_t listener::reconnects() const noexcept {
  return impl_->reconnect_count.load(std::memory_order_relaxed);
}

}  // namespace keel::pg
