#pragma once
// connection::state, shared by the files in src/pg that drive libpq directly.
#include <keel/pg/connection.hpp>

#include <libpq-fe.h>

#include <list>
#include <string>
#include <unordered_map>

namespace keel::pg {

struct connection::state {
  PGconn* conn = nullptr;
  std::string conninfo;
  connect_options options;
  diagnostics last_error;
  bool server_ended_session = false;  ///< a FATAL notice arrived: the server is closing the session

  struct statement {
    std::string name;
    std::list<std::string>::iterator position;  ///< in lru
  };
  std::unordered_map<std::string, statement> statements;  ///< by SQL text + parameter types
  std::list<std::string> lru;                             ///< most recently used first
  std::uint64_t statement_counter = 0;
  /// The SQL of the statement send_params() sent and receive() has not collected, or empty.
  std::string in_flight;

  state() = default;
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state();

  result<void> open();
  /// Records the failure described by `r` (or by libpq, when r has no server error).
  error_code fail_from_result(const PGresult* r, std::string_view sql);
  /// Records a client-side failure.
  error_code fail(errc code, std::string message, std::string_view sql);
  /// Wraps a libpq result, or records its failure.
  result<rows> take(PGresult* r, std::string_view sql);
  result<std::string> prepare(std::string_view sql, const params& values);
  result<rows> run_prepared(std::string_view sql, const params& values);
  void forget(std::string_view sql, const params& values);
  /// Forgets every cached statement (the server no longer has them).
  void forget_all() noexcept;
  void evict();
};

}  // namespace keel::pg
