#pragma once
/// @file keel/pg/connection.hpp
/// @brief A libpq connection: parameterized statements only, prepared and cached per connection,
/// binary results, typed errors with the server's diagnostics.
#include <keel/pg/error.hpp>
#include <keel/pg/params.hpp>
#include <keel/pg/rows.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

struct pg_conn;

namespace keel::pg {

/// Options for connect().
struct connect_options {
  /// Seconds to wait for the server; 0 waits forever. Overridden by connect_timeout in the URL.
  int connect_timeout_seconds = 10;
  /// application_name shown in pg_stat_activity.
  std::string application_name = "keel";
  /// Prepared statements kept per connection; the least recently used is deallocated beyond it.
  std::size_t statement_cache_size = 256;
};

/// One connection to Postgres. Move-only; closes on destruction. Not thread-safe: use one
/// connection per thread, or a pool.
///
/// Every statement that takes values takes them as parameters ($1..$n); nothing in this API
/// splices a value into SQL text.
class connection {
 public:
  /// Connects to `conninfo`: a URL (postgresql://user@host:port/db?...) or key=value pairs.
  /// @returns errc::connection_failed; libpq's reason is written to `failure` when given.
  [[nodiscard]] static result<connection> connect(std::string_view conninfo,
                                                  const connect_options& options = {},
                                                  diagnostics* failure = nullptr);

  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  ~connection();

  /// Runs `sql` with parameters as a prepared statement, prepared on first use and cached on
  /// this connection. Results come back in binary form.
  template <class... Args>
  [[nodiscard]] result<rows> query(std::string_view sql, const Args&... args) {
    return query_params(sql, params(args...));
  }
  /// query() with parameters built separately (e.g. a variable number of them).
  [[nodiscard]] result<rows> query_params(std::string_view sql, const params& values);

  /// Sends a statement like query_params() without waiting for its answer, so the caller can
  /// work while the server does (e.g. decode one page while the next is read); receive()
  /// collects the answer. One statement may be in flight; until receive() returns, the
  /// connection must not be used for anything else.
  [[nodiscard]] result<void> send_params(std::string_view sql, const params& values);
  /// The answer to the statement send_params() sent, waiting for it. @returns errc::invalid_argument
  /// when nothing was sent.
  [[nodiscard]] result<rows> receive();
  /// True between send_params() and receive().
  [[nodiscard]] bool awaiting_answer() const noexcept;
  /// Takes what the server has sent so far for the statement in flight from the socket and
  /// parses it into the answer being built, without waiting. Call it now and then
  /// while working between send_params() and receive(): a server sending a large answer
  /// otherwise stalls on a full socket until receive() is called. Errors surface in receive().
  void read_ahead() noexcept;

  /// Runs one or more statements with no parameters through the simple protocol (DDL,
  /// migrations, SET). @returns the result of the last statement.
  [[nodiscard]] result<rows> execute(std::string_view sql);

  /// Sends NOTIFY `channel` with `payload` (a parameterized pg_notify call).
  [[nodiscard]] result<void> notify(std::string_view channel, std::string_view payload);

  /// Waits up to `timeout` for notifications on the channels this connection LISTENs on (LISTEN
  /// with execute(); they arrive only outside a transaction), reading what the server sent; ones
  /// received during earlier statements count at once. Payloads are dropped: for "something
  /// changed, look again" waits on one connection (keel::pg::listener is the Asio one).
  /// @returns how many arrived (0: the timeout passed), or errc::connection_lost.
  [[nodiscard]] result<std::size_t> wait_for_notifications(std::chrono::milliseconds timeout);

  /// Quotes an identifier (table, column, channel) for the rare SQL that cannot take it as a
  /// parameter (LISTEN, COPY). @returns errc::invalid_argument for invalid encodings.
  [[nodiscard]] result<std::string> quote_identifier(std::string_view name) const;

  /// What the server said about the most recent failure on this connection.
  [[nodiscard]] const diagnostics& last_error() const noexcept;

  /// False once the connection is broken; reset() reconnects.
  [[nodiscard]] bool is_open() const noexcept;
  /// Reconnects with the original settings; cached statements are forgotten.
  [[nodiscard]] result<void> reset();
  /// True when inside a transaction block (including a failed one).
  [[nodiscard]] bool in_transaction() const noexcept;
  /// True when inside a transaction that a failed statement aborted.
  [[nodiscard]] bool in_failed_transaction() const noexcept;
  /// Server process id, as in pg_stat_activity.pid.
  [[nodiscard]] int backend_pid() const noexcept;
  /// Server version, e.g. 150018.
  [[nodiscard]] int server_version() const noexcept;
  /// Asks the server to cancel the statement running now; safe from another thread.
  [[nodiscard]] result<void> cancel() const;
  /// Checks without a round trip whether the server closed the connection (e.g. after
  /// pg_terminate_backend): reads anything pending on the socket. Only for idle connections.
  [[nodiscard]] bool probe() noexcept;
  /// Prepared statements cached right now.
  [[nodiscard]] std::size_t cached_statements() const noexcept;

  /// The libpq handle, for what keel does not wrap. Do not close it.
  [[nodiscard]] pg_conn* native() const noexcept;

  struct state;
  /// keel's own implementation files reach libpq through this; `state` is private to src/pg.
  [[nodiscard]] state& internals() noexcept;

 private:
  explicit connection(std::unique_ptr<state> s) noexcept;
  std::unique_ptr<state> state_;
};

}  // namespace keel::pg
