#include <keel/core/assert.hpp>
#include <keel/core/log.hpp>
#include <keel/redis/resp.hpp>
#include <keel/redis/subscriber.hpp>

#include "endpoint.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <optional>
#include <set>
#include <thread>

namespace keel::redis {
namespace asio = boost::asio;

// Everything but the calls' hand-over runs on the subscriber's one I/O thread, so the state
// below needs no lock; callers post to it and wait on a promise. Handlers capture `this`: the
// subscriber stops and joins the thread before the impl goes away.
struct subscriber::impl {
  // One SUBSCRIBE/UNSUBSCRIBE/... sent and waiting for Redis's confirmations (one per name;
  // for an UNSUBSCRIBE of everything, one per name subscribed when Redis runs it, at least one).
  struct pending {
    std::string_view kind;
    std::size_t remaining;  // 0: "everything", counted when its first confirmation comes
    std::promise<error_code> done;
    std::chrono::steady_clock::time_point deadline;
  };

  asio::io_context io{1};
  asio::ip::tcp::socket socket{io};
  asio::steady_timer timer{io};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  subscriber_handlers handlers;
  std::chrono::milliseconds command_timeout{500};
  std::atomic<bool> open{true};
  std::atomic<std::size_t> confirmed{0};
  std::deque<pending> waiting;
  std::set<std::string, std::less<>> channels;
  std::set<std::string, std::less<>> patterns;
  std::string outgoing;
  std::string in_flight;
  bool writing = false;
  bool timer_armed = false;
  std::string input;
  std::array<char, std::size_t{16} * 1024> buffer{};

  ~impl() {
    work.reset();
    io.stop();
    if (thread.joinable()) thread.join();
  }

  // Before the I/O thread runs: the io_context until `done` or the deadline; false on timeout.
  bool run_until(const bool& done, std::chrono::steady_clock::time_point deadline) {
    io.restart();
    while (!done) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline || io.run_one_for(deadline - now) == 0) {
        if (done) break;
        error_code ignored;
        socket.close(ignored);
        io.restart();
        io.run();
        return false;
      }
    }
    return true;
  }

  void start() {
    io.restart();
    work.emplace(io.get_executor());
    thread = std::thread([this] { io.run(); });
    asio::post(io, [this] { read(); });
  }

  void send(const std::string& encoded, std::string_view kind, std::size_t expected,
            std::promise<error_code> done) {
    if (!open.load()) return done.set_value(errc::closed);
    waiting.push_back({kind, expected, std::move(done), std::chrono::steady_clock::now() + command_timeout});
    outgoing += encoded;
    arm_timer();
    write();
  }

  void write() {
    if (writing || outgoing.empty()) return;
    writing = true;
    in_flight.swap(outgoing);
    asio::async_write(socket, asio::buffer(in_flight), [this](error_code e, std::size_t) {
      writing = false;
      in_flight.clear();
      if (!open.load()) return;
      if (e) return fail(errc::connection_lost);
      write();
    });
  }

  void arm_timer() {
    if (timer_armed || waiting.empty()) return;
    timer_armed = true;
    timer.expires_at(waiting.front().deadline);
    timer.async_wait([this](error_code) {
      timer_armed = false;
      if (!open.load() || waiting.empty()) return;
      if (waiting.front().deadline <= std::chrono::steady_clock::now()) return fail(errc::timeout);
      arm_timer();
    });
  }

  void read() {
    socket.async_read_some(asio::buffer(buffer), [this](error_code e, std::size_t n) {
      if (!open.load()) return;
      if (e) return fail(input.empty() ? errc::connection_lost : errc::protocol_error);
      input.append(buffer.data(), n);
      std::size_t at = 0;
      while (at < input.size()) {
        resp_value value;
        std::size_t used = 0;
        const auto parsed = resp_parser::parse(std::string_view(input).substr(at), used, value);
        if (parsed == resp_parser::status::incomplete) break;
        if (parsed == resp_parser::status::malformed || !handle(value)) {
          log::warn("malformed or unexpected message from Redis in subscribed mode; closing the connection",
                    {{"bytes", input.substr(at, 64)}});
          return fail(errc::protocol_error);
        }
        if (!open.load()) return;
        at += used;
      }
      input.erase(0, at);
      read();
    });
  }

  static bool is_text(const resp_value& v) noexcept {
    return v.type == resp_value::kind::bulk_string || v.type == resp_value::kind::simple_string;
  }

  // One push from Redis; false when it is not one subscribed mode can send.
  bool handle(resp_value& v) {
    if (v.is_error()) {
      // Redis refused a (P)(UN)SUBSCRIBE (an ACL, say): that command is over.
      if (waiting.empty()) return false;
      log::warn("Redis refused a subscription command", {{"reply", v.text}});
      waiting.front().done.set_value(errc::server_error);
      waiting.pop_front();
      return true;
    }
    if (v.type != resp_value::kind::array || v.elements.empty() || !is_text(v.elements[0])) return false;
    auto& e = v.elements;
    const std::string_view kind = e[0].text;
    if (kind == "message" && e.size() == 3 && is_text(e[1]) && is_text(e[2])) {
      if (handlers.on_message)
        handlers.on_message({.channel = std::move(e[1].text), .payload = std::move(e[2].text)});
      return true;
    }
    if (kind == "pmessage" && e.size() == 4 && is_text(e[1]) && is_text(e[2]) && is_text(e[3])) {
      if (handlers.on_message) {
        handlers.on_message({.channel = std::move(e[2].text),
                             .payload = std::move(e[3].text),
                             .pattern = std::move(e[1].text)});
      }
      return true;
    }
    if (kind == "pong") return true;
    const bool confirmation =
        kind == "subscribe" || kind == "unsubscribe" || kind == "psubscribe" || kind == "punsubscribe";
    if (!confirmation || e.size() != 3 || e[2].type != resp_value::kind::integer || e[2].integer < 0)
      return false;
    // Confirmations come in the order the commands went out.
    if (waiting.empty() || waiting.front().kind != kind) return false;
    auto& names = kind.starts_with('p') ? patterns : channels;
    auto& front = waiting.front();
    if (front.remaining == 0) front.remaining = std::max<std::size_t>(names.size(), 1);
    if (is_text(e[1])) {
      if (kind.starts_with("un") || kind.starts_with("pun")) {
        names.erase(e[1].text);
      } else {
        names.insert(std::move(e[1].text));
      }
    }
    confirmed.store(static_cast<std::size_t>(e[2].integer));
    KEEL_ASSERT(front.remaining > 0, "a command waiting for confirmations expects at least one");
    if (--front.remaining == 0) {
      front.done.set_value({});
      waiting.pop_front();
    }
    return true;
  }

  void fail(errc why) {
    if (!open.exchange(false)) return;
    error_code ignored;
    socket.close(ignored);
    timer.cancel();
    for (auto& w : waiting) w.done.set_value(why);
    waiting.clear();
    if (handlers.on_error) handlers.on_error(why);
  }

  result<void> call(std::string_view command, std::string_view kind, std::span<const std::string_view> names,
                    bool everything) {
    KEEL_ASSERT(std::this_thread::get_id() != thread.get_id(),
                "a subscriber's blocking calls must not be made from its own handlers: that deadlocks");
    if (names.empty() && !everything) return errc::invalid_argument;
    if (!open.load()) return errc::closed;
    std::string encoded;
    append_array_header(encoded, 1 + names.size());
    append_bulk(encoded, command);
    for (const auto n : names) append_bulk(encoded, n);
    std::promise<error_code> promise;
    auto answer = promise.get_future();
    asio::post(
        io, [this, encoded = std::move(encoded), kind, expected = names.size(),
             promise = std::move(promise)]() mutable { send(encoded, kind, expected, std::move(promise)); });
    if (const auto ec = answer.get()) return ec;
    return {};
  }
};

subscriber::subscriber(std::unique_ptr<impl> i) noexcept : impl_(std::move(i)) {}
subscriber::subscriber(subscriber&&) noexcept = default;
subscriber& subscriber::operator=(subscriber&&) noexcept = default;
subscriber::~subscriber() {
  if (impl_) {
    KEEL_ASSERT(std::this_thread::get_id() != impl_->thread.get_id(),
                "a subscriber must not be destroyed from its own handlers");
  }
}

result<subscriber> subscriber::connect(const options& options, subscriber_handlers handlers) {
  auto s = std::make_unique<impl>();
  s->handlers = std::move(handlers);
  s->command_timeout = options.command_timeout;
  if (const auto failed = detail::connect_socket(*s, options)) return failed;
  if (!options.password.empty()) {
    // Before subscribed mode: an ordinary command and its reply, read here.
    std::string auth;
    append_command(auth, {"AUTH", options.password});
    const auto deadline = std::chrono::steady_clock::now() + options.command_timeout;
    bool done = false;
    error_code write_ec;
    asio::async_write(s->socket, asio::buffer(auth), [&](error_code e, std::size_t) {
      write_ec = e;
      done = true;
    });
    if (!s->run_until(done, deadline)) return errc::timeout;
    if (write_ec) return errc::connection_lost;
    resp_value reply;
    for (;;) {
      std::size_t used = 0;
      const auto parsed = resp_parser::parse(s->input, used, reply);
      if (parsed == resp_parser::status::malformed) return errc::protocol_error;
      if (parsed == resp_parser::status::complete) {
        s->input.erase(0, used);
        break;
      }
      done = false;
      std::size_t got = 0;
      error_code read_ec;
      s->socket.async_read_some(asio::buffer(s->buffer), [&](error_code e, std::size_t n) {
        read_ec = e;
        got = n;
        done = true;
      });
      if (!s->run_until(done, deadline)) return errc::timeout;
      if (read_ec) return errc::connection_lost;
      s->input.append(s->buffer.data(), got);
    }
    if (reply.is_error()) {
      log::warn("Redis refused AUTH", {{"reply", reply.text}});
      return errc::server_error;
    }
  }
  s->start();
  return subscriber(std::move(s));
}

result<void> subscriber::subscribe(std::span<const std::string_view> channels) {
  return impl_->call("SUBSCRIBE", "subscribe", channels, false);
}
result<void> subscriber::psubscribe(std::span<const std::string_view> patterns) {
  return impl_->call("PSUBSCRIBE", "psubscribe", patterns, false);
}
result<void> subscriber::unsubscribe(std::span<const std::string_view> channels) {
  return impl_->call("UNSUBSCRIBE", "unsubscribe", channels, channels.empty());
}
result<void> subscriber::punsubscribe(std::span<const std::string_view> patterns) {
  return impl_->call("PUNSUBSCRIBE", "punsubscribe", patterns, patterns.empty());
}

std::size_t subscriber::subscriptions() const noexcept {
  return impl_->confirmed.load();
}
bool subscriber::healthy() const noexcept {
  return impl_ && impl_->open.load();
}

}  // namespace keel::redis
