#pragma once
/// @file keel/pg/rows.hpp
/// @brief Query results: `rows` owns the server's answer; `row` reads typed values from it.
#include <keel/pg/types.hpp>

#include <charconv>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

struct pg_result;

namespace keel::pg {

namespace detail {
struct pg_result_deleter {
  void operator()(pg_result* r) const noexcept;
};
using result_ptr = std::unique_ptr<pg_result, pg_result_deleter>;
}  // namespace detail

class rows;

/// One row of a result. Valid while its `rows` lives.
class row {
 public:
  /// The value of column `column` as T; T = std::optional<U> reads NULL as nullopt.
  /// @returns errc::type_mismatch, errc::unexpected_null or errc::out_of_range on failure.
  template <class T>
  [[nodiscard]] result<T> get(std::size_t column) const;
  /// The value of the column named `name`.
  template <class T>
  [[nodiscard]] result<T> get(std::string_view name) const;
  /// Columns first, first + 1, ... as T...:
  /// `auto [id, name] = r.as<std::int64_t, std::string>().value();`. A `first` past 0 reads
  /// the second of two joined tables' columns.
  /// @returns the first column's error (see get()) when one fails, or errc::out_of_range
  /// when the row has fewer columns than types.
  template <class... T>
  [[nodiscard]] result<std::tuple<T...>> as(std::size_t first = 0) const;
  /// True if the value is NULL.
  [[nodiscard]] bool is_null(std::size_t column) const noexcept;
  /// The value in Postgres's text form, whatever its type among bool, the integers, float4/8,
  /// numeric, the text types, date, time, timestamp, timestamptz (in UTC, "+00"), uuid, json,
  /// jsonb and bytea ("\\x…"); NULL as nullopt. For generic consumers (a query language's JSON,
  /// a result comparison) that do not know the column types in advance.
  /// @returns errc::type_mismatch for another type (cast it to text in the SQL).
  [[nodiscard]] result<std::optional<std::string>> text(std::size_t column) const;
  /// The row's index in its result.
  [[nodiscard]] std::size_t index() const noexcept { return index_; }

 private:
  friend class rows;
  row(const rows* owner, std::size_t index) noexcept : rows_(owner), index_(index) {}
  [[nodiscard]] result<bytes_view> raw(std::size_t column, oid& type, bool& text_format) const;
  const rows* rows_;
  std::size_t index_;
};

/// The result of a statement: its rows (read in binary form) and its command status.
class rows {
 public:
  rows() = default;
  explicit rows(detail::result_ptr result) noexcept;

  /// Number of rows.
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  /// Number of columns.
  [[nodiscard]] std::size_t columns() const noexcept;
  [[nodiscard]] std::string_view column_name(std::size_t column) const noexcept;
  /// The index of the column named `name`, or errc::out_of_range.
  [[nodiscard]] result<std::size_t> column_index(std::string_view name) const;
  [[nodiscard]] oid column_type(std::size_t column) const noexcept;
  /// Rows inserted, updated, deleted, copied or selected, from the command tag.
  [[nodiscard]] std::uint64_t affected() const noexcept;
  /// The command tag, e.g. "INSERT 0 3".
  [[nodiscard]] std::string_view command() const noexcept;

  /// Row `i` (unchecked in release builds; use size()).
  [[nodiscard]] row operator[](std::size_t i) const noexcept { return {this, i}; }
  /// The first column of the first row: for `SELECT count(*) ...` and friends.
  /// @returns errc::out_of_range when there is no row.
  template <class T>
  [[nodiscard]] result<T> value() const {
    if (empty() || columns() == 0) return result<T>(boost::system::in_place_error, errc::out_of_range);
    return (*this)[0].get<T>(0);
  }

  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = row;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    iterator(const rows* owner, std::size_t i) noexcept : owner_(owner), i_(i) {}
    row operator*() const noexcept { return (*owner_)[i_]; }
    iterator& operator++() noexcept {
      ++i_;
      return *this;
    }
    iterator operator++(int) noexcept {
      auto copy = *this;
      ++i_;
      return copy;
    }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.i_ == b.i_; }

   private:
    const rows* owner_ = nullptr;
    std::size_t i_ = 0;
  };
  [[nodiscard]] iterator begin() const noexcept { return {this, 0}; }
  [[nodiscard]] iterator end() const noexcept { return {this, size()}; }

  /// The underlying libpq result, for what keel does not wrap.
  [[nodiscard]] pg_result* native() const noexcept { return result_.get(); }

 private:
  detail::result_ptr result_;
};

namespace detail {
// Results of execute() (the simple protocol) arrive as text; the common types read from it.
template <class T>
result<T> decode_text(oid type, std::string_view text) {
  if constexpr (std::is_same_v<T, std::string>) {
    return std::string(text);
  } else if constexpr (std::is_same_v<T, std::string_view>) {
    return text;  // a view into the result
  } else if constexpr (std::is_same_v<T, bool>) {
    if (type != oids::bool_) return errc::type_mismatch;
    return text == "t";
  } else if constexpr (std::is_integral_v<T>) {
    if (!codec<T>::accepts(type)) return errc::type_mismatch;
    T value{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return errc::out_of_range;
    return value;
  } else {
    return errc::type_mismatch;  // use query() for binary results of every type
  }
}

template <class T>
result<T> decode_field(oid type, bool text_format, bytes_view data) {
  if (text_format) return decode_text<T>(type, as_chars(data));
  if (!codec<T>::accepts(type)) return errc::type_mismatch;
  return codec<T>::decode(type, data);
}
}  // namespace detail

template <class T>
result<T> row::get(std::size_t column) const {
  oid type = 0;
  bool text_format = false;
  auto data = raw(column, type, text_format);
  if (!data) return result<T>(boost::system::in_place_error, data.error());
  if constexpr (detail::is_optional<T>::value) {
    if (data->data() == nullptr) return T{};
    auto v = detail::decode_field<typename T::value_type>(type, text_format, *data);
    if (!v) return result<T>(boost::system::in_place_error, v.error());
    return T{std::move(*v)};
  } else {
    if (data->data() == nullptr) return result<T>(boost::system::in_place_error, errc::unexpected_null);
    return detail::decode_field<T>(type, text_format, *data);
  }
}

template <class... T>
result<std::tuple<T...>> row::as(std::size_t first) const {
  return [ this, first ]<std::size_t... I>(std::index_sequence<I...>)->result<std::tuple<T...>> {
    std::tuple<result<T>...> fields{this->template get<T>(first + I)...};
    error_code first_error;
    // In column order, so the error reported is that of the leftmost failing column.
    ((first_error =
          first_error ? first_error : (std::get<I>(fields) ? error_code{} : std::get<I>(fields).error())),
     ...);
    if (first_error) return result<std::tuple<T...>>(boost::system::in_place_error, first_error);
    return std::tuple<T...>{std::move(*std::get<I>(fields))...};
  }
  (std::index_sequence_for<T...>{});
}

template <class T>
result<T> row::get(std::string_view name) const {
  auto column = rows_->column_index(name);
  if (!column) return result<T>(boost::system::in_place_error, column.error());
  return get<T>(*column);
}

}  // namespace keel::pg
