// Gorilla (Pelkonen et al., VLDB 2015): delta-of-delta timestamps in the paper's buckets, and
// values XORed with the previous one in leading/trailing-zero windows.
#include <keel/core/bits.hpp>
#include <keel/tsdb/codec.hpp>

#include <algorithm>
#include <bit>
#include <limits>

namespace keel::tsdb::codecs {
namespace {

/// What an impossible code means: reads past the end return zero bits, which can spell one, so a
/// stream that ran out first was cut short, not damaged.
errc damaged(const bit_reader& r) noexcept {
  return r.overrun() ? errc::block_truncated : errc::block_corrupt;
}

}  // namespace

void gorilla_encode_times(std::span<const std::int64_t> times, bytes& out) {
  if (times.empty()) return;
  // The paper's last bucket holds 32 bits, enough for delta-of-deltas of second or millisecond
  // timestamps; nanosecond timestamps with irregular gaps need 64, flagged once per block.
  bool wide = false;
  std::uint64_t previous_delta = 0;
  for (std::size_t i = 1; i < times.size(); ++i) {
    const std::uint64_t delta =
        static_cast<std::uint64_t>(times[i]) - static_cast<std::uint64_t>(times[i - 1]);
    const auto dod = static_cast<std::int64_t>(delta - previous_delta);
    if (dod < std::numeric_limits<std::int32_t>::min() || dod > std::numeric_limits<std::int32_t>::max()) {
      wide = true;
      break;
    }
    previous_delta = delta;
  }
  bit_writer w(times.size() * 2 + 72);
  w.write(wide ? 1 : 0, 1);
  w.write(static_cast<std::uint64_t>(times[0]), 64);
  previous_delta = 0;
  for (std::size_t i = 1; i < times.size(); ++i) {
    const std::uint64_t delta =
        static_cast<std::uint64_t>(times[i]) - static_cast<std::uint64_t>(times[i - 1]);
    const auto dod = static_cast<std::int64_t>(delta - previous_delta);
    previous_delta = delta;
    if (dod == 0) {
      w.write(0, 1);
    } else if (dod >= -63 && dod <= 64) {
      w.write((std::uint64_t{0b10} << 7) | static_cast<std::uint64_t>(dod + 63), 9);
    } else if (dod >= -255 && dod <= 256) {
      w.write((std::uint64_t{0b110} << 9) | static_cast<std::uint64_t>(dod + 255), 12);
    } else if (dod >= -2047 && dod <= 2048) {
      w.write((std::uint64_t{0b1110} << 12) | static_cast<std::uint64_t>(dod + 2047), 16);
    } else {
      w.write(0b1111, 4);
      w.write(static_cast<std::uint64_t>(dod), wide ? 64 : 32);
    }
  }
  const bytes done = w.finish();
  out.insert(out.end(), done.begin(), done.end());
}

result<void> gorilla_decode_times(bytes_view in, std::size_t count, std::int64_t* out) {
  if (count == 0) return in.empty() ? result<void>() : result<void>(errc::block_corrupt);
  bit_reader r(in);
  const bool wide = r.read(1) != 0;
  std::uint64_t t = r.read(64);
  out[0] = static_cast<std::int64_t>(t);
  std::uint64_t delta = 0;
  for (std::size_t i = 1; i < count; ++i) {
    const auto prefix = r.peek(4);
    std::uint64_t dod;
    if ((prefix & 0b1000) == 0) {
      r.skip(1);
      dod = 0;
    } else if ((prefix & 0b0100) == 0) {
      r.skip(2);
      dod = r.read(7) - 63;
    } else if ((prefix & 0b0010) == 0) {
      r.skip(3);
      dod = r.read(9) - 255;
    } else if ((prefix & 0b0001) == 0) {
      r.skip(4);
      dod = r.read(12) - 2047;
    } else {
      r.skip(4);
      if (wide) {
        dod = r.read(64);
      } else {
        dod = static_cast<std::uint64_t>(static_cast<std::int64_t>(static_cast<std::int32_t>(r.read(32))));
      }
    }
    if (r.overrun()) [[unlikely]]
      return errc::block_truncated;
    delta += dod;
    t += delta;
    out[i] = static_cast<std::int64_t>(t);
  }
  if (r.overrun()) return errc::block_truncated;
  if (r.remaining() >= 8) return errc::block_corrupt;  // bytes beyond the last point
  return {};
}

void gorilla_encode_values(std::span<const double> values, bytes& out) {
  if (values.empty()) return;
  bit_writer w(values.size() * 16 + 64);
  auto previous = std::bit_cast<std::uint64_t>(values[0]);
  w.write(previous, 64);
  bool have_window = false;
  unsigned window_leading = 0;
  unsigned window_trailing = 0;
  for (std::size_t i = 1; i < values.size(); ++i) {
    const auto bits = std::bit_cast<std::uint64_t>(values[i]);
    const std::uint64_t x = bits ^ previous;
    previous = bits;
    if (x == 0) {
      w.write(0, 1);
      continue;
    }
    // The paper stores leading zeros in 5 bits, so counts above 31 are stored as 31.
    const unsigned leading = std::min(31U, static_cast<unsigned>(std::countl_zero(x)));
    const auto trailing = static_cast<unsigned>(std::countr_zero(x));
    if (have_window && leading >= window_leading && trailing >= window_trailing) {
      const unsigned meaningful = 64 - window_leading - window_trailing;
      w.write(0b10, 2);
      w.write(x >> window_trailing, meaningful);
    } else {
      const unsigned meaningful = 64 - leading - trailing;
      // Control '11', 5 bits of leading zeros, 6 bits of length (64 stored as 0).
      w.write((std::uint64_t{0b11} << 11) | (std::uint64_t{leading} << 6) | (meaningful & 63U), 13);
      w.write(x >> trailing, meaningful);
      have_window = true;
      window_leading = leading;
      window_trailing = trailing;
    }
  }
  const bytes done = w.finish();
  out.insert(out.end(), done.begin(), done.end());
}

result<void> gorilla_decode_values(bytes_view in, std::size_t count, double* out) {
  if (count == 0) return in.empty() ? result<void>() : result<void>(errc::block_corrupt);
  bit_reader r(in);
  std::uint64_t previous = r.read(64);
  out[0] = std::bit_cast<double>(previous);
  bool have_window = false;
  unsigned leading = 0;
  unsigned meaningful = 0;
  unsigned trailing = 0;
  for (std::size_t i = 1; i < count; ++i) {
    const auto control = r.peek(2);
    if ((control & 0b10) == 0) {
      r.skip(1);
    } else {
      if ((control & 0b01) != 0) {
        r.skip(2);
        const auto fields = static_cast<unsigned>(r.read(11));
        leading = fields >> 6;
        meaningful = fields & 63U;
        if (meaningful == 0) meaningful = 64;
        if (leading + meaningful > 64) [[unlikely]]
          return damaged(r);
        trailing = 64 - leading - meaningful;
        have_window = true;
      } else {
        r.skip(2);
        if (!have_window) [[unlikely]]
          return damaged(r);
      }
      previous ^= r.read(meaningful) << trailing;
    }
    if (r.overrun()) [[unlikely]]
      return errc::block_truncated;
    out[i] = std::bit_cast<double>(previous);
  }
  if (r.overrun()) return errc::block_truncated;
  if (r.remaining() >= 8) return errc::block_corrupt;
  return {};
}

}  // namespace keel::tsdb::codecs
