#include <keel/pg/params.hpp>
#include <keel/pg/rows.hpp>

#include <libpq-fe.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

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

namespace {

// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
void append_civil(std::string& out, std::int64_t days) {
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  std::int64_t year = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned day = doy - (153 * mp + 2) / 5 + 1;
  const unsigned month = mp < 10 ? mp + 3 : mp - 9;
  if (month <= 2) ++year;
  const bool bc = year <= 0;
  if (bc) year = 1 - year;  // Postgres prints 1 BC for year 0
  char buffer[40];
  const int n =
      std::snprintf(buffer, sizeof buffer, "%04lld-%02u-%02u", static_cast<long long>(year), month, day);
  out.append(buffer, static_cast<std::size_t>(n));
  if (bc) out += " BC";
}

// Microseconds since midnight as HH:MM:SS[.ffffff], trailing zeros of the fraction dropped.
void append_clock(std::string& out, std::int64_t micros) {
  const auto seconds = micros / 1'000'000;
  const auto fraction = micros % 1'000'000;
  char buffer[32];
  const int n =
      std::snprintf(buffer, sizeof buffer, "%02lld:%02lld:%02lld", static_cast<long long>(seconds / 3600),
                    static_cast<long long>(seconds / 60 % 60), static_cast<long long>(seconds % 60));
  out.append(buffer, static_cast<std::size_t>(n));
  if (fraction != 0) {
    char digits[24];
    std::snprintf(digits, sizeof digits, ".%06lld", static_cast<long long>(fraction));
    std::string f(digits);
    while (f.back() == '0') f.pop_back();
    out += f;
  }
}

constexpr std::int64_t days_1970_to_2000 = 10957;

template <class T>
std::string shortest(T value) {
  if (std::isnan(value)) return "NaN";
  if (value == std::numeric_limits<T>::infinity()) return "Infinity";
  if (value == -std::numeric_limits<T>::infinity()) return "-Infinity";
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, end);
}

}  // namespace

result<std::optional<std::string>> row::text(std::size_t column) const {
  oid type = 0;
  bool text_format = false;
  auto data = raw(column, type, text_format);
  if (!data) return data.error();
  if (is_null(column)) return std::optional<std::string>{};
  if (text_format) return std::optional<std::string>(std::string(as_chars(*data)));
  byte_reader in(*data);
  std::string out;
  switch (type) {
    case oids::bool_: {
      auto v = in.be<std::uint8_t>();
      if (!v) return errc::bad_value;
      return std::optional<std::string>(*v != 0 ? "true" : "false");
    }
    case oids::int2: {
      auto v = in.be<std::int16_t>();
      if (!v) return errc::bad_value;
      return std::optional<std::string>(std::to_string(*v));
    }
    case oids::int4: {
      auto v = in.be<std::int32_t>();
      if (!v) return errc::bad_value;
      return std::optional<std::string>(std::to_string(*v));
    }
    case oids::int8: {
      auto v = in.be<std::int64_t>();
      if (!v) return errc::bad_value;
      return std::optional<std::string>(std::to_string(*v));
    }
    case oids::float4: {
      auto v = in.be<std::uint32_t>();
      if (!v) return errc::bad_value;
      return std::optional<std::string>(shortest(std::bit_cast<float>(*v)));
    }
    case oids::float8: {
      auto v = in.be<std::uint64_t>();
      if (!v) return errc::bad_value;
      return std::optional<std::string>(shortest(std::bit_cast<double>(*v)));
    }
    case oids::date: {
      auto v = in.be<std::int32_t>();
      if (!v) return errc::bad_value;
      if (*v == std::numeric_limits<std::int32_t>::max()) return std::optional<std::string>("infinity");
      if (*v == std::numeric_limits<std::int32_t>::min()) return std::optional<std::string>("-infinity");
      append_civil(out, *v + days_1970_to_2000);
      return std::optional<std::string>(std::move(out));
    }
    case oids::time: {
      auto v = in.be<std::int64_t>();
      if (!v) return errc::bad_value;
      append_clock(out, *v);
      return std::optional<std::string>(std::move(out));
    }
    case oids::timestamp:
    case oids::timestamptz: {
      auto v = in.be<std::int64_t>();
      if (!v) return errc::bad_value;
      if (*v == std::numeric_limits<std::int64_t>::max()) return std::optional<std::string>("infinity");
      if (*v == std::numeric_limits<std::int64_t>::min()) return std::optional<std::string>("-infinity");
      const std::int64_t micros_per_day = 86'400'000'000;
      std::int64_t days = *v / micros_per_day;
      std::int64_t rest = *v % micros_per_day;
      if (rest < 0) {
        rest += micros_per_day;
        --days;
      }
      append_civil(out, days + days_1970_to_2000);
      // Postgres puts BC after the time: "0044-03-15 12:00:00 BC".
      const bool bc = out.ends_with(" BC");
      if (bc) out.resize(out.size() - 3);
      out += ' ';
      append_clock(out, rest);
      if (type == oids::timestamptz) out += "+00";
      if (bc) out += " BC";
      return std::optional<std::string>(std::move(out));
    }
    case oids::bytea: {
      static constexpr char hex[] = "0123456789abcdef";
      out = "\\x";
      for (const auto b : *data) {
        out += hex[b >> 4];
        out += hex[b & 15];
      }
      return std::optional<std::string>(std::move(out));
    }
    default:
      break;
  }
  if (codec<std::string>::accepts(type)) {
    auto v = codec<std::string>::decode(type, *data);
    if (!v) return v.error();
    return std::optional<std::string>(std::move(*v));
  }
  return errc::type_mismatch;
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
