#include <keel/core/log.hpp>
#include <keel/pg/pool.hpp>

#include <condition_variable>
#include <deque>
#include <mutex>

namespace keel::pg {

struct pool::state {
  pool_options options;
  mutable std::mutex mutex;
  std::condition_variable available;
  struct idle_connection {
    std::unique_ptr<connection> c;
    std::chrono::steady_clock::time_point since;
  };
  std::deque<idle_connection> idle;  ///< most recently returned at the back
  std::size_t open = 0;              ///< idle + in use + being opened
  std::size_t in_use = 0;
  bool closed = false;
  std::atomic<std::uint64_t> acquired{0}, waited{0}, timeouts{0}, connect_errors{0}, replaced{0};

  void give_back(std::unique_ptr<connection> c) noexcept {
    bool keep = c && c->is_open();
    if (keep && c->in_transaction()) keep = c->execute("ROLLBACK").has_value() && !c->in_transaction();
    std::lock_guard lock(mutex);
    --in_use;
    if (keep && !closed) {
      idle.push_back({std::move(c), std::chrono::steady_clock::now()});
    } else {
      --open;
      if (!closed) replaced.fetch_add(1, std::memory_order_relaxed);
    }
    available.notify_one();
  }
};

pooled_connection::pooled_connection(std::shared_ptr<void> pool_state, std::unique_ptr<connection> c) noexcept
    : pool_(std::move(pool_state)), connection_(std::move(c)) {}

pooled_connection::pooled_connection(pooled_connection&& other) noexcept = default;

pooled_connection& pooled_connection::operator=(pooled_connection&& other) noexcept {
  if (this != &other) {
    give_back();
    pool_ = std::move(other.pool_);
    connection_ = std::move(other.connection_);
  }
  return *this;
}

pooled_connection::~pooled_connection() {
  give_back();
}

void pooled_connection::give_back() noexcept {
  if (pool_ && connection_) static_cast<pool::state*>(pool_.get())->give_back(std::move(connection_));
  pool_.reset();
}

pool::pool(pool_options options) : state_(std::make_shared<state>()) {
  state_->options = std::move(options);
}

pool::~pool() {
  close();
}

const pool_options& pool::options() const noexcept {
  return state_->options;
}

result<pooled_connection> pool::acquire() {
  return acquire(state_->options.acquire_timeout);
}

result<pooled_connection> pool::acquire(std::chrono::milliseconds timeout) {
  auto& s = *state_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(s.mutex);
  bool counted_wait = false;
  for (;;) {
    if (s.closed) return errc::pool_closed;
    while (!s.idle.empty()) {
      auto candidate = std::move(s.idle.back());
      s.idle.pop_back();
      // Checked outside the lock: probe() reads from the socket.
      lock.unlock();
      const bool stale = std::chrono::steady_clock::now() - candidate.since > s.options.max_idle;
      const bool healthy = !stale && candidate.c->probe();
      lock.lock();
      if (healthy) {
        ++s.in_use;
        s.acquired.fetch_add(1, std::memory_order_relaxed);
        return pooled_connection(state_, std::move(candidate.c));
      }
      --s.open;
      if (!stale) s.replaced.fetch_add(1, std::memory_order_relaxed);
    }
    if (s.open < s.options.max_size) {
      ++s.open;  // reserve the slot, then connect without holding the lock
      lock.unlock();
      pg::diagnostics why;
      auto opened = connection::connect(s.options.conninfo, s.options.connect, &why);
      lock.lock();
      if (!opened) {
        --s.open;
        s.connect_errors.fetch_add(1, std::memory_order_relaxed);
        s.available.notify_one();
        log::warn("pool could not open a connection", {{"reason", why.message}});
        return opened.error();
      }
      ++s.in_use;
      s.acquired.fetch_add(1, std::memory_order_relaxed);
      return pooled_connection(state_, std::make_unique<connection>(std::move(*opened)));
    }
    if (!counted_wait) {
      s.waited.fetch_add(1, std::memory_order_relaxed);
      counted_wait = true;
    }
    if (s.available.wait_until(lock, deadline) == std::cv_status::timeout && s.idle.empty() &&
        s.open >= s.options.max_size) {
      s.timeouts.fetch_add(1, std::memory_order_relaxed);
      return errc::pool_timeout;
    }
  }
}

pool_stats pool::stats() const {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  pool_stats out;
  out.open = s.open;
  out.in_use = s.in_use;
  out.idle = s.idle.size();
  out.acquired = s.acquired.load(std::memory_order_relaxed);
  out.waited = s.waited.load(std::memory_order_relaxed);
  out.timeouts = s.timeouts.load(std::memory_order_relaxed);
  out.connect_errors = s.connect_errors.load(std::memory_order_relaxed);
  out.replaced = s.replaced.load(std::memory_order_relaxed);
  return out;
}

void pool::close() {
  std::deque<state::idle_connection> closing;
  {
    std::lock_guard lock(state_->mutex);
    state_->closed = true;
    closing.swap(state_->idle);
    state_->open -= closing.size();
    state_->available.notify_all();
  }
}

}  // namespace keel::pg
