// The decimal codec (ALP-like): values scaled by 10^e to integers when that is exact, integer
// frames of them (see int_frames.cpp), exceptions stored raw.
#include <keel/core/endian.hpp>

#include "codec_frames.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>

namespace keel::tsdb::codecs {
namespace {

using detail::decode_int_frame;
using detail::encode_int_frame;
using detail::frame_size;

constexpr int max_exponent = 18;
constexpr std::array<double, max_exponent + 1> powers_of_ten = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};
// Adding and subtracting 1.5 * 2^52 rounds to the nearest integer for |x| < 2^51 (ALP's trick).
constexpr double round_magic = 6755399441055744.0;
constexpr double scaled_limit = 2251799813685248.0;  // 2^51

/// The integer n with n / 10^e == v bit for bit, if there is one.
inline bool to_decimal(double v, double power, std::int64_t& n) noexcept {
  const double scaled = v * power;
  const bool in_range = std::fabs(scaled) < scaled_limit;  // also false for NaN and infinities
  // scaled + magic holds round(scaled) in its low mantissa bits: the integer comes from the bits
  // and its exact double from subtracting the magic again, without conversion instructions.
  const double shifted = scaled + round_magic;
  n = static_cast<std::int64_t>(std::bit_cast<std::uint64_t>(shifted) -
                                std::bit_cast<std::uint64_t>(round_magic));
  const double back = (shifted - round_magic) / power;
  // No early return: callers scale whole frames, and a branch-free body lets that loop vectorize.
  return in_range & (std::bit_cast<std::uint64_t>(back) == std::bit_cast<std::uint64_t>(v));
}

/// The smallest exponent that represents the most sampled values, and the share it represents.
int choose_exponent(std::span<const double> values, double& share) {
  const std::size_t samples = std::min<std::size_t>(values.size(), 256);
  const std::size_t step = std::max<std::size_t>(1, values.size() / std::max<std::size_t>(samples, 1));
  std::array<std::size_t, max_exponent + 1> hits{};
  std::size_t taken = 0;
  for (std::size_t i = 0; i < values.size() && taken < samples; i += step, ++taken) {
    std::int64_t n;
    for (int e = 0; e <= max_exponent; ++e) {
      if (to_decimal(values[i], powers_of_ten[static_cast<std::size_t>(e)], n)) {
        // Every larger exponent would represent it too (unless it overflows); count it once at
        // its smallest and sum up below.
        ++hits[static_cast<std::size_t>(e)];
        break;
      }
    }
  }
  std::size_t best = 0;
  int best_e = 0;
  std::size_t cumulative = 0;
  for (int e = 0; e <= max_exponent; ++e) {
    cumulative += hits[static_cast<std::size_t>(e)];
    if (cumulative > best) {
      best = cumulative;
      best_e = e;
    }
  }
  share = taken == 0 ? 1.0 : static_cast<double>(best) / static_cast<double>(taken);
  return best_e;
}

/// About the bits Gorilla spends on values[1, n): a repeat costs 1, another value 4 + its
/// meaningful bits (Gorilla spends 2 + its window, or 13 + the bits for a new window). Branch-free
/// and slightly optimistic, so the decimal codec, which decodes faster, keeps close calls.
std::size_t gorilla_bits_estimate(const double* values, std::size_t n) noexcept {
  std::size_t bits = 64;
  for (std::size_t i = 1; i < n; ++i) {
    const std::uint64_t x =
        std::bit_cast<std::uint64_t>(values[i]) ^ std::bit_cast<std::uint64_t>(values[i - 1]);
    const auto meaningful = static_cast<std::size_t>(64 - std::countl_zero(x | 1) -
                                                     std::countr_zero(x | (std::uint64_t{1} << 63)));
    bits += x == 0 ? 1 : 4 + meaningful;
  }
  return bits;
}

}  // namespace

// u8 exponent e; then per frame of 1024: u16 exception count k, an integer frame of the scaled
// values (exceptions hold the previous integer, keeping deltas small), k u16 positions and k raw
// 8-byte values.

KEEL_TSDB_MULTIVERSION
bool decimal_encode_values(std::span<const double> values, bytes& out,
                           const decimal_encode_options& options) {
  const bool force = options.force;
  std::size_t* exception_count = options.exception_count;
  if (values.empty()) return true;
  double share = 0;
  const int e = choose_exponent(values, share);
  if (!force && share < 0.5) return false;
  const std::size_t start = out.size();
  const std::size_t exceptions_before = exception_count != nullptr ? *exception_count : 0;
  const double power = powers_of_ten[static_cast<std::size_t>(e)];
  byte_writer w(out);
  w.u8(static_cast<std::uint8_t>(e));
  std::array<std::int64_t, frame_size> ints;
  std::array<std::uint64_t, frame_size> scratch;
  std::array<std::uint16_t, frame_size> positions;
  std::array<std::uint8_t, frame_size> exact;
  std::int64_t last = 0;
  for (std::size_t at = 0; at < values.size(); at += frame_size) {
    const std::size_t n = std::min(frame_size, values.size() - at);
    // Scale the whole frame without branches (so it vectorizes), then patch the exceptions.
    const double* frame = values.data() + at;
    for (std::size_t i = 0; i < n; ++i) {
      std::int64_t v;
      exact[i] = to_decimal(frame[i], power, v) ? 1 : 0;
      ints[i] = v;
    }
    std::size_t exceptions = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (exact[i] != 0) [[likely]] {
        last = ints[i];
      } else {
        positions[exceptions++] = static_cast<std::uint16_t>(i);
        ints[i] = last;
      }
    }
    if (exception_count != nullptr) *exception_count += exceptions;
    w.le(static_cast<std::uint16_t>(exceptions));
    encode_int_frame(ints.data(), n, out, scratch.data(), true);
    for (std::size_t k = 0; k < exceptions; ++k) w.le(positions[k]);
    for (std::size_t k = 0; k < exceptions; ++k)
      w.le(std::bit_cast<std::uint64_t>(values[at + positions[k]]));
    // The choice is made on the first frame, so a block is encoded once: when Gorilla would
    // clearly (1/8) be smaller there by its optimistic estimate (many digits and few repeats, or
    // many exceptions), give up.
    if (!force && at == 0 && values.size() > frame_size &&
        gorilla_bits_estimate(frame, n) * 8 < (out.size() - start) * 8 * 7) {
      out.resize(start);
      if (exception_count != nullptr) *exception_count = exceptions_before;
      return false;
    }
  }
  return true;
}

KEEL_TSDB_MULTIVERSION
result<void> decimal_decode_values(bytes_view in, std::size_t count, double* out, bool repeat_frames) {
  if (count == 0) return in.empty() ? result<void>() : result<void>(errc::block_corrupt);
  byte_reader reader(in);
  const auto e = reader.u8();
  if (!e) return errc::block_truncated;
  if (*e > max_exponent) return errc::block_corrupt;
  const double power = powers_of_ten[*e];
  std::array<std::int64_t, frame_size> ints;
  std::array<std::uint64_t, frame_size> scratch;
  for (std::size_t at = 0; at < count; at += frame_size) {
    const std::size_t n = std::min(frame_size, count - at);
    const auto exception_field = reader.le<std::uint16_t>();
    if (!exception_field) return errc::block_truncated;
    const std::size_t exceptions = *exception_field;
    if (exceptions > n) return errc::block_corrupt;
    if (auto r = decode_int_frame(reader, n, ints.data(), scratch.data(), repeat_frames); !r) return r;
    double* frame = out + at;
    // int64 -> double by the magic-number trick (exact for |n| < 2^51, which the encoder
    // guarantees; corrupt input only yields wrong values, which the checksum already rules out):
    // an integer add and a subtraction, so the loop vectorizes where cvtsi2sd would not.
    for (std::size_t i = 0; i < n; ++i) {
      const double exact = std::bit_cast<double>(static_cast<std::uint64_t>(ints[i]) +
                                                 std::bit_cast<std::uint64_t>(round_magic)) -
                           round_magic;
      frame[i] = exact / power;
    }
    const auto patched = reader.take(exceptions * 10);
    if (!patched) return errc::block_truncated;
    const std::uint8_t* positions = patched->data();
    const std::uint8_t* raw = positions + exceptions * 2;
    for (std::size_t k = 0; k < exceptions; ++k) {
      const std::size_t position = load_le<std::uint16_t>(positions + 2 * k);
      if (position >= n) return errc::block_corrupt;
      frame[position] = std::bit_cast<double>(load_le<std::uint64_t>(raw + 8 * k));
    }
  }
  if (!reader.empty()) return errc::block_corrupt;  // bytes beyond the last frame
  return {};
}

}  // namespace keel::tsdb::codecs
