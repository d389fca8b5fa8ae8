#pragma once
/// @file keel/pg/types.hpp
/// @brief How C++ values travel to and from Postgres: `codec<T>` per type, binary wherever
/// Postgres has a cheaper binary form.
///
/// | C++ | parameter sent as | read from |
/// |---|---|---|
/// | bool | bool | bool |
/// | int16_t, int32_t, int64_t | int2, int4, int8 | any narrower-or-equal integer type |
/// | float, double | float4, float8 | float4 (both), float8 (double) |
/// | std::string, std::string_view, const char* | untyped text (the server infers) | text, varchar, char,
/// name, json, jsonb, numeric, uuid (std::string_view: text, varchar, char, name, json, as a view) | |
/// keel::bytes, keel::bytes_view | bytea | bytea | | pg::uuid | uuid | uuid | | pg::jsonb | jsonb | jsonb,
/// json | | pg::numeric | numeric (as text: exact) | numeric | | keel::timestamp | timestamptz (microseconds;
/// finer digits are truncated) | timestamptz, timestamp (as UTC) | | std::vector<int64_t> | int8[] | int2[],
/// int4[], int8[] | | std::vector<std::string> | text[] | text[], varchar[] | | std::optional<T> | NULL or T
/// | NULL or T |
///
/// Specialize `codec<T>` for your own types (see the members below).
#include <keel/core/byte_io.hpp>
#include <keel/core/bytes.hpp>
#include <keel/core/clock.hpp>
#include <keel/pg/error.hpp>

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::pg {

/// A Postgres type OID.
using oid = unsigned int;

/// The built-in type OIDs keel knows (from pg_type.h, stable across versions).
namespace oids {
inline constexpr oid unspecified = 0;
// `bool` is a keyword, hence `bool_`.
// NOLINTNEXTLINE(readability-identifier-naming)
inline constexpr oid bool_ = 16, bytea = 17, name = 19, int8 = 20, int2 = 21, int4 = 23, text = 25;
inline constexpr oid json = 114, float4 = 700, float8 = 701, unknown = 705, bpchar = 1042, varchar = 1043;
inline constexpr oid date = 1082, time = 1083, timestamp = 1114, timestamptz = 1184, numeric = 1700,
                     uuid = 2950, jsonb = 3802;
inline constexpr oid int2_array = 1005, int4_array = 1007, int8_array = 1016, text_array = 1009,
                     varchar_array = 1015;
}  // namespace oids

/// A UUID, sent and read in uuid's 16-byte binary form.
struct uuid {
  std::array<std::uint8_t, 16> bytes{};
  /// Parses the canonical 36-character form (either case). @returns errc::bad_value otherwise.
  [[nodiscard]] static result<uuid> parse(std::string_view text);
  /// The canonical lowercase 8-4-4-4-12 form.
  [[nodiscard]] std::string to_string() const;
  friend bool operator==(const uuid&, const uuid&) = default;
};

/// A JSON document held as text, sent and read as jsonb.
struct jsonb {
  std::string text;
  friend bool operator==(const jsonb&, const jsonb&) = default;
};

/// An exact decimal held as text ("12.50", "-0.001", "NaN"), sent and read as numeric.
struct numeric {
  std::string text;
  friend bool operator==(const numeric&, const numeric&) = default;
};

namespace detail {
/// A value that is exactly one big-endian T: errc::bad_value for any other length.
template <keel::detail::fixed_integer T>
[[nodiscard]] result<T> exactly_be(bytes_view raw) noexcept {
  byte_reader in(raw);
  const auto v = in.be<T>();
  if (!v || !in.empty()) return errc::bad_value;
  return *v;
}
// Microseconds between the Unix epoch and Postgres' epoch, 2000-01-01 00:00:00 UTC.
inline constexpr std::int64_t postgres_epoch_us = 946'684'800'000'000;

[[nodiscard]] result<std::string> numeric_to_text(bytes_view raw);
[[nodiscard]] result<std::vector<bytes_view>> parse_array(bytes_view raw, oid element_type);
void encode_array_header(bytes& out, oid element_type, std::size_t count);
}  // namespace detail

/// The codec for T. A specialization provides:
///   static constexpr oid type;          // parameter type OID (0 = let the server infer)
///   static constexpr bool binary;        // parameter format
///   static bool encode(const T&, bytes& out);            // false: the value cannot be sent
///   static bool accepts(oid column_type);                // readable from this column type?
///   static result<T> decode(oid column_type, bytes_view raw);  // from the binary result form
template <class T>
struct codec;

template <>
struct codec<bool> {
  static constexpr oid type = oids::bool_;
  static constexpr bool binary = true;
  static bool encode(bool v, bytes& out) {
    out.push_back(v ? 1 : 0);
    return true;
  }
  static bool accepts(oid t) { return t == oids::bool_; }
  static result<bool> decode(oid, bytes_view raw) {
    if (raw.size() != 1) return errc::bad_value;
    return raw[0] != 0;
  }
};

/// Integers: sent at their own width, read from any column type that fits.
template <class Int, oid Type, int Size>
struct integer_codec {
  static constexpr oid type = Type;
  static constexpr bool binary = true;
  static_assert(sizeof(Int) == Size);
  static bool encode(Int v, bytes& out) {
    byte_writer(out).be(v);
    return true;
  }
  static bool accepts(oid t) {
    return t == oids::int2 || (Size >= 4 && t == oids::int4) || (Size == 8 && t == oids::int8);
  }
  static result<Int> decode(oid t, bytes_view raw) {
    // Read at the column's width; the signed read sign-extends into a wider Int.
    if (t == oids::int2) return widen(detail::exactly_be<std::int16_t>(raw));
    if (t == oids::int4) return widen(detail::exactly_be<std::int32_t>(raw));
    return widen(detail::exactly_be<std::int64_t>(raw));
  }

 private:
  template <class Narrow>
  static result<Int> widen(const result<Narrow>& v) {
    if (!v) return v.error();
    return static_cast<Int>(*v);
  }
};
template <>
struct codec<std::int16_t> : integer_codec<std::int16_t, oids::int2, 2> {};
template <>
struct codec<std::int32_t> : integer_codec<std::int32_t, oids::int4, 4> {};
template <>
struct codec<std::int64_t> : integer_codec<std::int64_t, oids::int8, 8> {};

template <>
struct codec<double> {
  static constexpr oid type = oids::float8;
  static constexpr bool binary = true;
  static bool encode(double v, bytes& out) {
    byte_writer(out).be(std::bit_cast<std::uint64_t>(v));
    return true;
  }
  static bool accepts(oid t) { return t == oids::float8 || t == oids::float4; }
  static result<double> decode(oid t, bytes_view raw) {
    if (t == oids::float4) {
      const auto bits = detail::exactly_be<std::uint32_t>(raw);
      if (!bits) return bits.error();
      return static_cast<double>(std::bit_cast<float>(*bits));
    }
    const auto bits = detail::exactly_be<std::uint64_t>(raw);
    if (!bits) return bits.error();
    return std::bit_cast<double>(*bits);
  }
};

template <>
struct codec<float> {
  static constexpr oid type = oids::float4;
  static constexpr bool binary = true;
  static bool encode(float v, bytes& out) {
    byte_writer(out).be(std::bit_cast<std::uint32_t>(v));
    return true;
  }
  static bool accepts(oid t) { return t == oids::float4; }
  static result<float> decode(oid, bytes_view raw) {
    const auto bits = detail::exactly_be<std::uint32_t>(raw);
    if (!bits) return bits.error();
    return std::bit_cast<float>(*bits);
  }
};

/// Text parameters go in text format with no declared type, so the server infers it from the
/// statement (a string works for text, varchar, enum, date ... columns).
struct text_param_codec {
  static constexpr oid type = oids::unspecified;
  static constexpr bool binary = false;
  static bool encode(std::string_view v, bytes& out) {
    // Text parameters are NUL-terminated on the wire; Postgres text cannot hold NUL anyway.
    if (v.find('\0') != std::string_view::npos) return false;
    out.insert(out.end(), v.begin(), v.end());
    out.push_back(0);
    return true;
  }
};

template <>
struct codec<std::string> : text_param_codec {
  static bool accepts(oid t);
  static result<std::string> decode(oid t, bytes_view raw);
};
/// Reading a std::string_view gives a view into the result, valid while its `rows` lives: no
/// copy, for hot loops. Only for types whose binary form is their text.
template <>
struct codec<std::string_view> : text_param_codec {
  static bool accepts(oid t) {
    return t == oids::text || t == oids::varchar || t == oids::bpchar || t == oids::name ||
           t == oids::unknown || t == oids::json;
  }
  static result<std::string_view> decode(oid, bytes_view raw) { return as_chars(raw); }
};
template <>
struct codec<const char*> : text_param_codec {};
template <std::size_t N>
struct codec<char[N]> : text_param_codec {};

template <>
struct codec<bytes_view> {
  static constexpr oid type = oids::bytea;
  static constexpr bool binary = true;
  static bool encode(bytes_view v, bytes& out) {
    out.insert(out.end(), v.begin(), v.end());
    return true;
  }
};
template <>
struct codec<bytes> : codec<bytes_view> {
  static bool accepts(oid t) { return t == oids::bytea; }
  static result<bytes> decode(oid, bytes_view raw) { return bytes(raw.begin(), raw.end()); }
};

template <>
struct codec<uuid> {
  static constexpr oid type = oids::uuid;
  static constexpr bool binary = true;
  static bool encode(const uuid& v, bytes& out) {
    out.insert(out.end(), v.bytes.begin(), v.bytes.end());
    return true;
  }
  static bool accepts(oid t) { return t == oids::uuid; }
  static result<uuid> decode(oid, bytes_view raw) {
    if (raw.size() != 16) return errc::bad_value;
    uuid u;
    std::memcpy(u.bytes.data(), raw.data(), 16);
    return u;
  }
};

template <>
struct codec<jsonb> {
  static constexpr oid type = oids::jsonb;
  static constexpr bool binary = true;
  static bool encode(const jsonb& v, bytes& out) {
    out.push_back(1);  // jsonb binary format version
    out.insert(out.end(), v.text.begin(), v.text.end());
    return true;
  }
  static bool accepts(oid t) { return t == oids::jsonb || t == oids::json; }
  static result<jsonb> decode(oid t, bytes_view raw) {
    if (t == oids::jsonb) {
      if (raw.empty() || raw[0] != 1) return errc::bad_value;
      raw = raw.subspan(1);
    }
    return jsonb{std::string(as_chars(raw))};
  }
};

template <>
struct codec<numeric> {
  static constexpr oid type = oids::numeric;
  static constexpr bool binary = false;  // exact decimal text; the server parses and checks it
  static bool encode(const numeric& v, bytes& out) { return text_param_codec::encode(v.text, out); }
  static bool accepts(oid t) { return t == oids::numeric; }
  static result<numeric> decode(oid, bytes_view raw) {
    auto text = detail::numeric_to_text(raw);
    if (!text) return text.error();
    return numeric{std::move(*text)};
  }
};

template <>
struct codec<timestamp> {
  static constexpr oid type = oids::timestamptz;
  static constexpr bool binary = true;
  static bool encode(timestamp v, bytes& out) {
    const auto ns = v.time_since_epoch().count();
    // Floor to microseconds, so times before 1970 round down like times after it.
    const auto us = ns / 1000 - (ns % 1000 < 0 ? 1 : 0);
    byte_writer(out).be(static_cast<std::int64_t>(us - detail::postgres_epoch_us));
    return true;
  }
  static bool accepts(oid t) { return t == oids::timestamptz || t == oids::timestamp; }
  static result<timestamp> decode(oid, bytes_view raw) {
    const auto read = detail::exactly_be<std::int64_t>(raw);
    if (!read) return read.error();
    const auto us = *read;
    // ±infinity and anything outside what nanoseconds since 1970 can hold (±292 years).
    constexpr std::int64_t limit = 9'223'372'036'854'775 - 946'684'800'000'000;
    if (us > limit || us < -limit) return errc::out_of_range;
    return timestamp{std::chrono::nanoseconds((us + detail::postgres_epoch_us) * 1000)};
  }
};

template <>
struct codec<std::vector<std::int64_t>> {
  static constexpr oid type = oids::int8_array;
  static constexpr bool binary = true;
  static bool encode(const std::vector<std::int64_t>& v, bytes& out) {
    detail::encode_array_header(out, oids::int8, v.size());
    byte_writer w(out);
    for (const auto x : v) {
      w.be(std::int32_t{8});  // element length
      w.be(x);
    }
    return true;
  }
  static bool accepts(oid t) {
    return t == oids::int8_array || t == oids::int4_array || t == oids::int2_array;
  }
  static result<std::vector<std::int64_t>> decode(oid t, bytes_view raw) {
    const oid element = t == oids::int8_array ? oids::int8 : t == oids::int4_array ? oids::int4 : oids::int2;
    auto elements = detail::parse_array(raw, element);
    if (!elements) return elements.error();
    std::vector<std::int64_t> values;
    values.reserve(elements->size());
    for (const auto e : *elements) {
      if (e.data() == nullptr) return errc::unexpected_null;
      auto v = codec<std::int64_t>::decode(element, e);
      if (!v) return v.error();
      values.push_back(*v);
    }
    return values;
  }
};

template <>
struct codec<std::vector<std::string>> {
  static constexpr oid type = oids::text_array;
  static constexpr bool binary = true;
  static bool encode(const std::vector<std::string>& v, bytes& out) {
    detail::encode_array_header(out, oids::text, v.size());
    for (const auto& s : v) {
      if (s.find('\0') != std::string::npos) return false;
      byte_writer w(out);
      w.be(static_cast<std::uint32_t>(s.size()));
      w.append(as_bytes(s));
    }
    return true;
  }
  static bool accepts(oid t) { return t == oids::text_array || t == oids::varchar_array; }
  static result<std::vector<std::string>> decode(oid t, bytes_view raw) {
    auto elements = detail::parse_array(raw, t == oids::text_array ? oids::text : oids::varchar);
    if (!elements) return elements.error();
    std::vector<std::string> values;
    values.reserve(elements->size());
    for (const auto e : *elements) {
      if (e.data() == nullptr) return errc::unexpected_null;
      values.emplace_back(as_chars(e));
    }
    return values;
  }
};

namespace detail {
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
}  // namespace detail

/// Strips references and cv-qualifiers, and decays arrays (string literals) to what has a codec.
template <class T>
using codec_for = codec<std::remove_cvref_t<T>>;

}  // namespace keel::pg
