#include <keel/core/log.hpp>
#include <keel/pg/connection.hpp>

#include "connection_state.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <poll.h>

namespace keel::pg {
namespace {

// An idle session also hears about its own end this way: the server sends FATAL (e.g. after
// pg_terminate_backend) a moment before it closes the socket, and libpq reports it as a notice.
void on_notice(void* owner, const PGresult* notice) {
  const char* message = PQresultErrorField(notice, PG_DIAG_MESSAGE_PRIMARY);
  const char* severity = PQresultErrorField(notice, PG_DIAG_SEVERITY);
  const char* level = PQresultErrorField(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (level != nullptr && (std::string_view(level) == "FATAL" || std::string_view(level) == "PANIC")) {
    static_cast<connection::state*>(owner)->server_ended_session = true;
  }
  log::debug("postgres notice", {{"severity", severity != nullptr ? severity : ""},
                                 {"message", message != nullptr ? message : ""}});
}

// libpq messages end in newlines; diagnostics hold one line each.
std::string trimmed(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// Prepared statements are keyed by SQL text and parameter types: the same text with other
// types is another statement on the server.
std::string statement_key(std::string_view sql, const params& values) {
  std::string key(sql);
  key.push_back('\0');
  key.append(reinterpret_cast<const char*>(values.types()), values.size() * sizeof(oid));
  return key;
}

std::string field(const PGresult* r, int code) {
  const char* value = PQresultErrorField(r, code);
  return value != nullptr ? value : "";
}

// A table that does not exist is nearly always a migration not run. Postgres names it in the
// message (relation "keel_jobs" does not exist); the hint says which call creates keel's own,
// and the log says it once at the place it happened.
void explain_missing_table(diagnostics& d) {
  const auto open = d.message.find('"');
  const auto close = open == std::string::npos ? std::string::npos : d.message.find('"', open + 1);
  if (close == std::string::npos) return;
  const std::string table = d.message.substr(open + 1, close - open - 1);
  if (d.table.empty()) d.table = table;
  const auto bare = table.substr(table.rfind('.') == std::string::npos ? 0 : table.rfind('.') + 1);
  struct owner {
    std::string_view prefix, migrate;
  };
  static constexpr owner owners[] = {{"keel_events", "keel::events::migrate(c)"},
                                     {"keel_jobs", "keel::jobs::migrate(c)"},
                                     {"keel_job_", "keel::jobs::migrate(c)"},
                                     {"keel_ledger_", "keel::ledger::migrate(c)"},
                                     {"keel_tsdb_", "keel::tsdb::migrate(c)"},
                                     {"keel_ratelimit_", "keel::ratelimit::postgres_backend::migrate(c)"},
                                     {"keel_migrations", "keel::pg::migrate(c, ...)"}};
  for (const auto& o : owners) {
    if (bare.starts_with(o.prefix)) {
      if (d.hint.empty()) {
        d.hint =
            "the table " + table + " is created by " + std::string(o.migrate) + ": call it once at start";
      }
      break;
    }
  }
  log::warn("postgres: a table does not exist",
            {{"table", table}, {"hint", d.hint.empty() ? "were the migrations applied?" : d.hint}});
}

}  // namespace

connection::state::~state() {
  if (conn != nullptr) PQfinish(conn);
}

error_code connection::state::fail_from_result(const PGresult* r, std::string_view sql) {
  last_error = diagnostics{};
  last_error.statement = std::string(sql);
  if (r != nullptr && PQresultStatus(r) == PGRES_FATAL_ERROR && !field(r, PG_DIAG_SQLSTATE).empty()) {
    last_error.sqlstate = field(r, PG_DIAG_SQLSTATE);
    last_error.severity = field(r, PG_DIAG_SEVERITY);
    last_error.message = field(r, PG_DIAG_MESSAGE_PRIMARY);
    last_error.detail = field(r, PG_DIAG_MESSAGE_DETAIL);
    last_error.hint = field(r, PG_DIAG_MESSAGE_HINT);
    last_error.constraint = field(r, PG_DIAG_CONSTRAINT_NAME);
    last_error.table = field(r, PG_DIAG_TABLE_NAME);
    last_error.column = field(r, PG_DIAG_COLUMN_NAME);
    const auto position = field(r, PG_DIAG_STATEMENT_POSITION);
    last_error.position = position.empty() ? 0 : std::atoi(position.c_str());
    if (last_error.sqlstate == "42P01") explain_missing_table(last_error);
    return errc_from_sqlstate(last_error.sqlstate);
  }
  // No server error: libpq failed on its own, usually because the connection broke.
  last_error.severity = "FATAL";
  last_error.message = trimmed(PQerrorMessage(conn));
  if (PQstatus(conn) == CONNECTION_BAD) {
    forget_all();
    return errc::connection_lost;
  }
  return errc::server_error;
}

error_code connection::state::fail(errc code, std::string message, std::string_view sql) {
  last_error = diagnostics{};
  last_error.severity = "ERROR";
  last_error.message = std::move(message);
  last_error.statement = std::string(sql);
  return code;
}

result<rows> connection::state::take(PGresult* raw, std::string_view sql) {
  detail::result_ptr r(raw);
  const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_SINGLE_TUPLE ||
      status == PGRES_EMPTY_QUERY) {
    return rows(std::move(r));
  }
  return fail_from_result(r.get(), sql);
}

result<std::string> connection::state::prepare(std::string_view sql, const params& values) {
  std::string key = statement_key(sql, values);
  if (auto it = statements.find(key); it != statements.end()) {
    lru.splice(lru.begin(), lru, it->second.position);
    return it->second.name;
  }
  std::string name = "keel_" + std::to_string(++statement_counter);
  std::string sql_text(sql);
  detail::result_ptr r(
      PQprepare(conn, name.c_str(), sql_text.c_str(), static_cast<int>(values.size()), values.types()));
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) return fail_from_result(r.get(), sql);
  lru.push_front(key);
  statements.emplace(key, statement{name, lru.begin()});
  evict();
  return name;
}

void connection::state::forget_all() noexcept {
  statements.clear();
  lru.clear();
}

void connection::state::evict() {
  // DEALLOCATE cannot run in a failed transaction; the cache may then run over until later.
  while (statements.size() > options.statement_cache_size && PQtransactionStatus(conn) != PQTRANS_INERROR) {
    const auto it = statements.find(lru.back());
    const std::string sql = "DEALLOCATE " + it->second.name;  // our own generated name
    detail::result_ptr r(PQexec(conn, sql.c_str()));
    statements.erase(it);
    lru.pop_back();
  }
}

void connection::state::forget(std::string_view sql, const params& values) {
  if (auto it = statements.find(statement_key(sql, values)); it != statements.end()) {
    if (PQtransactionStatus(conn) == PQTRANS_IDLE) {
      const std::string deallocate = "DEALLOCATE " + it->second.name;
      detail::result_ptr r(PQexec(conn, deallocate.c_str()));
    }
    lru.erase(it->second.position);
    statements.erase(it);
  }
}

result<rows> connection::state::run_prepared(std::string_view sql, const params& values) {
  auto name = prepare(sql, values);
  if (!name) return name.error();
  return take(PQexecPrepared(conn, name->c_str(), static_cast<int>(values.size()), values.values(),
                             values.lengths(), values.formats(), 1),
              sql);
}

result<connection> connection::connect(std::string_view conninfo, const connect_options& options,
                                       diagnostics* failure) {
  auto s = std::make_unique<state>();
  s->conninfo = std::string(conninfo);
  s->options = options;
  auto opened = s->open();
  if (!opened) {
    if (failure != nullptr) *failure = s->last_error;
    log::debug("postgres connection failed", {{"reason", s->last_error.message}});
    return opened.error();
  }
  return connection(std::move(s));
}

result<void> connection::state::open() {
  if (conn != nullptr) PQfinish(conn);
  forget_all();
  // Keywords before dbname are defaults: the URL or conninfo in dbname overrides them.
  const std::string timeout = std::to_string(options.connect_timeout_seconds);
  const char* keys[] = {"connect_timeout", "application_name", "client_encoding", "dbname", nullptr};
  const char* values[] = {timeout.c_str(), options.application_name.c_str(), "UTF8", conninfo.c_str(),
                          nullptr};
  conn = PQconnectdbParams(keys, values, 1);
  if (conn == nullptr) throw std::bad_alloc();
  if (PQstatus(conn) != CONNECTION_OK) {
    fail(errc::connection_failed, trimmed(PQerrorMessage(conn)), {});
    return errc::connection_failed;
  }
  server_ended_session = false;
  PQsetNoticeReceiver(conn, &on_notice, this);
  return {};
}

connection::connection(std::unique_ptr<state> s) noexcept : state_(std::move(s)) {}
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;
connection::~connection() = default;

result<rows> connection::query_params(std::string_view sql, const params& values) {
  if (!values.valid()) {
    return state_->fail(
        errc::invalid_argument,
        "a text parameter contains a NUL byte, which Postgres text cannot hold; send it as bytea", sql);
  }
  auto r = state_->run_prepared(sql, values);
  // The cached statement can go stale: DISCARD ALL dropped it (26000), or a table it reads
  // changed shape (0A000). Outside a transaction it is safe to prepare again once.
  if (!r && PQtransactionStatus(state_->conn) == PQTRANS_IDLE &&
      (state_->last_error.sqlstate == "26000" ||
       (state_->last_error.sqlstate == "0A000" &&
        state_->last_error.message.find("cached plan") != std::string::npos))) {
    if (state_->last_error.sqlstate == "26000") {
      state_->forget_all();
    } else {
      state_->forget(sql, values);
    }
    r = state_->run_prepared(sql, values);
  }
  return r;
}

result<void> connection::send_params(std::string_view sql, const params& values) {
  if (!state_->in_flight.empty()) {
    return state_->fail(errc::invalid_argument,
                        "a statement is already in flight; receive() its answer first", sql);
  }
  if (!values.valid()) {
    return state_->fail(
        errc::invalid_argument,
        "a text parameter contains a NUL byte, which Postgres text cannot hold; send it as bytea", sql);
  }
  auto name = state_->prepare(sql, values);
  if (!name) return name.error();
  if (PQsendQueryPrepared(state_->conn, name->c_str(), static_cast<int>(values.size()), values.values(),
                          values.lengths(), values.formats(), 1) != 1) {
    return state_->fail_from_result(nullptr, sql);
  }
  state_->in_flight.assign(sql);
  return {};
}

result<rows> connection::receive() {
  if (state_->in_flight.empty()) {
    return state_->fail(errc::invalid_argument, "receive() without a statement sent by send_params()", {});
  }
  const std::string sql = std::move(state_->in_flight);
  state_->in_flight.clear();
  // One statement gives one result, then NULL; the first failure is the one to report.
  PGresult* first = PQgetResult(state_->conn);
  while (PGresult* more = PQgetResult(state_->conn)) PQclear(more);
  return state_->take(first, sql);
}

bool connection::awaiting_answer() const noexcept {
  return !state_->in_flight.empty();
}

void connection::read_ahead() noexcept {
  // libpq's socket is non-blocking underneath, so this reads only what has arrived; PQisBusy
  // parses the complete rows into the answer being built, leaving receive() only the rest.
  if (!state_->in_flight.empty() && PQconsumeInput(state_->conn) == 1) (void)PQisBusy(state_->conn);
}

result<rows> connection::execute(std::string_view sql) {
  const std::string text(sql);
  // PQexec returns only the last result; earlier failures stop the batch and are what we get.
  return state_->take(PQexec(state_->conn, text.c_str()), sql);
}

result<void> connection::notify(std::string_view channel, std::string_view payload) {
  auto r = query("SELECT pg_notify($1, $2)", channel, payload);
  if (!r) return r.error();
  return {};
}

result<std::string> connection::quote_identifier(std::string_view name) const {
  char* quoted = PQescapeIdentifier(state_->conn, name.data(), name.size());
  if (quoted == nullptr) return errc::invalid_argument;
  std::string out(quoted);
  PQfreemem(quoted);
  return out;
}

const diagnostics& connection::last_error() const noexcept {
  return state_->last_error;
}

bool connection::is_open() const noexcept {
  return state_ && PQstatus(state_->conn) == CONNECTION_OK;
}

result<void> connection::reset() {
  return state_->open();
}

bool connection::in_transaction() const noexcept {
  const auto status = PQtransactionStatus(state_->conn);
  return status == PQTRANS_INTRANS || status == PQTRANS_INERROR || status == PQTRANS_ACTIVE;
}

bool connection::in_failed_transaction() const noexcept {
  return PQtransactionStatus(state_->conn) == PQTRANS_INERROR;
}

int connection::backend_pid() const noexcept {
  return PQbackendPID(state_->conn);
}

int connection::server_version() const noexcept {
  return PQserverVersion(state_->conn);
}

result<void> connection::cancel() const {
  PGcancel* handle = PQgetCancel(state_->conn);
  if (handle == nullptr) return errc::connection_lost;
  char reason[256] = {};
  const int ok = PQcancel(handle, reason, sizeof reason);
  PQfreeCancel(handle);
  if (ok != 1) return errc::connection_lost;
  return {};
}

bool connection::probe() noexcept {
  PGconn* c = state_->conn;
  if (PQstatus(c) != CONNECTION_OK) return false;
  // An idle connection has nothing to read unless the server sent something: usually a FATAL
  // message and EOF because it terminated the session.
  for (int round = 0; round < 4; ++round) {
    pollfd fd{PQsocket(c), POLLIN, 0};
    if (::poll(&fd, 1, 0) <= 0) break;
    if (PQconsumeInput(c) == 0) break;
    while (PGnotify* n = PQnotifies(c)) PQfreemem(n);
  }
  if (PQstatus(c) != CONNECTION_OK || state_->server_ended_session) {
    state_->forget_all();
    return false;
  }
  return true;
}

result<std::size_t> connection::wait_for_notifications(std::chrono::milliseconds timeout) {
  PGconn* c = state_->conn;
  const auto drain = [c] {
    std::size_t n = 0;
    while (PGnotify* m = PQnotifies(c)) {
      ++n;
      PQfreemem(m);
    }
    return n;
  };
  if (PQstatus(c) != CONNECTION_OK) return errc::connection_lost;
  auto received = drain();
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (received == 0) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd fd{PQsocket(c), POLLIN, 0};
    const int ready = ::poll(&fd, 1, static_cast<int>(std::min<std::int64_t>(left, 60'000)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return errc::connection_lost;
    if (ready == 0) continue;  // the loop ends once the time is up
    if (PQconsumeInput(c) == 0 || PQstatus(c) != CONNECTION_OK) {
      state_->forget_all();
      return errc::connection_lost;
    }
    received = drain();
  }
  return received;
}

std::size_t connection::cached_statements() const noexcept {
  return state_->statements.size();
}

pg_conn* connection::native() const noexcept {
  return state_->conn;
}

connection::state& connection::internals() noexcept {
  return *state_;
}

}  // namespace keel::pg
