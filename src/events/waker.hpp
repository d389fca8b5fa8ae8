#pragma once
// What subscriptions and projections wait on between reads: an io_context running a LISTEN
// connection on keel_events (keel::pg's listener, which reconnects by itself). wait() returns
// when a notification for the watched category arrives, the delay passes or interrupt() is
// called from any thread. Only the owning thread calls wait().
#include <keel/events/store.hpp>
#include <keel/pg/async.hpp>

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

namespace keel::events::detail {

class waker {
 public:
  /// `on_wake` runs on the waiting thread, inside wait(), for each wake-up that counts.
  waker(const std::string& conninfo, std::string category, std::chrono::milliseconds min_reconnect,
        std::chrono::milliseconds max_reconnect, std::function<void()> on_wake)
      : category_(std::move(category)),
        on_wake_(std::move(on_wake)),
        listener_(io_.get_executor(),
                  {.conninfo = conninfo,
                   .channels = {std::string(notify_channel)},
                   .min_reconnect_delay = min_reconnect,
                   .max_reconnect_delay = max_reconnect},
                  [this](const pg::listener_event& e) { on_event(e); }) {
    listener_.start();
  }
  ~waker() { listener_.stop(); }
  waker(const waker&) = delete;
  waker& operator=(const waker&) = delete;

  /// Waits up to `delay`; returns at once if interrupt() was called since the last wait.
  void wait(std::chrono::milliseconds delay) {
    io_.restart();
    if (interrupted_.exchange(false)) return;
    io_.run_for(delay);
  }
  /// Ends the current or next wait. Thread-safe.
  void interrupt() {
    interrupted_ = true;
    io_.stop();
  }

 private:
  void on_event(const pg::listener_event& e) {
    using kind = pg::listener_event::kind;
    if (e.what == kind::disconnected) return;
    // Another category's appends are no news for a category reader.
    if (e.what == kind::notification && !category_.empty() && e.message.payload != category_) return;
    if (on_wake_) on_wake_();
    io_.stop();
  }

  std::string category_;
  std::function<void()> on_wake_;
  std::atomic<bool> interrupted_{false};
  boost::asio::io_context io_;
  pg::listener listener_;
};

}  // namespace keel::events::detail
