// WebSocket sessions: the handshake, reads, a bounded write queue that closes slow consumers,
// rooms, and the close handshake with its timer.
#include "server_impl.hpp"

#include <boost/asio/post.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include <deque>
#include <set>

namespace keel::net {

namespace ws = beast::websocket;

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

  // unregister_session erases under the server's mutex: only a failing lock (a deadlock, a
  // contract violation that ends the program anyway) could throw.
  // NOLINTNEXTLINE(bugprone-exception-escape)
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

namespace detail {

void start_websocket_session(std::shared_ptr<server::impl> srv, beast::tcp_stream stream,
                             asio::any_io_executor ex, const websocket_handler& handler, request req,
                             connection_slot slot, http::request<http::string_body> upgrade) {
  auto session = std::make_shared<websocket_session>(std::move(srv), std::move(stream), std::move(ex),
                                                     handler, std::move(req), std::move(slot));
  session->run(std::move(upgrade));
}

bool enqueue_broadcast(websocket_session& session, std::shared_ptr<const std::string> message) {
  return session.enqueue(std::move(message), false);
}

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

}  // namespace keel::net
