#include <keel/pg/copy.hpp>

#include "connection_state.hpp"

namespace keel::pg {
namespace {
constexpr std::uint8_t signature[] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xFF, '\r', '\n', 0};
}

result<copy_writer> copy_writer::start(connection& c, std::string_view table,
                                       std::initializer_list<std::string_view> columns) {
  if (columns.size() == 0) return errc::invalid_argument;
  auto quoted_table = c.quote_identifier(table);
  if (!quoted_table) return quoted_table.error();
  std::string sql = "COPY " + *quoted_table + " (";
  bool first = true;
  for (const auto column : columns) {
    auto quoted = c.quote_identifier(column);
    if (!quoted) return quoted.error();
    sql += (first ? "" : ", ") + *quoted;
    first = false;
  }
  sql += ") FROM STDIN (FORMAT binary)";
  auto& s = c.internals();
  detail::result_ptr r(PQexec(s.conn, sql.c_str()));
  if (!r || PQresultStatus(r.get()) != PGRES_COPY_IN) return s.fail_from_result(r.get(), sql);
  copy_writer writer(c, columns.size());
  writer.buffer_.assign(std::begin(signature), std::end(signature));
  byte_writer header(writer.buffer_);
  header.be(std::uint32_t{0});  // flags
  header.be(std::uint32_t{0});  // header extension length
  return writer;
}

copy_writer::copy_writer(copy_writer&& other) noexcept
    : connection_(other.connection_),
      columns_(other.columns_),
      buffer_(std::move(other.buffer_)),
      rows_(other.rows_),
      active_(other.active_) {
  other.active_ = false;
}

copy_writer::~copy_writer() {
  if (!active_) return;
  PGconn* conn = connection_->internals().conn;
  PQputCopyEnd(conn, "copy_writer destroyed before finish(); nothing loaded");
  while (PGresult* r = PQgetResult(conn)) PQclear(r);
}

result<void> copy_writer::flush() {
  if (buffer_.empty()) return {};
  auto& s = connection_->internals();
  if (PQputCopyData(s.conn, reinterpret_cast<const char*>(buffer_.data()),
                    static_cast<int>(buffer_.size())) != 1) {
    return s.fail_from_result(nullptr, "COPY");
  }
  buffer_.clear();
  return {};
}

result<std::uint64_t> copy_writer::finish() {
  if (!active_) return errc::invalid_argument;
  byte_writer(buffer_).be(std::int16_t{-1});  // trailer: -1 fields
  auto flushed = flush();
  active_ = false;
  auto& s = connection_->internals();
  if (!flushed) {
    PQputCopyEnd(s.conn, "client failed to send data");
    while (PGresult* r = PQgetResult(s.conn)) PQclear(r);
    return flushed.error();
  }
  if (PQputCopyEnd(s.conn, nullptr) != 1) return s.fail_from_result(nullptr, "COPY");
  result<std::uint64_t> outcome = rows_;
  while (PGresult* raw = PQgetResult(s.conn)) {
    auto r = s.take(raw, "COPY ... FROM STDIN");
    if (!r) outcome = r.error();
  }
  return outcome;
}

}  // namespace keel::pg
