#pragma once
/// @file keel/core/endian.hpp
/// @brief Fixed-width integers to and from big- or little-endian bytes, without alignment
/// requirements (one load or store and a byte swap where needed).
#include <bit>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace keel {

namespace detail {
template <std::unsigned_integral T>
[[nodiscard]] constexpr T byteswap(T value) noexcept {
  if constexpr (sizeof(T) == 1) {
    return value;
  } else if constexpr (sizeof(T) == 2) {
    return static_cast<T>(__builtin_bswap16(value));
  } else if constexpr (sizeof(T) == 4) {
    return static_cast<T>(__builtin_bswap32(value));
  } else {
    static_assert(sizeof(T) == 8);
    return static_cast<T>(__builtin_bswap64(value));
  }
}

template <class T>
concept fixed_integer = std::integral<T> && !std::same_as<T, bool> && (sizeof(T) <= 8);

template <fixed_integer T, std::endian order>
[[nodiscard]] inline T load(const void* p) noexcept {
  std::make_unsigned_t<T> raw;
  std::memcpy(&raw, p, sizeof raw);
  if constexpr (std::endian::native != order) raw = byteswap(raw);
  return static_cast<T>(raw);
}

template <fixed_integer T, std::endian order>
inline void store(void* p, T value) noexcept {
  auto raw = static_cast<std::make_unsigned_t<T>>(value);
  if constexpr (std::endian::native != order) raw = byteswap(raw);
  std::memcpy(p, &raw, sizeof raw);
}
}  // namespace detail

/// Reads a big-endian (network order) integer from `p`; `p` needs `sizeof(T)` readable bytes.
template <detail::fixed_integer T>
[[nodiscard]] inline T load_be(const void* p) noexcept {
  return detail::load<T, std::endian::big>(p);
}
/// Reads a little-endian integer from `p`.
template <detail::fixed_integer T>
[[nodiscard]] inline T load_le(const void* p) noexcept {
  return detail::load<T, std::endian::little>(p);
}
/// Writes `value` big-endian at `p`; `p` needs `sizeof(T)` writable bytes.
template <detail::fixed_integer T>
inline void store_be(void* p, T value) noexcept {
  detail::store<T, std::endian::big>(p, value);
}
/// Writes `value` little-endian at `p`.
template <detail::fixed_integer T>
inline void store_le(void* p, T value) noexcept {
  detail::store<T, std::endian::little>(p, value);
}

}  // namespace keel
