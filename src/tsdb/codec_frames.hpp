#pragma once
// Internals shared by the codecs (packed_times.cpp, decimal.cpp, gorilla.cpp, chimp.cpp) and the
// block format (codec.cpp): integer frames, and how a section is appended. Not installed.
#include <keel/core/byte_io.hpp>
#include <keel/tsdb/codec.hpp>

#include <cstddef>
#include <cstdint>

// The hot loops are compiled twice, for baseline x86-64 and for x86-64-v3 (AVX2, LZCNT, BMI2),
// and the loader picks one for the CPU: bit scans and shifts are much cheaper with the latter.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define KEEL_TSDB_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KEEL_TSDB_MULTIVERSION
#endif

namespace keel::tsdb::detail {

/// Points per integer frame (and per decimal frame).
inline constexpr std::size_t frame_size = 1024;

/// Appends one integer frame of x[0, n) (n <= frame_size): patched frame-of-reference, delta or
/// zigzag delta, bit-packed, or with `allow_repeats` runs of repeats (see int_frames.cpp).
/// `items` is scratch for frame_size values.
void encode_int_frame(const std::int64_t* x, std::size_t n, bytes& out, std::uint64_t* items,
                      bool allow_repeats = false);

/// Reads one integer frame of n values into x. @returns errc::block_truncated when `in` ends
/// inside it, errc::block_corrupt for an impossible layout; reads nothing beyond `in`.
[[nodiscard]] result<void> decode_int_frame(byte_reader& in, std::size_t n, std::int64_t* x,
                                            std::uint64_t* items, bool allow_repeats = false);

}  // namespace keel::tsdb::detail
