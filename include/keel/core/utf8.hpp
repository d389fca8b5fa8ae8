#pragma once
/// @file keel/core/utf8.hpp
/// @brief Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past
/// U+10FFFF): checking it, reading code points, writing them.
#include <cstddef>
#include <string>
#include <string_view>

namespace keel {

/// The length (1 to 4) of the well-formed UTF-8 sequence `text` starts with; 0 if it starts
/// with none (or is empty).
[[nodiscard]] constexpr std::size_t utf8_sequence_length(std::string_view text) noexcept {
  if (text.empty()) return 0;
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const auto lead = byte(0);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char second_low = 0x80;
  unsigned char second_high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_low = 0xA0;   // overlong below U+0800
    if (lead == 0xED) second_high = 0x9F;  // U+D800..DFFF are surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_low = 0x90;   // overlong below U+10000
    if (lead == 0xF4) second_high = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  if (text.size() < length || byte(1) < second_low || byte(1) > second_high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if ((byte(k) & 0xC0U) != 0x80U) return 0;
  }
  return length;
}

/// The code point of the well-formed sequence of `length` bytes (utf8_sequence_length's
/// answer) at the start of `text`.
[[nodiscard]] constexpr char32_t utf8_code_point(std::string_view text, std::size_t length) noexcept {
  const auto lead = static_cast<unsigned char>(text[0]);
  char32_t point = length == 1   ? lead
                   : length == 2 ? (lead & 0x1FU)
                   : length == 3 ? (lead & 0x0FU)
                                 : (lead & 0x07U);
  for (std::size_t k = 1; k < length; ++k)
    point = (point << 6U) | (static_cast<unsigned char>(text[k]) & 0x3FU);
  return point;
}

/// Whether all of `text` is well-formed UTF-8.
[[nodiscard]] constexpr bool valid_utf8(std::string_view text) noexcept {
  while (!text.empty()) {
    const auto length = utf8_sequence_length(text);
    if (length == 0) return false;
    text.remove_prefix(length);
  }
  return true;
}

/// Appends code point `point` (at most U+10FFFF, not a surrogate) as UTF-8.
inline void append_utf8(std::string& out, char32_t point) {
  if (point < 0x80) {
    out.push_back(static_cast<char>(point));
  } else if (point < 0x800) {
    out.push_back(static_cast<char>(0xC0U | (point >> 6U)));
    out.push_back(static_cast<char>(0x80U | (point & 0x3FU)));
  } else if (point < 0x10000) {
    out.push_back(static_cast<char>(0xE0U | (point >> 12U)));
    out.push_back(static_cast<char>(0x80U | ((point >> 6U) & 0x3FU)));
    out.push_back(static_cast<char>(0x80U | (point & 0x3FU)));
  } else {
    out.push_back(static_cast<char>(0xF0U | (point >> 18U)));
    out.push_back(static_cast<char>(0x80U | ((point >> 12U) & 0x3FU)));
    out.push_back(static_cast<char>(0x80U | ((point >> 6U) & 0x3FU)));
    out.push_back(static_cast<char>(0x80U | (point & 0x3FU)));
  }
}

}  // namespace keel
