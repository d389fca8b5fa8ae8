#include <keel/pg/params.hpp>
#include <keel/pg/rows.hpp>

#include <libpq-fe.h>

#include <charconv>
#include <cstdlib>

namespace keel::pg {

void detail::pg_result_deleter::operator()(pg_result* r) const noexcept {
  PQclear(r);
}

rows::rows(detail::result_ptr result) noexcept : result_(std::move(result)) {}

std::size_t rows::size() const noexcept {
  return result_ ? static_cast<std::size_t>(PQntuples(result_.get())) : 0;
}

std::size_t rows::columns() const noexcept {
  return result_ ? static_cast<std::size_t>(PQnfields(result_.get())) : 0;
}

std::string_view rows::column_name(std::size_t column) const noexcept {
  if (column >= columns()) return {};
  return PQfname(result_.get(), static_cast<int>(column));
}

result<std::size_t> rows::column_index(std::string_view name) const {
  for (std::size_t i = 0; i < columns(); ++i) {
    if (column_name(i) == name) return i;
  }
  return errc::out_of_range;
}

oid rows::column_type(std::size_t column) const noexcept {
  if (column >= columns()) return 0;
  return PQftype(result_.get(), static_cast<int>(column));
}

std::uint64_t rows::affected() const noexcept {
  if (!result_) return 0;
  const char* tuples = PQcmdTuples(result_.get());
  std::uint64_t n = 0;
  std::from_chars(tuples, tuples + std::char_traits<char>::length(tuples), n);
  return n;
}

std::string_view rows::command() const noexcept {
  if (!result_) return {};
  return PQcmdStatus(result_.get());
}

bool row::is_null(std::size_t column) const noexcept {
  if (column >= rows_->columns() || index_ >= rows_->size()) return true;
  return PQgetisnull(rows_->native(), static_cast<int>(index_), static_cast<int>(column)) == 1;
}

result<bytes_view> row::raw(std::size_t column, oid& type, bool& text_format) const {
  if (column >= rows_->columns() || index_ >= rows_->size()) return errc::out_of_range;
  pg_result* r = rows_->native();
  const int i = static_cast<int>(index_);
  const int c = static_cast<int>(column);
  type = PQftype(r, c);
  text_format = PQfformat(r, c) == 0;
  if (PQgetisnull(r, i, c) == 1) return bytes_view{};
  const auto* data = reinterpret_cast<const std::uint8_t*>(PQgetvalue(r, i, c));
  return bytes_view(data, static_cast<std::size_t>(PQgetlength(r, i, c)));
}

const char* const* params::values() const {
  values_.resize(offsets_.size());
  // Only NULL may be a null pointer: an empty value in an empty buffer needs a real address.
  static const char empty[1] = {};
  const char* base = storage_.empty() ? empty : reinterpret_cast<const char*>(storage_.data());
  for (std::size_t i = 0; i < offsets_.size(); ++i) {
    values_[i] = offsets_[i] < 0 ? nullptr : base + offsets_[i];
  }
  return values_.data();
}

}  // namespace keel::pg
