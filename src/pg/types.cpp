#include <keel/pg/types.hpp>

#include <charconv>

namespace keel::pg {

result<uuid> uuid::parse(std::string_view text) {
  if (text.size() != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' || text[23] != '-') {
    return errc::bad_value;
  }
  std::string hex;
  hex.reserve(32);
  for (const char c : text) {
    if (c != '-') hex.push_back(c);
  }
  auto raw = from_hex(hex);
  if (!raw || raw->size() != 16) return errc::bad_value;
  uuid u;
  std::copy(raw->begin(), raw->end(), u.bytes.begin());
  return u;
}

std::string uuid::to_string() const {
  const auto hex = to_hex(bytes);
  return hex.substr(0, 8) + '-' + hex.substr(8, 4) + '-' + hex.substr(12, 4) + '-' + hex.substr(16, 4) + '-' +
         hex.substr(20);
}

bool codec<std::string>::accepts(oid t) {
  switch (t) {
    case oids::text:
    case oids::varchar:
    case oids::bpchar:
    case oids::name:
    case oids::unknown:
    case oids::json:
    case oids::jsonb:
    case oids::numeric:
    case oids::uuid:
      return true;
    default:
      return false;
  }
}

result<std::string> codec<std::string>::decode(oid t, bytes_view raw) {
  switch (t) {
    case oids::jsonb: {
      auto v = codec<jsonb>::decode(t, raw);
      if (!v) return v.error();
      return std::move(v->text);
    }
    case oids::numeric:
      return detail::numeric_to_text(raw);
    case oids::uuid: {
      auto v = codec<uuid>::decode(t, raw);
      if (!v) return v.error();
      return v->to_string();
    }
    default:
      return std::string(as_chars(raw));
  }
}

namespace detail {

result<std::string> numeric_to_text(bytes_view raw) {
  if (raw.size() < 8) return errc::bad_value;
  const auto ndigits = static_cast<std::int16_t>(get_be(raw, 0, 2));
  const auto weight = static_cast<std::int16_t>(get_be(raw, 2, 2));
  const auto sign = static_cast<std::uint16_t>(get_be(raw, 4, 2));
  const auto dscale = static_cast<std::int16_t>(get_be(raw, 6, 2));
  if (sign == 0xC000) return std::string("NaN");
  if (sign == 0xD000) return std::string("Infinity");
  if (sign == 0xF000) return std::string("-Infinity");
  if ((sign != 0x0000 && sign != 0x4000) || ndigits < 0 || dscale < 0 ||
      raw.size() != 8 + 2 * static_cast<std::size_t>(ndigits)) {
    return errc::bad_value;
  }
  // Base-10000 digits; digit i is worth 10000^(weight - i).
  auto digit = [&](int i) -> int {
    if (i < 0 || i >= ndigits) return 0;
    return static_cast<int>(get_be(raw, 8 + 2 * static_cast<std::size_t>(i), 2));
  };
  for (int i = 0; i < ndigits; ++i) {
    if (digit(i) > 9999) return errc::bad_value;
  }
  std::string out;
  if (sign == 0x4000) out.push_back('-');
  if (weight < 0) {
    out.push_back('0');
  } else {
    for (int i = 0; i <= weight; ++i) {
      char group[8];
      const auto n = std::to_chars(group, group + sizeof group, digit(i)).ptr - group;
      if (i != 0) out.append(static_cast<std::size_t>(4 - n), '0');
      out.append(group, static_cast<std::size_t>(n));
    }
  }
  if (dscale > 0) {
    out.push_back('.');
    std::string fraction;
    for (int i = weight + 1; static_cast<int>(fraction.size()) < dscale; ++i) {
      char group[8];
      const auto n = std::to_chars(group, group + sizeof group, digit(i)).ptr - group;
      fraction.append(static_cast<std::size_t>(4 - n), '0');
      fraction.append(group, static_cast<std::size_t>(n));
    }
    fraction.resize(static_cast<std::size_t>(dscale));
    out += fraction;
  }
  return out;
}

result<std::vector<bytes_view>> parse_array(bytes_view raw, oid element_type) {
  if (raw.size() < 12) return errc::bad_value;
  const auto ndim = static_cast<std::int32_t>(get_be(raw, 0, 4));
  const auto type = static_cast<oid>(get_be(raw, 8, 4));
  std::vector<bytes_view> elements;
  if (ndim == 0) return elements;
  if (ndim != 1) return errc::type_mismatch;  // multi-dimensional arrays are not mapped
  if (type != element_type || raw.size() < 20) return errc::bad_value;
  const auto count = static_cast<std::int32_t>(get_be(raw, 12, 4));
  if (count < 0) return errc::bad_value;
  std::size_t at = 20;
  elements.reserve(static_cast<std::size_t>(count));
  for (std::int32_t i = 0; i < count; ++i) {
    if (at + 4 > raw.size()) return errc::bad_value;
    const auto length = static_cast<std::int32_t>(get_be(raw, at, 4));
    at += 4;
    if (length == -1) {
      elements.emplace_back();  // NULL: a view with no data
      continue;
    }
    if (length < 0 || at + static_cast<std::size_t>(length) > raw.size()) return errc::bad_value;
    // A zero-length element still needs a non-null pointer to tell it apart from NULL.
    elements.emplace_back(raw.data() + at, static_cast<std::size_t>(length));
    at += static_cast<std::size_t>(length);
  }
  if (at != raw.size()) return errc::bad_value;
  return elements;
}

void encode_array_header(bytes& out, oid element_type, std::size_t count) {
  put_be(out, count == 0 ? 0 : 1, 4);  // dimensions
  put_be(out, 0, 4);                   // no NULLs
  put_be(out, element_type, 4);
  if (count != 0) {
    put_be(out, count, 4);  // size of the one dimension
    put_be(out, 1, 4);      // lower bound
  }
}

}  // namespace detail
}  // namespace keel::pg
