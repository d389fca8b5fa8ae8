#pragma once
/// @file keel/pg/pool.hpp
/// @brief A bounded, thread-safe connection pool that replaces broken connections.
#include <keel/pg/connection.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace keel::pg {

struct pool_options {
  /// Where to connect: a URL or key=value conninfo.
  std::string conninfo;
  /// Connections open at most (in use + idle).
  std::size_t max_size = 10;
  /// How long acquire() waits for a free connection.
  std::chrono::milliseconds acquire_timeout{5000};
  /// Idle connections older than this are closed rather than handed out.
  std::chrono::seconds max_idle{300};
  connect_options connect;
};

/// Counters and gauges for /metrics.
struct pool_stats {
  std::size_t open = 0;              ///< connections open now
  std::size_t in_use = 0;            ///< handed out now
  std::size_t idle = 0;              ///< open and free now
  std::uint64_t acquired = 0;        ///< successful acquire() calls
  std::uint64_t waited = 0;          ///< acquire() calls that had to wait for a connection
  std::uint64_t timeouts = 0;        ///< acquire() calls that gave up (errc::pool_timeout)
  std::uint64_t connect_errors = 0;  ///< failed attempts to open a connection
  std::uint64_t replaced = 0;        ///< broken connections closed and replaced
};

class pool;

/// A connection borrowed from a pool; returned when destroyed. A transaction left open is
/// rolled back; a broken connection is closed rather than returned.
class pooled_connection {
 public:
  pooled_connection(pooled_connection&& other) noexcept;
  pooled_connection& operator=(pooled_connection&& other) noexcept;
  ~pooled_connection();

  connection& operator*() noexcept { return *connection_; }
  connection* operator->() noexcept { return connection_.get(); }

 private:
  friend class pool;
  pooled_connection(std::shared_ptr<void> pool_state, std::unique_ptr<connection> c) noexcept;
  void give_back() noexcept;
  std::shared_ptr<void> pool_;
  std::unique_ptr<connection> connection_;
};

/// A fixed-size pool. Thread-safe. Connections are opened on demand, checked before they are
/// handed out (a connection the server closed, e.g. by pg_terminate_backend or a restart, is
/// replaced without the caller seeing it), and rolled back when returned.
class pool {
 public:
  explicit pool(pool_options options);
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  /// A healthy connection, waiting up to options.acquire_timeout for one to be free.
  /// @returns errc::pool_timeout, errc::connection_failed (server unreachable) or
  /// errc::pool_closed.
  [[nodiscard]] result<pooled_connection> acquire();
  [[nodiscard]] result<pooled_connection> acquire(std::chrono::milliseconds timeout);

  [[nodiscard]] pool_stats stats() const;
  /// What the pool was made with (where it connects: for a listener beside it).
  [[nodiscard]] const pool_options& options() const noexcept;
  /// Closes idle connections and fails current and future acquire() calls; connections in use
  /// are closed as they come back.
  void close();

  struct state;

 private:
  std::shared_ptr<state> state_;
};

}  // namespace keel::pg
