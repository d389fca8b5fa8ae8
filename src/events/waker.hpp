#pragma once
// What subscriptions, projections and consumers wait on between reads: an io_context running a
// LISTEN connection on keel_events (keel::pg's listener, which reconnects by itself). wait()
// returns when a notification for the watched category arrives, the delay passes or interrupt()
// is called from any thread. Only the owning thread calls wait(). Asio stays in waker.cpp.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace keel::events::detail {

class waker {
 public:
  /// `on_wake` runs on the waiting thread, inside wait(), for each wake-up that counts.
  waker(const std::string& conninfo, std::string category, std::chrono::milliseconds min_reconnect,
        std::chrono::milliseconds max_reconnect, std::function<void()> on_wake);
  ~waker();
  waker(const waker&) = delete;
  waker& operator=(const waker&) = delete;

  /// Waits up to `delay`; returns at once if interrupt() was called since the last wait.
  void wait(std::chrono::milliseconds delay);
  /// Ends the current or next wait. Thread-safe.
  void interrupt();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::events::detail
