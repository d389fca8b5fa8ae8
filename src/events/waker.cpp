#include "waker.hpp"

#include <keel/events/store.hpp>
#include <keel/pg/async.hpp>

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <utility>

namespace keel::events::detail {

struct waker::impl {
  std::string category;
  std::function<void()> on_wake;
  std::atomic<bool> interrupted{false};
  boost::asio::io_context io;
  pg::listener listener;

  impl(const std::string& conninfo, std::string c, std::chrono::milliseconds min_reconnect,
       std::chrono::milliseconds max_reconnect, std::function<void()> wake)
      : category(std::move(c)),
        on_wake(std::move(wake)),
        listener(io.get_executor(),
                 {.conninfo = conninfo,
                  .channels = {std::string(notify_channel)},
                  .min_reconnect_delay = min_reconnect,
                  .max_reconnect_delay = max_reconnect},
                 [this](const pg::listener_event& e) { on_event(e); }) {}

  void on_event(const pg::listener_event& e) {
    using kind = pg::listener_event::kind;
    if (e.what == kind::disconnected) return;
    // Another category's appends are no news for a category reader.
    if (e.what == kind::notification && !category.empty() && e.message.payload != category) return;
    if (on_wake) on_wake();
    io.stop();
  }
};

waker::waker(const std::string& conninfo, std::string category, std::chrono::milliseconds min_reconnect,
             std::chrono::milliseconds max_reconnect, std::function<void()> on_wake)
    : impl_(std::make_unique<impl>(conninfo, std::move(category), min_reconnect, max_reconnect,
                                   std::move(on_wake))) {
  impl_->listener.start();
}

waker::~waker() {
  impl_->listener.stop();
}

void waker::wait(std::chrono::milliseconds delay) {
  impl_->io.restart();
  if (impl_->interrupted.exchange(false)) return;
  impl_->io.run_for(delay);
}

void waker::interrupt() {
  impl_->interrupted = true;
  impl_->io.stop();
}

}  // namespace keel::events::detail
