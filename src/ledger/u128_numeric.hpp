#pragma once
// A u128 sent and read as Postgres numeric in binary form, so COPY and parameters need no text
// formatting or parsing.
#include <keel/core/byte_io.hpp>
#include <keel/ledger/types.hpp>
#include <keel/pg/types.hpp>

namespace keel::ledger::detail {
/// A u128 in a numeric(39, 0) column.
struct u128_numeric {
  u128 value = 0;
};
}  // namespace keel::ledger::detail

/// The binary numeric form: ndigits, weight, sign, dscale (int16 each), then ndigits base-10000
/// digits, most significant first; digit i is worth 10000^(weight - i).
template <>
struct keel::pg::codec<keel::ledger::detail::u128_numeric> {
  static constexpr oid type = oids::numeric;
  static constexpr bool binary = true;
  static bool encode(const keel::ledger::detail::u128_numeric& v, bytes& out) {
    std::uint16_t digits[10];  // 2^128 < 10000^10
    int n = 0;
    for (auto rest = v.value; rest != 0; rest /= 10000)
      digits[n++] = static_cast<std::uint16_t>(rest % 10000);
    byte_writer w(out);
    w.be(static_cast<std::uint16_t>(n));                   // ndigits
    w.be(static_cast<std::uint16_t>(n == 0 ? 0 : n - 1));  // weight: 10000^(n-1) for the first digit
    w.be(std::uint16_t{0});                                // sign: positive
    w.be(std::uint16_t{0});                                // dscale
    for (int i = n - 1; i >= 0; --i) w.be(digits[i]);
    return true;
  }
  static bool accepts(oid t) { return t == oids::numeric; }
  /// @returns errc::bad_value for short or garbled input, a negative or fractional value, or
  /// one above 2^128 - 1.
  static result<keel::ledger::detail::u128_numeric> decode(oid, bytes_view raw) {
    byte_reader in(raw);
    const auto ndigits = in.be<std::uint16_t>();
    const auto weight = in.be<std::int16_t>();
    const auto sign = in.be<std::uint16_t>();
    const auto dscale = in.be<std::uint16_t>();
    if (!ndigits || !weight || !sign || !dscale || *sign != 0) return errc::bad_value;
    keel::ledger::u128 value = 0;
    const keel::ledger::u128 limit = keel::ledger::u128_max / 10000;
    for (int i = 0; i < static_cast<int>(*ndigits); ++i) {
      const auto digit = in.be<std::uint16_t>();
      if (!digit || *digit > 9999) return errc::bad_value;
      if (i > *weight) {
        if (*digit != 0) return errc::bad_value;  // a fraction
        continue;
      }
      if (value > limit || value * 10000 > keel::ledger::u128_max - *digit) return errc::bad_value;
      value = value * 10000 + *digit;
    }
    if (!in.expect_end()) return errc::bad_value;
    // Digits the server left out (trailing zero groups) up to the units.
    for (int i = static_cast<int>(*ndigits); i <= *weight; ++i) {
      if (value > limit) return errc::bad_value;
      value *= 10000;
    }
    return keel::ledger::detail::u128_numeric{value};
  }
};
