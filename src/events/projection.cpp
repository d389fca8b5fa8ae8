// An async projection's thread. Each batch is one transaction: the projection's advisory lock
// (so concurrent projectors of one projection take turns), its checkpoint, the events after it
// up to the horizon, the user's apply, the new checkpoint, commit. The lock and the reads assign
// no transaction id, so the horizon the batch reads below is not held back by the batch itself.
#include <keel/core/assert.hpp>
#include <keel/core/backoff.hpp>
#include <keel/core/log.hpp>
#include <keel/events/projection.hpp>
#include <keel/pg/transaction.hpp>

#include "lag.hpp"
#include "runner.hpp"
#include "waker.hpp"

#include <algorithm>
#include <atomic>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

namespace keel::events {
namespace {

// Per projection name and schema, so projections of the same name in two schemas never wait
// for each other.
constexpr std::string_view lock_sql =
    "SELECT pg_advisory_xact_lock(hashtext('keel.events.projection'), hashtext(current_schema() || '/' || "
    "$1))";

}  // namespace

struct projection::impl {
  projection_options options;
  apply_type apply;
  store events;

  detail::observed<projection_stats> stats;
  detail::runner runner;
  std::optional<pg::connection> connection;

  impl(projection_options o, apply_type a)
      : options(std::move(o)),
        apply(std::move(a)),
        events(store_options{.upcast = options.upcast, .metrics = options.metrics}) {}

  void update(const std::function<void(projection_stats&)>& change) { stats.update(change); }

  // One batch. @returns how many events it applied (0: caught up).
  result<std::size_t> batch() {
    auto& c = *connection;
    if (auto begun = c.execute("BEGIN"); !begun) return begun.error();
    const auto fail = [&c](error_code ec) -> result<std::size_t> {
      (void)c.execute("ROLLBACK");
      return ec;
    };
    if (auto locked = c.query(lock_sql, options.name); !locked) return fail(locked.error());
    auto checkpoint = events.checkpoint(c, options.name);
    if (!checkpoint) return fail(checkpoint.error());
    const auto from = checkpoint->value_or(all_position::start());
    auto page = events.read_all(c, {.after = from,
                                    .max_count = options.batch_size,
                                    .category = options.category,
                                    .types = options.types});
    if (!page) return fail(page.error());
    if (!page->events.empty()) {
      if (auto applied = apply(c, page->events); !applied) return fail(applied.error());
      if (c.in_failed_transaction()) return fail(pg::errc::transaction_aborted);
    }
    // A filtered projection moves to the horizon even when nothing matched, so it never scans
    // the same range again.
    if (page->next != from) {
      if (auto saved = events.save_checkpoint(c, options.name, page->next); !saved)
        return fail(saved.error());
    }
    if (auto committed = c.execute("COMMIT"); !committed) return committed.error();
    KEEL_ASSERT(page->next >= from);
    const auto n = page->events.size();
    const bool caught_up = page->caught_up;
    const auto next = page->next;
    detail::report_lag(events, c, options.metrics, options.name, caught_up, next,
                       n > 0 ? std::optional<timestamp>(page->events.back().recorded_at) : std::nullopt);
    update([&](projection_stats& s) {
      s.position = next;
      s.applied += n;
      if (n > 0) ++s.batches;
      s.caught_up = caught_up;
      s.last_error = {};
    });
    return caught_up ? 0 : std::max<std::size_t>(n, 1);
  }

  void run() {
    detail::waker waker(options.conninfo, options.category, options.min_retry_delay, options.max_retry_delay,
                        {});
    runner.attach(&waker);
    backoff retry({.initial = options.min_retry_delay, .max = options.max_retry_delay});
    const auto wait = [&](std::chrono::milliseconds delay) { runner.wait(waker, delay); };
    while (!runner.stopping()) {
      if (!connection || !connection->is_open()) {
        auto opened =
            pg::connection::connect(options.conninfo, {.application_name = "keel-events-projection"});
        if (!opened) {
          update([&](projection_stats& s) { s.last_error = opened.error(); });
          wait(retry.next());
          continue;
        }
        connection = std::move(*opened);
      }
      auto done = batch();
      if (!done) {
        const auto failure = done.error();
        update([failure](projection_stats& s) {
          ++s.failures;
          s.last_error = failure;
        });
        log::warn("events projection batch rolled back",
                  {{"projection", options.name}, {"error", failure.message()}});
        if (!connection->is_open()) connection.reset();
        wait(retry.next());
        continue;
      }
      retry.reset();
      if (*done == 0) {
        wait(options.poll_interval);  // caught up: until an append wakes it
      } else if (options.min_batch_interval.count() > 0) {
        // Appends' notifications end a wait early: wait again until the interval is over.
        const auto until = std::chrono::steady_clock::now() + options.min_batch_interval;
        for (auto now = std::chrono::steady_clock::now(); now < until && !runner.stopping();
             now = std::chrono::steady_clock::now()) {
          wait(std::chrono::ceil<std::chrono::milliseconds>(until - now));
        }
      }
    }
    runner.attach(nullptr);
  }
};

projection::projection(projection_options options, apply_type apply)
    : impl_(std::make_shared<impl>(std::move(options), std::move(apply))) {}

projection::~projection() {
  stop();
}

result<void> projection::start() {
  if (impl_->runner.running()) return errc::subscription_running;
  const auto& o = impl_->options;
  if (!validate_checkpoint_name(o.name)) return errc::invalid_checkpoint_name;
  if (!o.category.empty() &&
      (!validate_stream_name(o.category) || o.category.find('-') != std::string::npos)) {
    return errc::invalid_stream_name;
  }
  if (o.batch_size == 0 || o.batch_size > impl_->events.options().max_page_events) return errc::invalid_read;
  impl_->update([](projection_stats& s) {
    s = projection_stats{};
    s.running = true;
  });
  impl_->runner.start([state = impl_] { state->run(); });
  return {};
}

void projection::stop() {
  if (!impl_->runner.running()) return;
  impl_->runner.stop();
  impl_->update([](projection_stats& s) { s.running = false; });
}

projection_stats projection::stats() const {
  return impl_->stats.get();
}

bool projection::wait_for(all_position position, std::chrono::milliseconds timeout) const {
  return impl_->stats.wait(timeout, [&](const projection_stats& s) { return s.position >= position; });
}

bool projection::wait_for_checkpoint(pg::connection& c, std::string_view name, all_position position,
                                     std::chrono::milliseconds timeout) {
  const store events;
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto at = events.checkpoint(c, name); at && *at && **at >= position) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // another process's progress: poll it
  }
}

result<void> projection::rebuild(pg::connection& c, std::string_view name,
                                 const std::function<result<void>(pg::connection&)>& reset) {
  if (!validate_checkpoint_name(name)) return errc::invalid_checkpoint_name;
  return pg::retry_transaction(c, [&](pg::transaction& tx) -> result<void> {
    if (auto locked = tx.conn().query(lock_sql, name); !locked) return locked.error();
    if (auto cleared = reset(tx.conn()); !cleared) return cleared;
    if (auto dropped = tx.conn().query("DELETE FROM keel_events_checkpoints WHERE name = $1", name);
        !dropped) {
      return dropped.error();
    }
    return {};
  });
}

projection::apply_type refresh_materialized_view(std::string view, view_refresh_options options) {
  if (view.empty())
    throw std::invalid_argument("keel::events::refresh_materialized_view: the view's name is empty");
  return
      [view = std::move(view), options](pg::connection& c, std::span<const recorded_event>) -> result<void> {
        // Each part of schema.name quoted on its own.
        std::string sql =
            options.concurrently ? "REFRESH MATERIALIZED VIEW CONCURRENTLY " : "REFRESH MATERIALIZED VIEW ";
        std::string_view rest = view;
        for (;;) {
          const auto dot = rest.find('.');
          auto quoted = c.quote_identifier(rest.substr(0, dot));
          if (!quoted) return quoted.error();
          sql += *quoted;
          if (dot == std::string_view::npos) break;
          sql += '.';
          rest.remove_prefix(dot + 1);
        }
        if (auto refreshed = c.execute(sql); !refreshed) return refreshed.error();
        return {};
      };
}

}  // namespace keel::events
