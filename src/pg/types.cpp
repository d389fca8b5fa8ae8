#include <keel/pg/types.hpp>

#include <algorithm>
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
  byte_reader in(raw);
  const auto ndigits = in.be<std::int16_t>();
  const auto weight_read = in.be<std::int16_t>();
  const auto sign_read = in.be<std::uint16_t>();
  const auto dscale_read = in.be<std::int16_t>();
  if (!ndigits || !weight_read || !sign_read || !dscale_read) return errc::bad_value;
  const auto weight = *weight_read;
  const auto sign = *sign_read;
  const auto dscale = *dscale_read;
  if (sign == 0xC000) return std::string("NaN");
  if (sign == 0xD000) return std::string("Infinity");
  if (sign == 0xF000) return std::string("-Infinity");
  if ((sign != 0x0000 && sign != 0x4000) || *ndigits < 0 || dscale < 0) return errc::bad_value;
  std::vector<int> digits(static_cast<std::size_t>(*ndigits));
  for (auto& d : digits) {
    const auto read = in.be<std::uint16_t>();
    if (!read || *read > 9999) return errc::bad_value;
    d = *read;
  }
  if (!in.expect_end()) return errc::bad_value;
  // Base-10000 digits; digit i is worth 10000^(weight - i).
  auto digit = [&](int i) -> int {
    if (i < 0 || i >= static_cast<int>(digits.size())) return 0;
    return digits[static_cast<std::size_t>(i)];
  };
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
  // Header: dimensions, has-NULLs flag, element type; then per dimension its size and lower
  // bound; then each element as a length (-1: NULL) and that many bytes.
  byte_reader in(raw);
  const auto ndim = in.be<std::int32_t>();
  const auto flags = in.be<std::int32_t>();
  const auto type = in.be<std::uint32_t>();
  if (!ndim || !flags || !type) return errc::bad_value;
  std::vector<bytes_view> elements;
  if (*ndim == 0) return elements;
  if (*ndim != 1) return errc::type_mismatch;  // multi-dimensional arrays are not mapped
  const auto count = in.be<std::int32_t>();
  const auto lower_bound = in.be<std::int32_t>();
  if (*type != element_type || !count || !lower_bound || *count < 0) return errc::bad_value;
  // Each element takes at least its 4-byte length: a hostile count reserves no more than that.
  elements.reserve(std::min(static_cast<std::size_t>(*count), in.remaining() / 4));
  for (std::int32_t i = 0; i < *count; ++i) {
    const auto length = in.be<std::int32_t>();
    if (!length) return errc::bad_value;
    if (*length == -1) {
      elements.emplace_back();  // NULL: a view with no data
      continue;
    }
    if (*length < 0) return errc::bad_value;
    const auto data = in.take(static_cast<std::size_t>(*length));
    if (!data) return errc::bad_value;
    // A zero-length element keeps a non-null pointer (into raw) to tell it apart from NULL.
    elements.push_back(*data);
  }
  if (!in.expect_end()) return errc::bad_value;
  return elements;
}

void encode_array_header(bytes& out, oid element_type, std::size_t count) {
  byte_writer w(out);
  w.be(std::int32_t{count == 0 ? 0 : 1});  // dimensions
  w.be(std::int32_t{0});                   // no NULLs
  w.be(static_cast<std::uint32_t>(element_type));
  if (count != 0) {
    w.be(static_cast<std::int32_t>(count));  // size of the one dimension
    w.be(std::int32_t{1});                   // lower bound
  }
}

}  // namespace detail
}  // namespace keel::pg
