// Integer frames, shared by packed timestamps and the decimal codec: bit-packing (LSB first, for
// fast unaligned word loads), patched frame-of-reference or delta, and runs of repeats.
#include <keel/core/endian.hpp>

#include "codec_frames.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>

namespace keel::tsdb::detail {
namespace {

[[nodiscard]] constexpr std::uint64_t mask_of(unsigned width) noexcept {
  return width >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << width) - 1;
}
[[nodiscard]] inline unsigned width_of(std::uint64_t range) noexcept {
  // Branch-free: clz of (range | 1) is defined, and range == 0 takes one off.
  return 64U - static_cast<unsigned>(std::countl_zero(range | 1)) - static_cast<unsigned>(range == 0);
}

void pack(const std::uint64_t* values, std::size_t n, unsigned width, bytes& out) {
  if (width == 0 || n == 0) return;
  const std::size_t total = (n * width + 7) / 8;
  const std::size_t start = out.size();
  out.resize(start + total + 8);  // room for a whole-word store at the end
  std::uint8_t* p = out.data() + start;
  std::uint64_t acc = 0;
  unsigned used = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t v = values[i];
    acc |= v << used;
    used += width;
    if (used >= 64) {
      store_le<std::uint64_t>(p, acc);
      p += 8;
      used -= 64;
      acc = used == 0 ? 0 : v >> (width - used);
    }
  }
  for (unsigned b = 0; b < (used + 7) / 8; ++b) *p++ = static_cast<std::uint8_t>(acc >> (8 * b));
  out.resize(start + total);
}

/// Unpacks n values of `width` bits from p[0, length), length >= ceil(n*width/8).
template <bool wide>
void unpack_range(const std::uint8_t* p, std::size_t begin, std::size_t end, unsigned width,
                  std::uint64_t* out, std::size_t base_bit) noexcept {
  const std::uint64_t mask = mask_of(width);
  for (std::size_t i = begin; i < end; ++i) {
    const std::size_t bit = i * width - base_bit;
    const std::uint8_t* q = p + (bit >> 3);
    const auto shift = static_cast<unsigned>(bit & 7);
    std::uint64_t v = load_le<std::uint64_t>(q) >> shift;
    if constexpr (wide) {
      if (shift != 0) v |= std::uint64_t{q[8]} << (64 - shift);
    }
    out[i] = v & mask;
  }
}

void unpack(const std::uint8_t* p, std::size_t length, std::size_t n, unsigned width,
            std::uint64_t* out) noexcept {
  if (width == 0) {
    std::fill(out, out + n, 0);
    return;
  }
  const bool wide = width > 56;
  const std::size_t need = wide ? 9 : 8;  // bytes loaded from an item's first byte
  // Items whose loads stay inside the input go the fast way; the last few through a padded copy.
  std::size_t fast = 0;
  if (length >= need) fast = std::min(n, ((length - need) * 8) / width + 1);
  while (fast > 0 && ((fast - 1) * width) / 8 + need > length) --fast;
  if (wide) {
    unpack_range<true>(p, 0, fast, width, out, 0);
  } else {
    unpack_range<false>(p, 0, fast, width, out, 0);
  }
  if (fast == n) return;
  const std::size_t first_byte = (fast * width) / 8;
  std::array<std::uint8_t, 80> tail{};  // width <= 64: the remaining items span < 9 + 64 bytes
  const std::size_t copy = std::min<std::size_t>(length - first_byte, tail.size() - 9);
  std::memcpy(tail.data(), p + first_byte, copy);
  if (wide) {
    unpack_range<true>(tail.data(), fast, n, width, out, first_byte * 8);
  } else {
    unpack_range<false>(tail.data(), fast, n, width, out, first_byte * 8);
  }
}

// ---- integer frames: patched frame-of-reference or delta, bit-packed ------------------------
//
// u8 mode, u8 width w, u16 patches k, i64 base, [i64 min_delta for mode 1],
// packed m items of w bits, k u16 positions, k u64 full items.
//   mode 0 (reference):     m = n, item = x - base                     (base = min)
//   mode 1 (delta):         m = n-1, item = x[i] - x[i-1] - min_delta    (base = x[0])
//   mode 2 (zigzag delta):  m = n-1, item = zigzag(x[i] - x[i-1])        (base = x[0])
// Items wider than w are patched: their low bits are packed, the whole item is stored after
// (PFOR), so a rare spike does not widen every item. All arithmetic wraps, so any int64 sequence
// round-trips.

constexpr unsigned patch_bits = 80;  // u16 position + u64 item

[[nodiscard]] inline std::uint64_t zigzag(std::uint64_t d) noexcept {
  return (d << 1) ^ static_cast<std::uint64_t>(static_cast<std::int64_t>(d) >> 63);
}
[[nodiscard]] inline std::uint64_t unzigzag(std::uint64_t z) noexcept {
  return (z >> 1) ^ (~(z & 1) + 1);
}

struct width_plan {
  unsigned width = 64;
  std::size_t patches = 0;
  std::size_t bits = std::numeric_limits<std::size_t>::max();
};

/// The packed width that minimizes packed bits plus patches, from a histogram of item widths.
width_plan plan_width(const std::array<std::uint32_t, 65>& histogram, std::size_t m) noexcept {
  width_plan best;
  std::size_t wider = 0;  // items wider than w
  for (int w = 64; w >= 0; --w) {
    const auto width = static_cast<unsigned>(w);
    const std::size_t bits = m * width + wider * patch_bits;
    if (bits <= best.bits) best = {width, wider, bits};
    wider += histogram[width];
  }
  return best;
}

/// A histogram of item widths, four-way split so increments of one bucket do not wait on each
/// other through memory.
std::array<std::uint32_t, 65> width_histogram(const std::uint64_t* items, std::size_t m) noexcept {
  std::array<std::array<std::uint32_t, 65>, 4> h{};
  std::size_t i = 0;
  for (; i + 4 <= m; i += 4) {
    ++h[0][width_of(items[i])];
    ++h[1][width_of(items[i + 1])];
    ++h[2][width_of(items[i + 2])];
    ++h[3][width_of(items[i + 3])];
  }
  for (; i < m; ++i) ++h[0][width_of(items[i])];
  for (std::size_t w = 0; w < 65; ++w) h[0][w] += h[1][w] + h[2][w] + h[3][w];
  return h[0];
}

/// Packs m items at the width that minimizes packed bits plus patches, then the patches; the
/// width (u8) and patch count (u16) go to the three bytes reserved at out[plan_at].
void pack_patched(std::uint64_t* items, std::size_t m, bytes& out, std::size_t plan_at) {
  const width_plan best = plan_width(width_histogram(items, m), m);
  out[plan_at] = static_cast<std::uint8_t>(best.width);
  store_le<std::uint16_t>(out.data() + plan_at + 1, static_cast<std::uint16_t>(best.patches));
  if (best.patches == 0) {
    pack(items, m, best.width, out);
    return;
  }
  const std::uint64_t mask = mask_of(best.width);
  std::array<std::uint16_t, frame_size> positions;
  std::array<std::uint64_t, frame_size> whole;
  std::size_t k = 0;
  for (std::size_t i = 0; i < m; ++i) {
    if ((items[i] & ~mask) != 0) {
      positions[k] = static_cast<std::uint16_t>(i);
      whole[k++] = items[i];
      items[i] &= mask;
    }
  }
  pack(items, m, best.width, out);
  byte_writer w(out);
  for (std::size_t j = 0; j < k; ++j) w.le(positions[j]);
  for (std::size_t j = 0; j < k; ++j) w.le(whole[j]);
}

/// Mode 3 (repeat bitmap): u8 mode, i64 base (the minimum), u16 count c of runs, n bits (LSB
/// first, ceil(n/8) bytes) with bit i set when item i differs from item i-1 (bit 0 always set),
/// then the c run values minus base as a patched packing (u8 width, u16 patches, packed items,
/// positions, whole items). Repeats cost one bit, as in Gorilla, and the rest pack at one width.
void encode_repeat_frame(const std::uint64_t* u, std::size_t n, std::uint64_t base, bytes& out,
                         std::uint64_t* items) {
  byte_writer w(out);
  w.u8(3);
  w.le(base);
  const std::size_t bitmap_at = out.size() + 2;
  out.resize(bitmap_at + (n + 7) / 8, 0);
  std::uint8_t* bitmap = out.data() + bitmap_at;
  std::size_t c = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const bool fresh = i == 0 || u[i] != u[i - 1];
    bitmap[i >> 3] = static_cast<std::uint8_t>(bitmap[i >> 3] | (static_cast<unsigned>(fresh) << (i & 7)));
    items[c] = u[i] - base;
    c += fresh ? 1 : 0;
  }
  store_le<std::uint16_t>(out.data() + bitmap_at - 2, static_cast<std::uint16_t>(c));
  const std::size_t plan_at = out.size();
  out.resize(plan_at + 3);
  pack_patched(items, c, out, plan_at);
}

}  // namespace

KEEL_TSDB_MULTIVERSION
void encode_int_frame(const std::int64_t* x, std::size_t n, bytes& out, std::uint64_t* items,
                      bool allow_repeats) {
  const auto* u = reinterpret_cast<const std::uint64_t*>(x);
  // Choose the transform by the total of item widths (a cheap, outlier-tolerant proxy for the
  // patched size), then plan the width and patches on that transform's histogram.
  // One pass for the minimum value and the minimum delta, one for the three costs.
  // Both loops are written without branches or overflow builtins so that they vectorize.
  constexpr std::uint64_t bias = std::uint64_t{1} << 63;  // biased: unsigned order equals signed order
  std::uint64_t lo = u[0] ^ bias;
  std::int64_t dlo = std::numeric_limits<std::int64_t>::max();
  std::int64_t dhi = std::numeric_limits<std::int64_t>::min();
  std::uint64_t overflow_bits = 0;  // sign bit set when some x[i] - x[i-1] overflowed
  for (std::size_t i = 1; i < n; ++i) {
    const std::uint64_t d = u[i] - u[i - 1];
    overflow_bits |= (u[i] ^ u[i - 1]) & (u[i] ^ d);
    lo = std::min(lo, u[i] ^ bias);
    dlo = std::min(dlo, static_cast<std::int64_t>(d));
    dhi = std::max(dhi, static_cast<std::int64_t>(d));
  }
  const bool overflow = (overflow_bits >> 63) != 0;
  const std::uint64_t base = lo ^ bias;
  const auto udlo = static_cast<std::uint64_t>(dlo);
  if (n >= 2 && dlo == dhi && !overflow) {
    // A regular grid (timestamps, mostly) is delta mode at width 0, a constant is reference
    // mode at width 0: nothing to estimate or pack.
    byte_writer w(out);
    w.u8(dlo == 0 ? 0 : 1);
    w.u8(0);
    w.le(std::uint16_t{0});
    w.le(u[0]);
    if (dlo != 0) w.le(udlo);
    return;
  }
  // Item widths estimated per group of 8 (the width of the group's OR, times 8): one bit scan per
  // group instead of three per item, and still tolerant of an outlier, which spoils only its group.
  std::size_t cost_ref = 64 + width_of(u[0] - base);
  std::size_t cost_zig = 64;
  std::size_t cost_delta = 128;
  std::size_t repeats = 0;
  for (std::size_t g = 1; g < n; g += 8) {
    const std::size_t group = std::min<std::size_t>(8, n - g);
    std::uint64_t or_ref = 0;
    std::uint64_t or_zig = 0;
    std::uint64_t or_delta = 0;
    if (group == 8) {
      for (std::size_t i = g; i < g + 8; ++i) {
        const std::uint64_t d = u[i] - u[i - 1];
        repeats += d == 0 ? 1 : 0;
        or_ref |= u[i] - base;
        or_zig |= zigzag(d);
        or_delta |= d - udlo;
      }
    } else {
      for (std::size_t i = g; i < g + group; ++i) {
        const std::uint64_t d = u[i] - u[i - 1];
        repeats += d == 0 ? 1 : 0;
        or_ref |= u[i] - base;
        or_zig |= zigzag(d);
        or_delta |= d - udlo;
      }
    }
    cost_ref += group * width_of(or_ref);
    cost_zig += group * width_of(or_zig);
    cost_delta += group * width_of(or_delta);
  }
  // A run's value costs about what a reference item costs; a repeat costs its bitmap bit.
  if (allow_repeats && n >= 2 && repeats * 8 > n) {
    const std::size_t cost_repeat = 96 + n + cost_ref * (n - repeats) / n;
    if (cost_repeat < cost_ref && cost_repeat < cost_zig && (overflow || cost_repeat < cost_delta)) {
      encode_repeat_frame(u, n, base, out, items);
      return;
    }
  }
  unsigned mode = 0;
  std::int64_t dmin = 0;
  if (n >= 2) {
    if (!overflow && cost_delta <= cost_zig && cost_delta < cost_ref) {
      mode = 1;
      dmin = dlo;
    } else if (cost_zig < cost_ref) {
      mode = 2;
    }
  }
  std::size_t m = n;
  if (mode == 0) {
    for (std::size_t i = 0; i < n; ++i) items[i] = u[i] - base;
  } else if (mode == 1) {
    m = n - 1;
    for (std::size_t i = 1; i < n; ++i) items[i - 1] = u[i] - u[i - 1] - static_cast<std::uint64_t>(dmin);
  } else {
    m = n - 1;
    for (std::size_t i = 1; i < n; ++i) items[i - 1] = zigzag(u[i] - u[i - 1]);
  }
  byte_writer w(out);
  w.u8(static_cast<std::uint8_t>(mode));
  // The layout keeps width and patches before the bases (format version 1).
  const std::size_t plan_at = out.size();
  out.resize(plan_at + 3);
  w.le(mode == 0 ? base : u[0]);
  if (mode == 1) w.le(static_cast<std::uint64_t>(dmin));
  pack_patched(items, m, out, plan_at);
}

namespace {

/// Reads a patched packing of m items (u8 width, u16 patches, packed items, positions, whole
/// items) into items[0, m).
result<void> unpack_patched(byte_reader& in, std::size_t m, std::uint64_t* items) {
  const auto width = in.u8();
  const auto patches = in.le<std::uint16_t>();
  if (!width || !patches) return errc::block_truncated;
  if (*width > 64 || *patches > m) return errc::block_corrupt;
  const auto w = static_cast<unsigned>(*width);
  const std::size_t length = (m * w + 7) / 8;
  const auto packed = in.take(length);
  if (!packed) return errc::block_truncated;
  unpack(packed->data(), length, m, w, items);
  const auto patched = in.take(std::size_t{*patches} * 10);
  if (!patched) return errc::block_truncated;
  const std::uint8_t* positions = patched->data();
  const std::uint8_t* whole = positions + std::size_t{*patches} * 2;
  for (std::size_t j = 0; j < *patches; ++j) {
    const std::size_t position = load_le<std::uint16_t>(positions + 2 * j);
    if (position >= m) return errc::block_corrupt;
    items[position] = load_le<std::uint64_t>(whole + 8 * j);
  }
  return {};
}

/// Mode 3 after its mode byte (see encode_repeat_frame).
KEEL_TSDB_MULTIVERSION
result<void> decode_repeat_frame(byte_reader& in, std::size_t n, std::int64_t* x, std::uint64_t* items) {
  const auto base = in.le<std::uint64_t>();
  const auto runs = in.le<std::uint16_t>();
  if (!base || !runs) return errc::block_truncated;
  const std::size_t bitmap_size = (n + 7) / 8;
  const auto bitmap_bytes = in.take(bitmap_size);
  if (!bitmap_bytes) return errc::block_truncated;
  const std::uint8_t* bitmap = bitmap_bytes->data();
  // The bitmap must start a run at item 0, set exactly `runs` bits and leave its padding clear:
  // then the run index below stays inside [0, runs).
  std::size_t set = 0;
  for (std::size_t i = 0; i < bitmap_size; ++i) set += static_cast<std::size_t>(std::popcount(bitmap[i]));
  if (*runs == 0 || *runs > n || (bitmap[0] & 1U) == 0 || set != *runs) return errc::block_corrupt;
  if ((n & 7) != 0 && (bitmap[bitmap_size - 1] >> (n & 7)) != 0) return errc::block_corrupt;
  if (auto r = unpack_patched(in, *runs, items); !r) return r;
  auto* out = reinterpret_cast<std::uint64_t*>(x);
  // Branch-free expansion: the run index advances by each item's bit.
  std::size_t run = 0;
  for (std::size_t i = 0; i < n; ++i) {
    run += (static_cast<unsigned>(bitmap[i >> 3]) >> (i & 7)) & 1U;
    out[i] = items[run - 1] + *base;
  }
  return {};
}

}  // namespace

KEEL_TSDB_MULTIVERSION
result<void> decode_int_frame(byte_reader& in, std::size_t n, std::int64_t* x, std::uint64_t* items,
                              bool allow_repeats) {
  const auto mode = in.u8();
  if (!mode) return errc::block_truncated;
  if (*mode == 3 && allow_repeats) return decode_repeat_frame(in, n, x, items);
  const auto width = in.u8();
  const auto patches = in.le<std::uint16_t>();
  const auto base = in.le<std::uint64_t>();
  if (!width || !patches || !base) return errc::block_truncated;
  if (*mode > 2 || *width > 64) return errc::block_corrupt;
  if (*mode != 0 && n < 2) return errc::block_corrupt;
  std::uint64_t dmin = 0;
  if (*mode == 1) {
    const auto min_delta = in.le<std::uint64_t>();
    if (!min_delta) return errc::block_truncated;
    dmin = *min_delta;
  }
  const std::size_t m = *mode == 0 ? n : n - 1;
  // The same reading as unpack_patched, written out here on purpose: calling a shared helper
  // (even always_inline) measured about 25% slower decoding on every data set.
  if (*patches > m) return errc::block_corrupt;
  const auto w = static_cast<unsigned>(*width);
  const std::size_t length = (m * w + 7) / 8;
  const auto packed = in.take(length);
  if (!packed) return errc::block_truncated;
  unpack(packed->data(), length, m, w, items);
  const std::size_t patch_count = *patches;
  const auto patched = in.take(patch_count * 10);
  if (!patched) return errc::block_truncated;
  const std::uint8_t* positions = patched->data();
  const std::uint8_t* whole = positions + patch_count * 2;
  for (std::size_t j = 0; j < patch_count; ++j) {
    const std::size_t position = load_le<std::uint16_t>(positions + 2 * j);
    if (position >= m) return errc::block_corrupt;
    items[position] = load_le<std::uint64_t>(whole + 8 * j);
  }
  auto* out = reinterpret_cast<std::uint64_t*>(x);
  const std::uint64_t first = *base;
  if (*mode == 0) {
    for (std::size_t i = 0; i < n; ++i) out[i] = items[i] + first;
    return {};
  }
  std::uint64_t value = first;
  out[0] = value;
  if (*mode == 1) {
    if (w == 0 && patch_count == 0) {
      for (std::size_t i = 1; i < n; ++i) out[i] = first + dmin * i;
      return {};
    }
    for (std::size_t i = 1; i < n; ++i) {
      value += items[i - 1] + dmin;
      out[i] = value;
    }
    return {};
  }
  for (std::size_t i = 1; i < n; ++i) {
    value += unzigzag(items[i - 1]);
    out[i] = value;
  }
  return {};
}

}  // namespace keel::tsdb::detail
