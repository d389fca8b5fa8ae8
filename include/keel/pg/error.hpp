#pragma once
/// @file keel/pg/error.hpp
/// @brief keel::pg errors: an `errc` per SQLSTATE class callers act on, and the full server
/// diagnostics of the last failure.
#include <keel/core/error.hpp>

#include <string>
#include <string_view>

namespace keel::pg {

/// What went wrong, at the granularity callers branch on. The server's exact SQLSTATE and
/// messages are in `diagnostics` (connection::last_error()).
enum class errc {
  connection_failed = 1,        ///< could not connect (bad address, auth, server down)
  connection_lost,              ///< the connection broke or the server shut it down (class 08, 57P01..3)
  unique_violation,             ///< 23505
  foreign_key_violation,        ///< 23503
  not_null_violation,           ///< 23502
  check_violation,              ///< 23514
  serialization_failure,        ///< 40001: retry the transaction
  deadlock_detected,            ///< 40P01: retry the transaction
  undefined_table,              ///< 42P01
  undefined_column,             ///< 42703
  syntax_error,                 ///< 42601
  query_canceled,               ///< 57014: statement timeout or cancel request
  server_error,                 ///< any other SQLSTATE; see diagnostics
  transaction_aborted,          ///< an earlier statement failed, so the transaction can only roll back
  pipeline_aborted,             ///< not run: an earlier statement in the same pipeline sync failed
  type_mismatch,                ///< the column's type cannot be read as the requested C++ type
  unexpected_null,              ///< NULL read into a non-optional value
  out_of_range,                 ///< row or column index past the end, or a value that does not fit
  bad_value,                    ///< a binary value the decoder could not parse (corrupt or unsupported)
  pool_timeout,                 ///< no connection became free within acquire_timeout
  pool_closed,                  ///< the pool is shutting down
  migration_checksum_mismatch,  ///< an applied migration's SQL changed since it was applied
  migration_failed,             ///< a migration's SQL failed; nothing of it was applied
  cluster_failed,               ///< a local Postgres cluster could not be created or started
  invalid_argument,             ///< a caller error the message explains
  lock_not_held,                ///< an advisory lock to release was not held by the session
};

/// The category of keel::pg::errc ("keel.pg").
[[nodiscard]] const error_category& pg_category() noexcept;

/// Maps a five-character SQLSTATE to the errc callers match on (server_error if none fits).
[[nodiscard]] errc errc_from_sqlstate(std::string_view sqlstate) noexcept;

/// True for failures where re-running the whole transaction may succeed: serialization
/// failures and deadlocks. (A lost connection is retried by the pool, not by re-running.)
[[nodiscard]] bool is_retryable(const error_code& ec) noexcept;

/// Everything the server (or libpq) said about a failure.
struct diagnostics {
  std::string sqlstate;    ///< e.g. "23505"; empty for client-side failures
  std::string severity;    ///< ERROR, FATAL, PANIC
  std::string message;     ///< primary message
  std::string detail;      ///< optional detail
  std::string hint;        ///< optional hint on what to do
  std::string constraint;  ///< constraint name, for integrity violations
  std::string table;       ///< table name, when the server reports one
  std::string column;      ///< column name, when the server reports one
  std::string statement;   ///< the SQL that failed (never contains parameter values)
  int position = 0;        ///< 1-based character position in `statement`, or 0

  /// One line for logs: "ERROR 23505: duplicate key ... (detail: ...; hint: ...) in: <statement>".
  [[nodiscard]] std::string to_string() const;
};

}  // namespace keel::pg

KEEL_ERROR_ENUM(keel::pg, pg_category);
