#pragma once
// What subscriptions, projections and consumers share: a thread that runs until stopped, whose
// waits stop() interrupts, and stats that other threads read and wait on.
#include <keel/events/error.hpp>

#include "waker.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

namespace keel::events::detail {

/// A value guarded by a mutex, with a condition variable for waiting on it.
template <class T>
class observed {
 public:
  void update(const std::function<void(T&)>& change) {
    {
      const std::lock_guard lock(mutex_);
      change(value_);
    }
    changed_.notify_all();
  }
  [[nodiscard]] T get() const {
    const std::lock_guard lock(mutex_);
    return value_;
  }
  /// Waits until `ready(value)` holds (true) or `timeout` passes.
  template <class Predicate>
  [[nodiscard]] bool wait(std::chrono::milliseconds timeout, Predicate ready) const {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return ready(value_); });
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  T value_{};
};

/// Calls a user's event handler: an exception counts as a failure (errc::handler_failed), and
/// a failure is counted in `stats` (handler_failures, last_error). @returns true when handled.
template <class Stats, class Handler, class Event>
[[nodiscard]] bool handle_event(const Handler& handler, const Event& e, observed<Stats>& stats) {
  result<void> handled;
  try {
    handled = handler(e);
  } catch (const std::exception&) {
    handled = errc::handler_failed;
  }
  if (handled) return true;
  const auto failure = handled.error();
  stats.update([failure](Stats& s) {
    ++s.handler_failures;
    s.last_error = failure;
  });
  return false;
}

/// The thread of a subscription, projection or consumer. The thread attaches its waker while it
/// runs, so stop() can end a wait at once; stop() holds the lock while interrupting, so the
/// thread cannot destroy the waker meanwhile.
class runner {
 public:
  runner() = default;
  runner(const runner&) = delete;
  runner& operator=(const runner&) = delete;
  ~runner() { stop(); }

  [[nodiscard]] bool running() const noexcept { return thread_.joinable(); }
  [[nodiscard]] bool stopping() const noexcept { return stopping_.load(); }

  void start(std::function<void()> body) {
    stopping_ = false;
    thread_ = std::thread(std::move(body));
  }
  /// Asks the thread to stop, ends its wait, joins. Idempotent.
  void stop() {
    if (!thread_.joinable()) return;
    stopping_ = true;
    {
      const std::lock_guard lock(mutex_);
      if (waker_ != nullptr) waker_->interrupt();
    }
    thread_.join();
  }
  /// Called by the thread: its waker while it runs, nullptr before the waker goes.
  void attach(waker* w) {
    const std::lock_guard lock(mutex_);
    waker_ = w;
  }
  /// Waits on the thread's waker up to `delay`, unless stopping.
  void wait(waker& w, std::chrono::milliseconds delay) const {
    if (!stopping()) w.wait(delay);
  }

 private:
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  waker* waker_ = nullptr;
  std::thread thread_;
};

}  // namespace keel::events::detail
