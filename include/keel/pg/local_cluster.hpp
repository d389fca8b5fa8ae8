#pragma once
/// @file keel/pg/local_cluster.hpp
/// @brief A private PostgreSQL cluster started and stopped by the process that needs it: the
/// throwaway server behind every `pg` test, and the embedded default of `./keel demo`.
#include <keel/pg/error.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace keel::pg {

/// How to create and run a local cluster.
struct cluster_options {
  /// Where the data lives. Empty: a fresh temporary directory, deleted when the cluster stops.
  /// A path: kept across runs (created with initdb on first use).
  std::filesystem::path data_dir;
  /// PostgreSQL's binaries (initdb, pg_ctl).
  std::filesystem::path bin_dir = "/usr/lib/postgresql/15/bin";
  /// TCP port on 127.0.0.1; 0 picks a free one.
  std::uint16_t port = 0;
  /// Durability off (fsync, synchronous_commit, full_page_writes): fast, for tests only.
  bool durable = false;
  /// The database to create (besides `postgres`) and connect to.
  std::string database = "keel";
  /// When running as root, the OS user that runs the server (Postgres refuses root).
  std::string os_user = "postgres";
  std::chrono::seconds start_timeout{60};
  int max_connections = 200;
};

class local_cluster;

/// The Postgres a test, benchmark or tool runs against: see local_cluster::from_env().
struct server_from_env;

/// A running cluster. Stopping it (stop() or the destructor) shuts the server down and
/// removes a temporary data directory. If the owning process dies without stopping it, a
/// watchdog process notices and shuts the server down anyway.
class local_cluster {
 public:
  /// Creates (initdb) if needed and starts the cluster; waits until it accepts connections.
  /// @returns errc::cluster_failed with the server's log in the error log line.
  [[nodiscard]] static result<local_cluster> start(cluster_options options = {});

  /// The server named by the environment variable KEEL_DATABASE_URL when it is set, or else a
  /// private cluster started now with `options` (stopped when the returned value is destroyed).
  /// Tests and benchmarks use it, so one variable points them all at an existing server.
  [[nodiscard]] static result<server_from_env> from_env(cluster_options options = {});

  local_cluster(local_cluster&&) noexcept;
  local_cluster& operator=(local_cluster&&) noexcept;
  ~local_cluster();

  /// Connection string over the private unix socket (fastest).
  [[nodiscard]] std::string conninfo() const;
  /// Connection string over TCP on 127.0.0.1.
  [[nodiscard]] std::string tcp_conninfo() const;
  /// The same for another database of this cluster.
  [[nodiscard]] std::string conninfo(std::string_view database) const;
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// The postmaster's process id.
  [[nodiscard]] int pid() const noexcept;
  [[nodiscard]] const std::filesystem::path& data_dir() const noexcept;

  /// Creates a new empty database (for test isolation). @returns its conninfo.
  [[nodiscard]] result<std::string> create_database(std::string_view name);
  /// Stops the server (fast shutdown: open sessions are terminated) and starts it again on the
  /// same port, as a real server restart would.
  [[nodiscard]] result<void> restart();
  /// Stops the server; idempotent.
  void stop() noexcept;

  struct state;

 private:
  explicit local_cluster(std::unique_ptr<state> s) noexcept;
  std::unique_ptr<state> state_;
};

struct server_from_env {
  /// The private cluster; empty when KEEL_DATABASE_URL named the server.
  std::optional<local_cluster> cluster;
  /// How to connect to the server.
  std::string conninfo;
};

}  // namespace keel::pg
