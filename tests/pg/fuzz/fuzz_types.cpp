// libFuzzer target for keel::pg's decoders of the binary result format: what a server (or
// anything posing as one) sends must give a value or an error, never a crash, an overread or an
// allocation sized by a hostile length. The first input byte picks what to attack:
//   0: numeric_to_text; what decodes must be decimal text Postgres would print
//   1: int2/int4/int8 arrays; what decodes must come back through the array encoder
//   2: text arrays, the same
//   3: the scalar codecs at every column type they accept; what decodes must encode back to
//      the same bytes where the encoding is one-to-one
//   4: uuid::parse on the input as text, against to_string
#include <keel/pg/types.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace pg = keel::pg;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

bool is_decimal_text(const std::string& text) {
  if (text == "NaN" || text == "Infinity" || text == "-Infinity") return true;
  std::size_t i = text.starts_with('-') ? 1 : 0;
  const auto integer_start = i;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) != 0) ++i;
  if (i == integer_start) return false;
  if (i == text.size()) return true;
  if (text[i] != '.' || i + 1 == text.size()) return false;
  return std::all_of(text.begin() + static_cast<std::ptrdiff_t>(i) + 1, text.end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
}

void numeric(keel::bytes_view raw) {
  const auto text = pg::detail::numeric_to_text(raw);
  if (text) require(is_decimal_text(*text));
}

void integer_arrays(keel::bytes_view raw) {
  using codec = pg::codec<std::vector<std::int64_t>>;
  for (const auto type : {pg::oids::int2_array, pg::oids::int4_array, pg::oids::int8_array}) {
    const auto values = codec::decode(type, raw);
    if (!values) continue;
    keel::bytes encoded;
    require(codec::encode(*values, encoded));
    const auto again = codec::decode(pg::oids::int8_array, encoded);
    require(again && *again == *values);
  }
}

void text_arrays(keel::bytes_view raw) {
  using codec = pg::codec<std::vector<std::string>>;
  for (const auto type : {pg::oids::text_array, pg::oids::varchar_array}) {
    const auto values = codec::decode(type, raw);
    if (!values) continue;
    keel::bytes encoded;
    const bool has_nul = std::any_of(values->begin(), values->end(),
                                     [](const std::string& s) { return s.find('\0') != std::string::npos; });
    require(codec::encode(*values, encoded) == !has_nul);
    if (has_nul) continue;
    const auto again = codec::decode(pg::oids::text_array, encoded);
    require(again && *again == *values);
  }
}

// Decodes `raw` as T from `column`; where it decodes and the encoding is one-to-one, T's
// encoder must give back exactly `raw`.
template <class T>
void scalar(pg::oid column, keel::bytes_view raw, bool one_to_one) {
  using codec = pg::codec<T>;
  if (!codec::accepts(column)) return;
  const auto value = codec::decode(column, raw);
  if (!value || !one_to_one || column != codec::type) return;
  keel::bytes encoded;
  require(codec::encode(*value, encoded));
  require(std::equal(encoded.begin(), encoded.end(), raw.begin(), raw.end()));
}

void scalars(keel::bytes_view raw) {
  for (const auto column :
       {pg::oids::bool_, pg::oids::bytea, pg::oids::int2, pg::oids::int4, pg::oids::int8, pg::oids::text,
        pg::oids::json, pg::oids::float4, pg::oids::float8, pg::oids::varchar, pg::oids::timestamp,
        pg::oids::timestamptz, pg::oids::numeric, pg::oids::uuid, pg::oids::jsonb}) {
    scalar<bool>(column, raw, false);  // any non-zero byte is true
    scalar<std::int16_t>(column, raw, true);
    scalar<std::int32_t>(column, raw, true);
    scalar<std::int64_t>(column, raw, true);
    scalar<float>(column, raw, true);
    scalar<double>(column, raw, true);
    scalar<keel::bytes>(column, raw, true);
    scalar<pg::uuid>(column, raw, true);
    scalar<keel::timestamp>(column, raw, true);
    scalar<pg::jsonb>(column, raw, true);
    scalar<pg::numeric>(column, raw, false);  // decoded from binary, sent as text
    scalar<std::string>(column, raw, false);  // sent as text
  }
}

void uuid_text(keel::bytes_view raw) {
  const std::string text(reinterpret_cast<const char*>(raw.data()), raw.size());
  const auto parsed = pg::uuid::parse(text);
  if (!parsed) return;
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  require(parsed->to_string() == lower);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const keel::bytes_view raw(data + 1, size - 1);
  switch (data[0] % 5) {
    case 0:
      numeric(raw);
      break;
    case 1:
      integer_arrays(raw);
      break;
    case 2:
      text_arrays(raw);
      break;
    case 3:
      scalars(raw);
      break;
    default:
      uuid_text(raw);
      break;
  }
  return 0;
}
