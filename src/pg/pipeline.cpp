#include <keel/pg/pipeline.hpp>

#include "connection_state.hpp"

#include <poll.h>

namespace keel::pg {

result<pipeline> pipeline::start(connection& c) {
  auto& s = c.internals();
  if (PQenterPipelineMode(s.conn) != 1) {
    return s.fail(errc::invalid_argument, "cannot enter pipeline mode: the connection is busy", {});
  }
  // Non-blocking sends, so a long pipeline cannot deadlock with a server blocked on writing
  // results we have not read yet.
  PQsetnonblocking(s.conn, 1);
  return pipeline(c);
}

pipeline::pipeline(pipeline&& other) noexcept
    : connection_(other.connection_), statements_(std::move(other.statements_)), active_(other.active_) {
  other.active_ = false;
}

pipeline::~pipeline() {
  if (!active_) return;
  if (!statements_.empty()) (void)sync();
  PGconn* conn = connection_->internals().conn;
  PQsetnonblocking(conn, 0);
  PQexitPipelineMode(conn);
}

result<void> pipeline::flush_nonblocking() {
  auto& s = connection_->internals();
  for (;;) {
    const int pending = PQflush(s.conn);
    if (pending == 0) return {};
    if (pending < 0) return s.fail_from_result(nullptr, {});
    // The server may be waiting for us to read before it reads more: read while we wait.
    pollfd fd{PQsocket(s.conn), POLLIN | POLLOUT, 0};
    ::poll(&fd, 1, 1000);
    if ((fd.revents & POLLIN) != 0 && PQconsumeInput(s.conn) == 0) return s.fail_from_result(nullptr, {});
  }
}

result<void> pipeline::add_params(std::string_view sql, const params& values) {
  auto& s = connection_->internals();
  if (!values.valid()) return s.fail(errc::invalid_argument, "a text parameter contains a NUL byte", sql);
  statements_.emplace_back(sql);
  if (PQsendQueryParams(s.conn, statements_.back().c_str(), static_cast<int>(values.size()), values.types(),
                        values.values(), values.lengths(), values.formats(), 1) != 1) {
    statements_.pop_back();
    return s.fail_from_result(nullptr, sql);
  }
  return flush_nonblocking();
}

result<std::vector<result<rows>>> pipeline::sync() {
  auto& s = connection_->internals();
  if (PQpipelineSync(s.conn) != 1) return s.fail_from_result(nullptr, {});
  if (auto flushed = flush_nonblocking(); !flushed) return flushed.error();
  PQsetnonblocking(s.conn, 0);
  std::vector<result<rows>> results;
  results.reserve(statements_.size());
  for (const auto& sql : statements_) {
    PGresult* raw = PQgetResult(s.conn);
    if (raw == nullptr) return s.fail_from_result(nullptr, sql);
    if (PQresultStatus(raw) == PGRES_PIPELINE_ABORTED) {
      PQclear(raw);
      results.emplace_back(errc::pipeline_aborted);
    } else {
      results.push_back(s.take(raw, sql));
    }
    // Each statement's results end with a null result.
    while (PGresult* extra = PQgetResult(s.conn)) PQclear(extra);
  }
  statements_.clear();
  PGresult* sync_result = PQgetResult(s.conn);
  const bool synced = sync_result != nullptr && PQresultStatus(sync_result) == PGRES_PIPELINE_SYNC;
  PQclear(sync_result);
  PQsetnonblocking(s.conn, 1);
  if (!synced) return s.fail_from_result(nullptr, {});
  return results;
}

}  // namespace keel::pg
