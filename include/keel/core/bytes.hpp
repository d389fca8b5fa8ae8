#pragma once
/// @file keel/core/bytes.hpp
/// @brief Byte views and buffers, hex and base64 codecs that reject bad input, and a
/// constant-time comparison.
#include <keel/core/error.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

/// A read-only view of bytes.
using bytes_view = std::span<const std::uint8_t>;
/// An owned, growable byte buffer.
using bytes = std::vector<std::uint8_t>;

/// The bytes of a string, without copying.
[[nodiscard]] inline bytes_view as_bytes(std::string_view text) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

/// Bytes seen as characters, without copying.
[[nodiscard]] inline std::string_view as_chars(bytes_view data) noexcept {
  return {reinterpret_cast<const char*>(data.data()), data.size()};
}

/// Lowercase hex, two digits per byte.
[[nodiscard]] std::string to_hex(bytes_view data);

/// Decodes hex (either case). @returns errc::hex_odd_length or errc::hex_invalid_digit on
/// bad input; nothing else is accepted (no whitespace, no `0x`).
[[nodiscard]] result<bytes> from_hex(std::string_view text);

/// Standard base64 (RFC 4648 §4), always padded with `=`.
[[nodiscard]] std::string to_base64(bytes_view data);

/// URL-safe base64 (RFC 4648 §5: `-` and `_`), unpadded as in JWTs.
[[nodiscard]] std::string to_base64url(bytes_view data);

/// Decodes standard base64; padding is required. Rejects characters outside the alphabet
/// (including whitespace and the URL-safe `-`/`_`), bad lengths, misplaced padding and
/// non-zero unused bits, so every byte string has exactly one accepted encoding.
[[nodiscard]] result<bytes> from_base64(std::string_view text);

/// Decodes URL-safe base64, padded or not, with the same strictness as from_base64.
[[nodiscard]] result<bytes> from_base64url(std::string_view text);

/// Compares two byte strings in time that depends only on their lengths, for MACs and
/// tokens. Different lengths compare unequal at once (lengths are not secret).
[[nodiscard]] bool constant_time_equal(bytes_view a, bytes_view b) noexcept;

}  // namespace keel
