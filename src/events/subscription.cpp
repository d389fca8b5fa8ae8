// A subscription's thread: read to the horizon and hand each event over, save the checkpoint,
// then wait on the waker (a LISTEN connection) until a notification, the poll interval or
// stop() ends the wait. Only this thread touches the read connection.
#include <keel/core/assert.hpp>
#include <keel/core/backoff.hpp>
#include <keel/core/log.hpp>
#include <keel/events/subscription.hpp>

#include "lag.hpp"
#include "runner.hpp"
#include "waker.hpp"

#include <atomic>
#include <thread>
#include <utility>

namespace keel::events {

struct subscription::impl {
  subscription_options options;
  handler_type handler;
  store events;

  detail::observed<subscription_stats> stats;
  detail::runner runner;

  // Owned by the thread once it runs.
  all_position position;
  all_position saved;
  std::optional<pg::connection> connection;
  bool ever_connected = false;
  std::optional<timestamp> last_recorded;  // of the last event handled

  impl(subscription_options o, handler_type h)
      : options(std::move(o)),
        handler(std::move(h)),
        events(store_options{.upcast = options.upcast, .metrics = options.metrics}) {}

  void update(const std::function<void(subscription_stats&)>& change) { stats.update(change); }

  void record_error(error_code ec) {
    update([ec](subscription_stats& s) { s.last_error = ec; });
  }

  [[nodiscard]] std::string_view reader_name() const {
    return options.name.empty() ? std::string_view("subscription") : std::string_view(options.name);
  }

  result<void> save() {
    if (options.name.empty() || position == saved || !connection) return {};
    if (auto done = events.save_checkpoint(*connection, options.name, position); !done) return done;
    saved = position;
    return {};
  }

  // Reads from `position` to the horizon, handing each event over. @returns true when it
  // caught up, false when the handler failed (the event is retried after a backoff).
  result<bool> drain() {
    for (;;) {
      std::size_t since_checkpoint = 0;
      bool handler_failed = false;
      bool pause_to_save = false;
      auto end = events.for_each(*connection,
                                 {.after = position,
                                  .max_count = options.page_size,
                                  .category = options.category,
                                  .types = options.types,
                                  .stream = options.stream},
                                 [&](const recorded_event& e) {
                                   if (!detail::handle_event(handler, e, stats)) {
                                     handler_failed = true;
                                     return false;
                                   }
                                   KEEL_ASSERT(e.position > position);
                                   position = e.position;
                                   last_recorded = e.recorded_at;
                                   update([&](subscription_stats& s) {
                                     ++s.delivered;
                                     s.position = position;
                                   });
                                   if (++since_checkpoint >= options.checkpoint_every) {
                                     pause_to_save = true;
                                     return false;
                                   }
                                   return !runner.stopping();
                                 });
      if (!end) return {boost::system::in_place_error, end.error()};
      // for_each counts the event its handler stopped at as handled; a failed one was not, so
      // the position stays at the last success and the failed event is read again.
      if (handler_failed) return false;
      KEEL_ASSERT(*end >= position);
      position = *end;
      if (pause_to_save) {
        detail::report_lag(events, *connection, options.metrics, reader_name(), false, position,
                           last_recorded);
        if (auto done = save(); !done) return {boost::system::in_place_error, done.error()};
        continue;
      }
      if (runner.stopping()) return false;
      detail::report_lag(events, *connection, options.metrics, reader_name(), true, position, last_recorded);
      update([this](subscription_stats& s) {
        s.position = position;
        s.caught_up = true;
        s.last_error = {};
      });
      return true;
    }
  }

  void run() {
    detail::waker waker(options.conninfo,
                        options.stream.empty() ? options.category : std::string(category_of(options.stream)),
                        options.min_retry_delay, options.max_retry_delay,
                        [this] { update([](subscription_stats& s) { ++s.wakeups; }); });
    runner.attach(&waker);
    const auto wait = [&](std::chrono::milliseconds delay) { runner.wait(waker, delay); };
    backoff retry({.initial = options.min_retry_delay, .max = options.max_retry_delay});
    // After a wake-up that found nothing new (the events wait behind the horizon, or were of
    // other types), look again soon, then less often, up to the poll interval.
    std::chrono::milliseconds recheck = options.poll_interval;
    while (!runner.stopping()) {
      if (!connection || !connection->is_open()) {
        const bool first = !ever_connected;
        auto opened =
            pg::connection::connect(options.conninfo, {.application_name = "keel-events-subscription"});
        if (!opened) {
          record_error(opened.error());
          wait(retry.next());
          continue;
        }
        connection = std::move(*opened);
        ever_connected = true;
        if (!first) update([](subscription_stats& s) { ++s.reconnects; });
      }
      const auto before = position;
      auto drained = drain();
      if (!drained) {
        record_error(drained.error());
        log::warn("events subscription read failed",
                  {{"subscription", options.name}, {"error", drained.error().message()}});
        if (connection && !connection->is_open()) connection.reset();
        wait(retry.next());
        continue;
      }
      if (!*drained) {
        if (!runner.stopping()) wait(retry.next());  // the handler failed: the same event again
        continue;
      }
      retry.reset();
      if (auto done = save(); !done) record_error(done.error());
      const bool found = position != before;
      recheck = found ? std::chrono::milliseconds(1) : std::min(recheck * 2, options.poll_interval);
      wait(recheck < options.poll_interval ? recheck : options.poll_interval);
    }
    if (connection && connection->is_open()) (void)save();
    runner.attach(nullptr);
  }
};

subscription::subscription(subscription_options options, handler_type handler)
    : impl_(std::make_shared<impl>(std::move(options), std::move(handler))) {}

subscription::~subscription() {
  stop();
}

result<void> subscription::start() {
  if (impl_->runner.running()) return errc::subscription_running;
  auto& o = impl_->options;
  if (!o.category.empty() &&
      (!validate_stream_name(o.category) || o.category.find('-') != std::string::npos)) {
    return errc::invalid_stream_name;
  }
  if (o.page_size == 0 || o.checkpoint_every == 0 || (!o.stream.empty() && !o.category.empty())) {
    return errc::invalid_read;
  }
  if (!o.stream.empty() && !validate_stream_name(o.stream)) return errc::invalid_stream_name;
  impl_->position = o.start;
  if (!o.name.empty()) {
    auto c = pg::connection::connect(o.conninfo);
    if (!c) return c.error();
    auto stored = impl_->events.checkpoint(*c, o.name);
    if (!stored) return stored.error();
    if (*stored) impl_->position = **stored;
    impl_->connection = std::move(*c);
    impl_->ever_connected = true;
  }
  impl_->saved = impl_->position;
  impl_->update([this](subscription_stats& s) {
    s = subscription_stats{};
    s.position = impl_->position;
    s.running = true;
  });
  impl_->runner.start([state = impl_] { state->run(); });
  return {};
}

void subscription::stop() {
  if (!impl_->runner.running()) return;
  impl_->runner.stop();
  impl_->update([](subscription_stats& s) { s.running = false; });
}

subscription_stats subscription::stats() const {
  return impl_->stats.get();
}

bool subscription::wait_for(all_position position, std::chrono::milliseconds timeout) const {
  return impl_->stats.wait(timeout, [&](const subscription_stats& s) { return s.position >= position; });
}

bool subscription::wait_for_count(std::uint64_t count, std::chrono::milliseconds timeout) const {
  return impl_->stats.wait(timeout, [&](const subscription_stats& s) { return s.delivered >= count; });
}

}  // namespace keel::events
