#include <keel/pg/error.hpp>

namespace keel::pg {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::connection_failed:
      return "could not connect to Postgres; check the host, port, user and password in the connection URL "
             "and that the server is running";
    case errc::connection_lost:
      return "the connection to Postgres was lost or closed by the server; reconnect (a pool does this for "
             "you) and retry";
    case errc::unique_violation:
      return "a row with the same unique key already exists (SQLSTATE 23505)";
    case errc::foreign_key_violation:
      return "the row refers to a row that does not exist, or is still referred to (SQLSTATE 23503)";
    case errc::not_null_violation:
      return "a NOT NULL column was given NULL (SQLSTATE 23502)";
    case errc::check_violation:
      return "a CHECK constraint rejected the row (SQLSTATE 23514)";
    case errc::serialization_failure:
      return "the transaction conflicted with a concurrent one (SQLSTATE 40001); run it again, e.g. with "
             "retry_transaction";
    case errc::deadlock_detected:
      return "the transaction was chosen as a deadlock victim (SQLSTATE 40P01); run it again, e.g. with "
             "retry_transaction";
    case errc::undefined_table:
      return "a table does not exist (SQLSTATE 42P01): connection::last_error() and the log name it; keel's "
             "tables come from each component's migrate(c), run once at start";
    case errc::undefined_column:
      return "the column does not exist (SQLSTATE 42703)";
    case errc::syntax_error:
      return "the SQL has a syntax error (SQLSTATE 42601); see the diagnostics for the position";
    case errc::query_canceled:
      return "the statement was canceled (statement_timeout or a cancel request, SQLSTATE 57014)";
    case errc::server_error:
      return "Postgres reported an error; its SQLSTATE and message are in the connection's last_error()";
    case errc::transaction_aborted:
      return "an earlier statement in this transaction failed, so it can only be rolled back; nothing was "
             "committed";
    case errc::pipeline_aborted:
      return "not run: an earlier statement in the same pipeline sync failed";
    case errc::type_mismatch:
      return "the column's Postgres type cannot be read as the requested C++ type; see keel/pg/types.hpp for "
             "the mapping, or cast in SQL";
    case errc::unexpected_null:
      return "the value is NULL; read it as std::optional<T>";
    case errc::out_of_range:
      return "no such row or column, or the value does not fit the C++ type";
    case errc::bad_value:
      return "the server sent a value keel could not decode";
    case errc::pool_timeout:
      return "no pooled connection became free in time; raise max_size or acquire_timeout, or look for "
             "connections held too long";
    case errc::pool_closed:
      return "the pool is closed";
    case errc::migration_checksum_mismatch:
      return "an already-applied migration was edited; restore its original SQL and add a new migration "
             "instead";
    case errc::migration_failed:
      return "a migration failed and was rolled back; fix its SQL (see the diagnostics) and start again";
    case errc::cluster_failed:
      return "the local Postgres cluster could not be created or started; its log is named in the error log "
             "line";
    case errc::invalid_argument:
      return "invalid argument (e.g. a text parameter containing a NUL byte: send such data as bytea)";
    case errc::lock_not_held:
      return "the session did not hold that advisory lock (released already, or by another session); "
             "Postgres logs a warning for it";
  }
  return "unknown keel.pg error";
}

constexpr enum_error_category<errc> category{"keel.pg", &describe};

}  // namespace

const error_category& pg_category() noexcept {
  return category;
}

errc errc_from_sqlstate(std::string_view s) noexcept {
  if (s == "23505") return errc::unique_violation;
  if (s == "23503") return errc::foreign_key_violation;
  if (s == "23502") return errc::not_null_violation;
  if (s == "23514") return errc::check_violation;
  if (s == "40001") return errc::serialization_failure;
  if (s == "40P01") return errc::deadlock_detected;
  if (s == "42P01") return errc::undefined_table;
  if (s == "42703") return errc::undefined_column;
  if (s == "42601") return errc::syntax_error;
  if (s == "57014") return errc::query_canceled;
  if (s == "25P02") return errc::transaction_aborted;
  // Class 08 (connection exception) and the server shutting the session down.
  if (s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03") return errc::connection_lost;
  return errc::server_error;
}

bool is_retryable(const error_code& ec) noexcept {
  return ec == errc::serialization_failure || ec == errc::deadlock_detected;
}

std::string diagnostics::to_string() const {
  std::string out = severity.empty() ? "ERROR" : severity;
  if (!sqlstate.empty()) out += " " + sqlstate;
  out += ": " + message;
  if (!detail.empty()) out += " (detail: " + detail + ")";
  if (!hint.empty()) out += " (hint: " + hint + ")";
  if (!statement.empty()) out += " in: " + statement;
  return out;
}

}  // namespace keel::pg
