#pragma once
// ASCII helpers that HTTP parsing needs in more than one place (header names are
// case-insensitive; percent-encoding and Host values use hex digits).
#include <algorithm>
#include <string_view>

namespace keel::net::detail {

/// Equal ignoring ASCII case (header names, transfer codings).
[[nodiscard]] inline bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

/// The value of a hex digit, or -1.
[[nodiscard]] inline int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace keel::net::detail
