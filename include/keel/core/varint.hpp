#pragma once
/// @file keel/core/varint.hpp
/// @brief LEB128 varints (as in protobuf) and zigzag mapping of signed integers.
#include <keel/core/bytes.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>

namespace keel {

/// The most bytes a 64-bit varint takes.
inline constexpr std::size_t max_varint_size = 10;

/// Bytes needed to encode `value`.
[[nodiscard]] constexpr std::size_t varint_size(std::uint64_t value) noexcept {
  // 1 + floor(bit_width / 7), with 0 taking one byte.
  const auto width = static_cast<std::size_t>(std::bit_width(value | 1U));
  return (width + 6) / 7;
}

/// Writes `value` to `out`, which must have room for varint_size(value) bytes.
/// @returns the number of bytes written.
constexpr std::size_t encode_varint(std::uint64_t value, std::uint8_t* out) noexcept {
  std::size_t n = 0;
  while (value >= 0x80) {
    out[n++] = static_cast<std::uint8_t>(value | 0x80);
    value >>= 7;
  }
  out[n++] = static_cast<std::uint8_t>(value);
  return n;
}

/// Appends the varint encoding of `value` to `out`.
inline void append_varint(bytes& out, std::uint64_t value) {
  std::uint8_t buffer[max_varint_size];
  const auto n = encode_varint(value, buffer);
  out.insert(out.end(), buffer, buffer + n);
}

/// Decodes one varint from `in` starting at `offset`, and advances `offset` past it.
/// @returns errc::varint_truncated when the input ends inside the varint, errc::varint_overflow
/// when it does not fit in 64 bits, errc::varint_noncanonical for padded encodings (so each
/// value has exactly one encoding); `offset` is unchanged on error.
[[nodiscard]] constexpr result<std::uint64_t> decode_varint(bytes_view in, std::size_t& offset) noexcept {
  std::uint64_t value = 0;
  std::size_t i = offset;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    if (i >= in.size()) return errc::varint_truncated;
    const std::uint8_t byte = in[i++];
    if (shift == 63 && byte > 1) return errc::varint_overflow;
    // A zero final byte after the first adds nothing: two encodings of one value.
    if (byte == 0 && shift != 0) return errc::varint_noncanonical;
    value |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      offset = i;
      return value;
    }
  }
  return errc::varint_overflow;
}

/// Maps signed to unsigned so that small magnitudes stay small: 0,-1,1,-2 → 0,1,2,3.
[[nodiscard]] constexpr std::uint64_t zigzag_encode(std::int64_t value) noexcept {
  return (static_cast<std::uint64_t>(value) << 1) ^ static_cast<std::uint64_t>(value >> 63);
}

/// The inverse of zigzag_encode.
[[nodiscard]] constexpr std::int64_t zigzag_decode(std::uint64_t value) noexcept {
  return static_cast<std::int64_t>((value >> 1) ^ (~(value & 1) + 1));
}

}  // namespace keel
