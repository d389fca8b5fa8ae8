#include <keel/core/assert.hpp>
#include <keel/core/log.hpp>
#include <keel/redis/client.hpp>

#include "endpoint.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

namespace keel::redis {
namespace asio = boost::asio;

namespace {

// One connection carrying many requests at once: whatever callers submit while a write is in
// flight is coalesced into the next write, and replies are matched to requests in order (RESP
// answers in order). Runs on the client's I/O thread; callers only post to it. Any failure
// (refused, reset, malformed reply, a request past its deadline) fails every request waiting
// on it and the connection is replaced on next use — except that when an established
// connection is lost (closed or reset: a killed client, an idle timeout, a proxy restart) the
// requests not written to it yet are handed to `resubmit`, to go out on another connection.
// One whose write had begun is never sent again: Redis may have run it and only the reply been
// lost, and a command run twice (INCR, a rate-limit decision) counts twice. It fails with
// errc::connection_lost and the caller decides.
class mux : public std::enable_shared_from_this<mux> {
 public:
  using callback = client::reply_handler;
  using resubmit_fn =
      std::function<void(std::string encoded, std::size_t replies, callback done, int retries)>;

  mux(asio::io_context& io, options settings, resubmit_fn resubmit)
      : strand_(asio::make_strand(io)),
        socket_(strand_),
        timer_(strand_),
        options_(std::move(settings)),
        resubmit_(std::move(resubmit)) {}

  /// `retries`: how many times the request may be resubmitted elsewhere when the connection
  /// it went out on is lost before it was written.
  void submit(std::string encoded, std::size_t replies, callback done, int retries) {
    asio::post(strand_,
               [self = shared_from_this(), encoded = std::move(encoded), replies, done = std::move(done),
                retries]() mutable { self->enqueue(std::move(encoded), replies, std::move(done), retries); });
  }
  [[nodiscard]] bool dead() const noexcept { return dead_.load(std::memory_order_acquire); }

 private:
  struct request {
    std::size_t replies;
    callback done;
    std::chrono::steady_clock::time_point deadline;
    std::vector<resp_value> got{};
    std::string retry_with{};  // the encoded commands when the request may be resubmitted
    int retries = 0;
    bool written = false;  // its bytes went into a write: Redis may have run it
  };
  enum class phase : std::uint8_t { fresh, connecting, connected, failed };

  void enqueue(std::string encoded, std::size_t replies, callback done, int retries) {
    if (phase_ == phase::failed) {
      // Lost before anything was sent here: not an attempt, so it keeps its retries. The pool
      // replaces a failed connection, so this ends on a live or a fresh one.
      return resubmit_(std::move(encoded), replies, std::move(done), retries);
    }
    const auto deadline =
        std::chrono::steady_clock::now() + options_.command_timeout +
        (phase_ == phase::connected ? std::chrono::milliseconds(0) : options_.connect_timeout);
    outgoing_ += encoded;
    waiting_.push_back(
        {replies, std::move(done), deadline, {}, retries > 0 ? std::move(encoded) : std::string(), retries});
    arm_timer();
    if (phase_ == phase::fresh) return connect();
    if (phase_ == phase::connected) write();
  }

  void connect() {
    phase_ = phase::connecting;
    const auto endpoint = detail::resolve(strand_, options_);
    if (!endpoint) return fail(errc::unavailable);
    if (!options_.password.empty()) {
      // AUTH goes first, ahead of everything already queued.
      std::string auth;
      append_command(auth, {"AUTH", options_.password});
      outgoing_.insert(0, auth);
      waiting_.push_front({1,
                           [weak = weak_from_this()](error_code e, std::vector<resp_value> r) {
                             if (e || r.empty() || !r.front().is_error()) return;
                             log::warn("Redis refused AUTH", {{"reply", r.front().text}});
                             if (auto self = weak.lock()) self->fail(errc::server_error);
                           },
                           waiting_.front().deadline});
    }
    socket_.async_connect(*endpoint, [self = shared_from_this()](error_code e) {
      if (self->phase_ == phase::failed) return;
      if (e) return self->fail(errc::unavailable);
      self->phase_ = phase::connected;
      error_code ignored;
      self->socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
      self->write();
      self->read();
    });
  }

  void write() {
    if (writing_ || outgoing_.empty()) return;
    writing_ = true;
    // outgoing_ holds exactly the requests not written yet: the newest ones.
    for (auto r = waiting_.rbegin(); r != waiting_.rend() && !r->written; ++r) r->written = true;
    in_flight_.swap(outgoing_);
    asio::async_write(socket_, asio::buffer(in_flight_),
                      [self = shared_from_this()](error_code e, std::size_t) {
                        self->writing_ = false;
                        self->in_flight_.clear();
                        if (self->phase_ == phase::failed) return;
                        if (e) return self->fail(errc::unavailable);
                        self->write();
                      });
  }

  void read() {
    socket_.async_read_some(asio::buffer(buffer_), [self = shared_from_this()](error_code e, std::size_t n) {
      if (self->phase_ == phase::failed) return;
      if (e) return self->fail(self->input_.empty() ? errc::unavailable : errc::protocol_error);
      self->input_.append(self->buffer_.data(), n);
      std::size_t at = 0;
      while (at < self->input_.size()) {
        resp_value value;
        std::size_t used = 0;
        const auto parsed = resp_parser::parse(std::string_view(self->input_).substr(at), used, value);
        if (parsed == resp_parser::status::incomplete) break;
        if (parsed == resp_parser::status::malformed || self->waiting_.empty()) {
          log::warn("malformed or unexpected reply from Redis; closing the connection",
                    {{"bytes", self->input_.substr(at, 64)}});
          return self->fail(errc::protocol_error);
        }
        at += used;
        auto& front = self->waiting_.front();
        KEEL_ASSERT(front.written);  // a reply can only answer a request that went out
        front.got.push_back(std::move(value));
        if (front.got.size() == front.replies) {
          request done = std::move(front);
          self->waiting_.pop_front();
          done.done({}, std::move(done.got));
          if (self->phase_ == phase::failed) return;  // the handler failed it (AUTH refused)
        }
      }
      self->input_.erase(0, at);
      self->read();
    });
  }

  void arm_timer() {
    if (timer_armed_ || waiting_.empty()) return;
    timer_armed_ = true;
    timer_.expires_at(waiting_.front().deadline);
    timer_.async_wait([self = shared_from_this()](error_code) {
      self->timer_armed_ = false;
      if (self->phase_ == phase::failed || self->waiting_.empty()) return;
      if (self->waiting_.front().deadline <= std::chrono::steady_clock::now())
        return self->fail(errc::timeout);
      self->arm_timer();
    });
  }

  void fail(errc why) {
    if (phase_ == phase::failed) return;
    // Only a connection that was up and then lost is worth retrying elsewhere at once: a
    // refused connect means Redis is down (another connection would be refused too), a
    // timeout or a malformed reply mean it is unhealthy, and retrying would only add load.
    const bool lost = why == errc::unavailable && phase_ == phase::connected;
    phase_ = phase::failed;
    dead_.store(true, std::memory_order_release);
    error_code ignored;
    socket_.close(ignored);
    timer_.cancel();
    auto waiting = std::move(waiting_);
    waiting_.clear();
    outgoing_.clear();
    for (auto& r : waiting) {
      if (lost && !r.retry_with.empty() && !r.written) {
        resubmit_(std::move(r.retry_with), r.replies, std::move(r.done), r.retries - 1);
      } else {
        r.done(lost && r.written ? errc::connection_lost : why, {});
      }
    }
  }

  asio::strand<asio::io_context::executor_type> strand_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  options options_;
  resubmit_fn resubmit_;
  phase phase_ = phase::fresh;
  std::atomic<bool> dead_{false};
  std::deque<request> waiting_;
  std::string outgoing_;
  std::string in_flight_;
  bool writing_ = false;
  bool timer_armed_ = false;
  std::string input_;
  std::array<char, std::size_t{64} * 1024> buffer_{};
};

// Waits for one callback: the blocking API on top of the asynchronous one.
struct waiter {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  error_code ec;
  std::vector<resp_value> replies;

  client::reply_handler callback() {
    return [this](error_code e, std::vector<resp_value> r) {
      std::lock_guard guard(mutex);
      ec = e;
      replies = std::move(r);
      done = true;
      cv.notify_one();
    };
  }
  result<std::vector<resp_value>> wait() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [this] { return done; });
    if (ec) return ec;
    return std::move(replies);
  }
};

// The commands of an encoded pipeline, one string each: our own commands are RESP arrays of
// bulk strings, so the parser finds where each ends.
bool split_commands(std::string_view encoded, std::vector<std::string_view>& out) {
  while (!encoded.empty()) {
    resp_value ignored;
    std::size_t used = 0;
    if (resp_parser::parse(encoded, used, ignored) != resp_parser::status::complete) return false;
    out.push_back(encoded.substr(0, used));
    encoded.remove_prefix(used);
  }
  return true;
}

}  // namespace

struct client::impl {
  options settings;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread io_thread;
  std::mutex mutex;
  std::vector<std::shared_ptr<mux>> connections;
  std::size_t next = 0;

  explicit impl(options o) : settings(std::move(o)) {
    connections.resize(std::max<std::size_t>(settings.max_connections, 1));
    io_thread = std::thread([this] { io.run(); });
  }
  ~impl() {
    work.reset();
    io.stop();
    io_thread.join();
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  // Round robin over the connections; a failed one is replaced here.
  std::shared_ptr<mux> pick() {
    std::lock_guard guard(mutex);
    auto& slot = connections[next++ % connections.size()];
    if (!slot || slot->dead()) {
      // A request not yet written to a lost connection goes out on the next one.
      slot = std::make_shared<mux>(
          io, settings, [this](std::string encoded, std::size_t replies, reply_handler done, int retries) {
            pick()->submit(std::move(encoded), replies, std::move(done), retries);
          });
    }
    return slot;
  }

  // A request on a lost connection goes out again on another; with every connection of the
  // pool lost at once (Redis closed them all) it may take one try per connection.
  [[nodiscard]] int retries() const noexcept { return static_cast<int>(connections.size()); }

  void submit(std::string encoded, std::size_t replies, reply_handler done) {
    if (replies == 0) {
      asio::post(io, [done = std::move(done)] { done({}, {}); });
      return;
    }
    pick()->submit(std::move(encoded), replies, std::move(done), retries());
  }
};

client::client(options o) : impl_(std::make_unique<impl>(std::move(o))) {}
client::~client() = default;

const options& client::settings() const noexcept {
  return impl_->settings;
}

void client::submit(std::string encoded, std::size_t replies, reply_handler done) {
  impl_->submit(std::move(encoded), replies, std::move(done));
}

void client::post(std::function<void()> fn) {
  asio::post(impl_->io, std::move(fn));
}

void client::submit_script(const script& s, std::string encoded, std::size_t replies, reply_handler done) {
  // A copy of the calls stays here for the NOSCRIPT path: Redis lost the script (restart,
  // failover, SCRIPT FLUSH) and ran none of the calls it answered NOSCRIPT.
  auto first = [this, &s, encoded, done = std::move(done)](error_code ec, std::vector<resp_value> r) mutable {
    if (ec) return done(ec, {});
    std::vector<std::size_t> missing;
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (script::is_noscript(r[i])) missing.push_back(i);
    }
    if (missing.empty()) return done({}, std::move(r));
    std::vector<std::string_view> calls;
    if (!split_commands(encoded, calls) || calls.size() != r.size()) return done(errc::invalid_argument, {});
    // Only the calls answered NOSCRIPT go again: another client may have loaded the script
    // meanwhile, and the others ran.
    std::string again;
    append_command(again, {"SCRIPT", "LOAD", s.body()});
    for (const auto i : missing) again += calls[i];
    const std::size_t resent = missing.size();
    impl_->submit(std::move(again), resent + 1,
                  [done = std::move(done), missing = std::move(missing), r = std::move(r)](
                      error_code e, std::vector<resp_value> reloaded) mutable {
                    if (e) return done(e, {});
                    if (reloaded.front().is_error()) {
                      log::warn("Redis refused SCRIPT LOAD", {{"reply", reloaded.front().text}});
                      return done(errc::server_error, {});
                    }
                    for (std::size_t j = 0; j < missing.size(); ++j)
                      r[missing[j]] = std::move(reloaded[j + 1]);
                    done({}, std::move(r));
                  });
  };
  impl_->submit(std::move(encoded), replies, std::move(first));
}

result<resp_value> client::command(std::span<const std::string_view> args) {
  if (args.empty()) return errc::invalid_argument;
  std::string encoded;
  append_command(encoded, args);
  auto replies = pipeline(std::move(encoded), 1);
  if (!replies) return replies.error();
  return std::move(replies->front());
}

result<std::vector<resp_value>> client::pipeline(std::string encoded, std::size_t count) {
  waiter w;
  impl_->submit(std::move(encoded), count, w.callback());
  return w.wait();
}

}  // namespace keel::redis
