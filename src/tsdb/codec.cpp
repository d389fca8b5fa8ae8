#include <keel/core/bits.hpp>
#include <keel/core/xxhash.hpp>
#include <keel/tsdb/codec.hpp>

#include <zstd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

// The hot loops are compiled twice, for baseline x86-64 and for x86-64-v3 (AVX2, LZCNT, BMI2),
// and the loader picks one for the CPU: bit scans and shifts are much cheaper with the latter.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define KEEL_TSDB_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KEEL_TSDB_MULTIVERSION
#endif

namespace keel::tsdb {
namespace {

// ---- little-endian helpers -------------------------------------------------------------------

inline std::uint64_t load_le64(const std::uint8_t* p) noexcept {
  std::uint64_t word;
  std::memcpy(&word, p, sizeof word);
  if constexpr (std::endian::native == std::endian::big) word = __builtin_bswap64(word);
  return word;
}
inline void put_le(bytes& out, std::uint64_t value, unsigned size) {
  for (unsigned i = 0; i < size; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}
inline std::uint64_t get_le(const std::uint8_t* p, unsigned size) noexcept {
  std::uint64_t value = 0;
  for (unsigned i = 0; i < size; ++i) value |= std::uint64_t{p[i]} << (8 * i);
  return value;
}

/// A bounds-checked cursor over a section: every read says whether the bytes were there.
struct byte_cursor {
  const std::uint8_t* data;
  std::size_t size;
  std::size_t at = 0;
  [[nodiscard]] bool has(std::size_t n) const noexcept { return n <= size - at; }
  bool read(std::uint64_t& value, unsigned n) noexcept {
    if (!has(n)) return false;
    value = get_le(data + at, n);
    at += n;
    return true;
  }
};

constexpr std::size_t frame_size = 1024;

// ---- bit-packing (LSB first, for fast unaligned word loads) ----------------------------------

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
      std::uint64_t le = acc;
      if constexpr (std::endian::native == std::endian::big) le = __builtin_bswap64(le);
      std::memcpy(p, &le, 8);
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
    const unsigned shift = static_cast<unsigned>(bit & 7);
    std::uint64_t v = load_le64(q) >> shift;
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
  if (wide)
    unpack_range<true>(p, 0, fast, width, out, 0);
  else
    unpack_range<false>(p, 0, fast, width, out, 0);
  if (fast == n) return;
  const std::size_t first_byte = (fast * width) / 8;
  std::array<std::uint8_t, 80> tail{};  // width <= 64: the remaining items span < 9 + 64 bytes
  const std::size_t copy = std::min<std::size_t>(length - first_byte, tail.size() - 9);
  std::memcpy(tail.data(), p + first_byte, copy);
  if (wide)
    unpack_range<true>(tail.data(), fast, n, width, out, first_byte * 8);
  else
    unpack_range<false>(tail.data(), fast, n, width, out, first_byte * 8);
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
  out[plan_at + 1] = static_cast<std::uint8_t>(best.patches);
  out[plan_at + 2] = static_cast<std::uint8_t>(best.patches >> 8);
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
  for (std::size_t j = 0; j < k; ++j) put_le(out, positions[j], 2);
  for (std::size_t j = 0; j < k; ++j) put_le(out, whole[j], 8);
}

/// Mode 3 (repeat bitmap): u8 mode, i64 base (the minimum), u16 count c of runs, n bits (LSB
/// first, ceil(n/8) bytes) with bit i set when item i differs from item i-1 (bit 0 always set),
/// then the c run values minus base as a patched packing (u8 width, u16 patches, packed items,
/// positions, whole items). Repeats cost one bit, as in Gorilla, and the rest pack at one width.
void encode_repeat_frame(const std::uint64_t* u, std::size_t n, std::uint64_t base, bytes& out,
                         std::uint64_t* items) {
  out.push_back(3);
  put_le(out, base, 8);
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
  out[bitmap_at - 2] = static_cast<std::uint8_t>(c);
  out[bitmap_at - 1] = static_cast<std::uint8_t>(c >> 8);
  const std::size_t plan_at = out.size();
  out.resize(plan_at + 3);
  pack_patched(items, c, out, plan_at);
}

KEEL_TSDB_MULTIVERSION
void encode_int_frame(const std::int64_t* x, std::size_t n, bytes& out, std::uint64_t* items,
                      bool allow_repeats = false) {
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
    out.push_back(dlo == 0 ? 0 : 1);
    out.push_back(0);
    put_le(out, 0, 2);
    put_le(out, u[0], 8);
    if (dlo != 0) put_le(out, udlo, 8);
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
  out.push_back(static_cast<std::uint8_t>(mode));
  // The layout keeps width and patches before the bases (format version 1).
  const std::size_t plan_at = out.size();
  out.resize(plan_at + 3);
  put_le(out, mode == 0 ? base : u[0], 8);
  if (mode == 1) put_le(out, static_cast<std::uint64_t>(dmin), 8);
  pack_patched(items, m, out, plan_at);
}

/// Reads a patched packing of m items (u8 width, u16 patches, packed items, positions, whole
/// items) into items[0, m).
result<void> unpack_patched(byte_cursor& in, std::size_t m, std::uint64_t* items) {
  std::uint64_t width = 0;
  std::uint64_t patches = 0;
  if (!in.read(width, 1) || !in.read(patches, 2)) return errc::block_truncated;
  if (width > 64 || patches > m) return errc::block_corrupt;
  const auto w = static_cast<unsigned>(width);
  const std::size_t length = (m * w + 7) / 8;
  if (!in.has(length)) return errc::block_truncated;
  unpack(in.data + in.at, length, m, w, items);
  in.at += length;
  if (!in.has(patches * 10)) return errc::block_truncated;
  const std::uint8_t* positions = in.data + in.at;
  const std::uint8_t* whole = positions + patches * 2;
  for (std::size_t j = 0; j < patches; ++j) {
    const auto position = static_cast<std::size_t>(get_le(positions + 2 * j, 2));
    if (position >= m) return errc::block_corrupt;
    items[position] = load_le64(whole + 8 * j);
  }
  in.at += patches * 10;
  return {};
}

/// Mode 3 after its mode byte (see encode_repeat_frame).
KEEL_TSDB_MULTIVERSION
result<void> decode_repeat_frame(byte_cursor& in, std::size_t n, std::int64_t* x, std::uint64_t* items) {
  std::uint64_t base = 0;
  std::uint64_t runs = 0;
  if (!in.read(base, 8) || !in.read(runs, 2)) return errc::block_truncated;
  const std::size_t bitmap_size = (n + 7) / 8;
  if (!in.has(bitmap_size)) return errc::block_truncated;
  const std::uint8_t* bitmap = in.data + in.at;
  in.at += bitmap_size;
  // The bitmap must start a run at item 0, set exactly `runs` bits and leave its padding clear:
  // then the run index below stays inside [0, runs).
  std::size_t set = 0;
  for (std::size_t i = 0; i < bitmap_size; ++i) set += static_cast<std::size_t>(std::popcount(bitmap[i]));
  if (runs == 0 || runs > n || (bitmap[0] & 1U) == 0 || set != runs) return errc::block_corrupt;
  if ((n & 7) != 0 && (bitmap[bitmap_size - 1] >> (n & 7)) != 0) return errc::block_corrupt;
  if (auto r = unpack_patched(in, runs, items); !r) return r;
  auto* out = reinterpret_cast<std::uint64_t*>(x);
  // Branch-free expansion: the run index advances by each item's bit.
  std::size_t run = 0;
  for (std::size_t i = 0; i < n; ++i) {
    run += (static_cast<unsigned>(bitmap[i >> 3]) >> (i & 7)) & 1U;
    out[i] = items[run - 1] + base;
  }
  return {};
}

KEEL_TSDB_MULTIVERSION
result<void> decode_int_frame(byte_cursor& in, std::size_t n, std::int64_t* x, std::uint64_t* items,
                              bool allow_repeats = false) {
  std::uint64_t mode = 0;
  if (!in.read(mode, 1)) return errc::block_truncated;
  if (mode == 3 && allow_repeats) return decode_repeat_frame(in, n, x, items);
  std::uint64_t width = 0;
  std::uint64_t patches = 0;
  std::uint64_t base = 0;
  if (!in.read(width, 1) || !in.read(patches, 2) || !in.read(base, 8)) return errc::block_truncated;
  if (mode > 2 || width > 64) return errc::block_corrupt;
  if (mode != 0 && n < 2) return errc::block_corrupt;
  std::uint64_t dmin = 0;
  if (mode == 1 && !in.read(dmin, 8)) return errc::block_truncated;
  const std::size_t m = mode == 0 ? n : n - 1;
  // The same reading as unpack_patched, written out here on purpose: calling a shared helper
  // (even always_inline) measured about 25% slower decoding on every data set.
  if (patches > m) return errc::block_corrupt;
  const auto w = static_cast<unsigned>(width);
  const std::size_t length = (m * w + 7) / 8;
  if (!in.has(length)) return errc::block_truncated;
  unpack(in.data + in.at, length, m, w, items);
  in.at += length;
  if (!in.has(patches * 10)) return errc::block_truncated;
  const std::uint8_t* positions = in.data + in.at;
  const std::uint8_t* whole = positions + patches * 2;
  for (std::size_t j = 0; j < patches; ++j) {
    const auto position = static_cast<std::size_t>(get_le(positions + 2 * j, 2));
    if (position >= m) return errc::block_corrupt;
    items[position] = load_le64(whole + 8 * j);
  }
  in.at += patches * 10;
  auto* out = reinterpret_cast<std::uint64_t*>(x);
  if (mode == 0) {
    for (std::size_t i = 0; i < n; ++i) out[i] = items[i] + base;
    return {};
  }
  std::uint64_t value = base;
  out[0] = value;
  if (mode == 1) {
    if (w == 0 && patches == 0) {
      for (std::size_t i = 1; i < n; ++i) out[i] = base + dmin * i;
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

// ---- decimal scaling -------------------------------------------------------------------------

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

// ---- header ----------------------------------------------------------------------------------

constexpr std::uint8_t magic0 = 'k';
constexpr std::uint8_t magic1 = 'T';
constexpr std::uint8_t format_version = 1;
constexpr std::size_t header_size = 24;
constexpr std::uint32_t max_points = (1U << 24) - 1;
constexpr std::uint8_t flag_zstd = 1;

std::uint32_t block_checksum(const std::uint8_t* header, bytes_view payload) noexcept {
  const std::uint64_t seed = xxh3_64(bytes_view(header, 20));
  return static_cast<std::uint32_t>(xxh3_64(payload, seed));
}

/// The largest section a block of `count` points can honestly have: bounds allocations when
/// decompressing hostile input.
std::size_t max_section_size(std::size_t count) noexcept {
  return count * 20 + 4096;
}

}  // namespace

// ---- Gorilla ---------------------------------------------------------------------------------

namespace codecs {

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
  std::uint64_t previous = std::bit_cast<std::uint64_t>(values[0]);
  w.write(previous, 64);
  bool have_window = false;
  unsigned window_leading = 0;
  unsigned window_trailing = 0;
  for (std::size_t i = 1; i < values.size(); ++i) {
    const std::uint64_t bits = std::bit_cast<std::uint64_t>(values[i]);
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
          return errc::block_corrupt;
        trailing = 64 - leading - meaningful;
        have_window = true;
      } else {
        r.skip(2);
        if (!have_window) [[unlikely]]
          return errc::block_corrupt;
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

// ---- Chimp128 values -------------------------------------------------------------------------
//
// Chimp128 (Liakos et al., VLDB 2022): XOR with one of the previous 128 values, the one found
// through a table of the latest position per low-14-bit pattern when its XOR has more than 13
// trailing zeros, else the previous value. Codes: `00` + 7-bit slot (equal to that value); `01` +
// slot + 3-bit leading-zero class + 6-bit length + the meaningful bits (many trailing zeros);
// `10` + the low 64 − lead bits (same leading-zero class as before); `11` + 3-bit class + the low
// 64 − lead bits. A slot is the position modulo 128, so encoder and decoder keep the same ring.

namespace {

constexpr unsigned chimp_ring = 128;
constexpr unsigned chimp_threshold = 13;
constexpr std::uint64_t chimp_key_mask = (std::uint64_t{1} << 14) - 1;
constexpr std::array<unsigned, 8> chimp_leads = {0, 8, 12, 16, 18, 20, 22, 24};
constexpr unsigned chimp_no_lead = 65;

/// The leading-zero class of x: the largest class at most its leading zeros.
inline unsigned chimp_lead_class(unsigned leading) noexcept {
  unsigned c = 0;
  for (unsigned k = 1; k < chimp_leads.size(); ++k)
    if (chimp_leads[k] <= leading) c = k;
  return c;
}

/// Appends values[0, n) as Chimp128 to `w`.
void chimp_encode(const double* values, std::size_t n, bit_writer& w) {
  if (n == 0) return;
  std::array<std::uint64_t, chimp_ring> ring{};
  std::vector<std::int64_t> latest(chimp_key_mask + 1, -1);  // position of the latest value per key
  std::uint64_t bits = std::bit_cast<std::uint64_t>(values[0]);
  w.write(bits, 64);
  ring[0] = bits;
  latest[bits & chimp_key_mask] = 0;
  unsigned stored_lead = chimp_no_lead;
  for (std::size_t i = 1; i < n; ++i) {
    bits = std::bit_cast<std::uint64_t>(values[i]);
    const std::uint64_t key = bits & chimp_key_mask;
    std::size_t ref = i - 1;
    std::uint64_t x = bits ^ ring[ref % chimp_ring];
    if (const std::int64_t at = latest[key]; at >= 0 && i - static_cast<std::size_t>(at) <= chimp_ring) {
      const std::uint64_t candidate = bits ^ ring[static_cast<std::size_t>(at) % chimp_ring];
      if (static_cast<unsigned>(std::countr_zero(candidate)) > chimp_threshold) {
        ref = static_cast<std::size_t>(at);
        x = candidate;
      }
    }
    const auto slot = static_cast<std::uint64_t>(ref % chimp_ring);
    const auto trailing = static_cast<unsigned>(std::countr_zero(x));
    if (x == 0) {
      w.write(slot, 9);  // `00` + slot
      stored_lead = chimp_no_lead;
    } else if (trailing > chimp_threshold) {
      const unsigned lead_class = chimp_lead_class(static_cast<unsigned>(std::countl_zero(x)));
      const unsigned lead = chimp_leads[lead_class];
      const unsigned meaningful = 64 - lead - trailing;
      w.write((std::uint64_t{1} << 16) | (slot << 9) | (std::uint64_t{lead_class} << 6) | meaningful, 18);
      w.write(x >> trailing, meaningful);
      stored_lead = chimp_no_lead;
    } else {
      // ref is the previous value here: a candidate is only taken with many trailing zeros.
      const unsigned lead_class = chimp_lead_class(static_cast<unsigned>(std::countl_zero(x)));
      const unsigned lead = chimp_leads[lead_class];
      if (lead == stored_lead) {
        w.write(0b10, 2);
      } else {
        w.write((std::uint64_t{0b11} << 3) | lead_class, 5);
        stored_lead = lead;
      }
      w.write(x, 64 - lead);
    }
    ring[i % chimp_ring] = bits;
    latest[key] = static_cast<std::int64_t>(i);
  }
}

}  // namespace

void chimp_encode_values(std::span<const double> values, bytes& out) {
  if (values.empty()) return;
  bit_writer w(values.size() * 16 + 64);
  chimp_encode(values.data(), values.size(), w);
  const bytes done = w.finish();
  out.insert(out.end(), done.begin(), done.end());
}

std::size_t chimp_bits(const double* values, std::size_t n) {
  bit_writer w(n * 16 + 64);
  chimp_encode(values, n, w);
  return w.bit_count();
}

result<void> chimp_decode_values(bytes_view in, std::size_t count, double* out) {
  if (count == 0) return in.empty() ? result<void>() : result<void>(errc::block_corrupt);
  bit_reader r(in);
  std::array<std::uint64_t, chimp_ring> ring{};
  std::uint64_t bits = r.read(64);
  ring[0] = bits;
  out[0] = std::bit_cast<double>(bits);
  unsigned stored_lead = chimp_no_lead;
  for (std::size_t i = 1; i < count; ++i) {
    const auto flag = r.read(2);
    if (flag <= 1) {
      const auto slot = static_cast<std::size_t>(r.read(7));
      if (i <= chimp_ring && slot >= i) [[unlikely]]
        return errc::block_corrupt;  // a slot not written yet
      bits = ring[slot];
      if (flag == 1) {
        const auto fields = static_cast<unsigned>(r.read(9));
        const unsigned lead = chimp_leads[fields >> 6];
        const unsigned meaningful = fields & 63U;
        if (meaningful == 0 || lead + meaningful > 64 - chimp_threshold - 1) [[unlikely]]
          return errc::block_corrupt;
        bits ^= r.read(meaningful) << (64 - lead - meaningful);
      }
      stored_lead = chimp_no_lead;
    } else {
      if (flag == 3) {
        stored_lead = chimp_leads[r.read(3)];
      } else if (stored_lead == chimp_no_lead) [[unlikely]] {
        return errc::block_corrupt;
      }
      bits = ring[(i - 1) % chimp_ring] ^ r.read(64 - stored_lead);
    }
    if (r.overrun()) [[unlikely]]
      return errc::block_truncated;
    ring[i % chimp_ring] = bits;
    out[i] = std::bit_cast<double>(bits);
  }
  if (r.overrun()) return errc::block_truncated;
  if (r.remaining() >= 8) return errc::block_corrupt;
  return {};
}

// ---- packed timestamps -----------------------------------------------------------------------

void packed_encode_times(std::span<const std::int64_t> times, bytes& out) {
  std::array<std::uint64_t, frame_size> scratch;
  for (std::size_t at = 0; at < times.size(); at += frame_size) {
    const std::size_t n = std::min(frame_size, times.size() - at);
    encode_int_frame(times.data() + at, n, out, scratch.data());
  }
}

result<void> packed_decode_times(bytes_view in, std::size_t count, std::int64_t* out) {
  byte_cursor cursor{in.data(), in.size()};
  std::array<std::uint64_t, frame_size> scratch;
  for (std::size_t at = 0; at < count; at += frame_size) {
    const std::size_t n = std::min(frame_size, count - at);
    if (auto r = decode_int_frame(cursor, n, out + at, scratch.data()); !r) return r;
  }
  if (cursor.at != cursor.size) return errc::block_corrupt;
  return {};
}

// ---- decimal values --------------------------------------------------------------------------
//
// u8 exponent e; then per frame of 1024: u16 exception count k, an integer frame of the scaled
// values (exceptions hold the previous integer, keeping deltas small), k u16 positions and k raw
// 8-byte values.

KEEL_TSDB_MULTIVERSION
bool decimal_encode_values(std::span<const double> values, bytes& out, bool force,
                           std::size_t* exception_count) {
  if (values.empty()) return true;
  double share = 0;
  const int e = choose_exponent(values, share);
  if (!force && share < 0.5) return false;
  const std::size_t start = out.size();
  const std::size_t exceptions_before = exception_count != nullptr ? *exception_count : 0;
  const double power = powers_of_ten[static_cast<std::size_t>(e)];
  out.push_back(static_cast<std::uint8_t>(e));
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
    put_le(out, exceptions, 2);
    encode_int_frame(ints.data(), n, out, scratch.data(), true);
    for (std::size_t k = 0; k < exceptions; ++k) put_le(out, positions[k], 2);
    for (std::size_t k = 0; k < exceptions; ++k)
      put_le(out, std::bit_cast<std::uint64_t>(values[at + positions[k]]), 8);
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
  byte_cursor cursor{in.data(), in.size()};
  std::uint64_t e = 0;
  if (!cursor.read(e, 1)) return errc::block_truncated;
  if (e > max_exponent) return errc::block_corrupt;
  const double power = powers_of_ten[e];
  std::array<std::int64_t, frame_size> ints;
  std::array<std::uint64_t, frame_size> scratch;
  for (std::size_t at = 0; at < count; at += frame_size) {
    const std::size_t n = std::min(frame_size, count - at);
    std::uint64_t exceptions = 0;
    if (!cursor.read(exceptions, 2)) return errc::block_truncated;
    if (exceptions > n) return errc::block_corrupt;
    if (auto r = decode_int_frame(cursor, n, ints.data(), scratch.data(), repeat_frames); !r) return r;
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
    if (!cursor.has(exceptions * 10)) return errc::block_truncated;
    const std::uint8_t* positions = cursor.data + cursor.at;
    const std::uint8_t* raw = positions + exceptions * 2;
    for (std::size_t k = 0; k < exceptions; ++k) {
      const auto position = static_cast<std::size_t>(get_le(positions + 2 * k, 2));
      if (position >= n) return errc::block_corrupt;
      frame[position] = std::bit_cast<double>(get_le(raw + 8 * k, 8));
    }
    cursor.at += exceptions * 10;
  }
  if (cursor.at != cursor.size) return errc::block_corrupt;
  return {};
}

}  // namespace codecs

// ---- blocks ----------------------------------------------------------------------------------

block_summary summarize(std::span<const std::int64_t> times, std::span<const double> values) noexcept {
  block_summary s;
  s.count = static_cast<std::uint32_t>(times.size());
  if (times.empty()) return s;
  s.first_time = *std::min_element(times.begin(), times.end());
  s.last_time = *std::max_element(times.begin(), times.end());
  s.first = values.front();
  s.last = values.back();
  s.min = std::numeric_limits<double>::infinity();
  s.max = -std::numeric_limits<double>::infinity();
  bool any = false;
  for (const double v : values) {
    if (std::isnan(v)) continue;
    any = true;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
    s.sum += v;
  }
  if (!any) s.min = s.max = std::numeric_limits<double>::quiet_NaN();
  return s;
}

result<bytes> encode_block(std::span<const std::int64_t> times, std::span<const double> values,
                           const encode_options& options) {
  if (times.size() != values.size()) return errc::invalid_argument;
  if (times.size() > max_points) return errc::too_many_points;
  bytes payload;
  payload.reserve(times.size() * 2 + 64);
  time_codec tc = time_codec::packed;
  value_codec vc = value_codec::decimal_runs;
  if (options.codec == codec_choice::gorilla) {
    tc = time_codec::gorilla;
    codecs::gorilla_encode_times(times, payload);
  } else {
    codecs::packed_encode_times(times, payload);
  }
  const std::size_t time_size = payload.size();
  if (options.codec == codec_choice::gorilla) {
    vc = value_codec::gorilla;
    codecs::gorilla_encode_values(values, payload);
  } else if (options.codec == codec_choice::decimal) {
    codecs::decimal_encode_values(values, payload, true);
  } else if (options.codec == codec_choice::chimp) {
    vc = value_codec::chimp128;
    codecs::chimp_encode_values(values, payload);
  } else if (!codecs::decimal_encode_values(values, payload, false)) {
    // Not decimal enough, or Gorilla estimated smaller on the first frame: Gorilla or Chimp128 by
    // their sizes on the first frame (both encoded there), so the block is encoded once.
    const std::size_t probe = std::min(values.size(), frame_size);
    bytes gorilla_probe;
    codecs::gorilla_encode_values(values.first(probe), gorilla_probe);
    // Chimp128 decodes slower than Gorilla here, so it has to be clearly (1/8) smaller.
    if (codecs::chimp_bits(values.data(), probe) * 8 < gorilla_probe.size() * 8 * 7) {
      vc = value_codec::chimp128;
      codecs::chimp_encode_values(values, payload);
    } else {
      vc = value_codec::gorilla;
      codecs::gorilla_encode_values(values, payload);
    }
  }
  const std::size_t value_size = payload.size() - time_size;

  std::uint8_t flags = 0;
  bytes stored;
  if (options.zstd && !payload.empty()) {
    stored.resize(ZSTD_compressBound(payload.size()));
    const std::size_t packed =
        ZSTD_compress(stored.data(), stored.size(), payload.data(), payload.size(), options.zstd_level);
    if (!ZSTD_isError(packed) && packed < payload.size()) {
      stored.resize(packed);
      flags |= flag_zstd;
    }
  }
  const bytes& body = (flags & flag_zstd) != 0 ? stored : payload;

  bytes block;
  block.reserve(header_size + body.size());
  block.push_back(magic0);
  block.push_back(magic1);
  block.push_back(format_version);
  block.push_back(static_cast<std::uint8_t>(tc));
  block.push_back(static_cast<std::uint8_t>(vc));
  block.push_back(flags);
  put_le(block, 0, 2);
  put_le(block, times.size(), 4);
  put_le(block, time_size, 4);
  put_le(block, value_size, 4);
  put_le(block, block_checksum(block.data(), body), 4);
  block.insert(block.end(), body.begin(), body.end());
  return block;
}

result<block_info> read_block_info(bytes_view block) {
  if (block.size() < header_size) return errc::block_truncated;
  const std::uint8_t* h = block.data();
  if (h[0] != magic0 || h[1] != magic1) return errc::block_corrupt;
  if (h[2] != format_version) return errc::unsupported_block;
  block_info info;
  info.version = h[2];
  if (h[3] != 1 && h[3] != 2) return errc::unsupported_block;
  if (h[4] < 1 || h[4] > 4) return errc::unsupported_block;
  if ((h[5] & ~flag_zstd) != 0 || h[6] != 0 || h[7] != 0) return errc::unsupported_block;
  info.times = static_cast<time_codec>(h[3]);
  info.values = static_cast<value_codec>(h[4]);
  info.zstd = (h[5] & flag_zstd) != 0;
  info.count = static_cast<std::uint32_t>(get_le(h + 8, 4));
  if (info.count > max_points) return errc::block_corrupt;
  return info;
}

result<void> decode_block(bytes_view block, std::vector<std::int64_t>& times, std::vector<double>& values) {
  auto info = read_block_info(block);
  if (!info) return info.error();
  const std::uint8_t* h = block.data();
  const std::size_t time_size = get_le(h + 12, 4);
  const std::size_t value_size = get_le(h + 16, 4);
  const auto checksum = static_cast<std::uint32_t>(get_le(h + 20, 4));
  const bytes_view body = block.subspan(header_size);
  const std::size_t count = info->count;
  if (time_size > max_section_size(count) || value_size > max_section_size(count)) return errc::block_corrupt;
  // Every codec spends at least 12 bytes per 1024 timestamps: a header claiming more points than
  // its time section could hold is corrupt, and is refused before anything is allocated for them.
  if (count > 1024 * (time_size / 12 + 1)) return errc::block_corrupt;
  if (!info->zstd && body.size() < time_size + value_size) return errc::block_truncated;
  if (block_checksum(h, body) != checksum) {
    return body.size() < time_size + value_size ? errc::block_truncated : errc::block_corrupt;
  }
  bytes inflated;
  bytes_view payload = body;
  if (info->zstd) {
    const unsigned long long declared = ZSTD_getFrameContentSize(body.data(), body.size());
    if (declared != time_size + value_size) return errc::block_corrupt;
    inflated.resize(time_size + value_size);
    const std::size_t got = ZSTD_decompress(inflated.data(), inflated.size(), body.data(), body.size());
    if (ZSTD_isError(got) || got != inflated.size()) return errc::block_corrupt;
    payload = inflated;
  } else if (body.size() != time_size + value_size) {
    return errc::block_corrupt;
  }
  times.resize(count);
  values.resize(count);
  const bytes_view time_bytes = payload.subspan(0, time_size);
  const bytes_view value_bytes = payload.subspan(time_size, value_size);
  result<void> r = info->times == time_codec::gorilla
                       ? codecs::gorilla_decode_times(time_bytes, count, times.data())
                       : codecs::packed_decode_times(time_bytes, count, times.data());
  if (r) {
    switch (info->values) {
      case value_codec::gorilla:
        r = codecs::gorilla_decode_values(value_bytes, count, values.data());
        break;
      case value_codec::chimp128:
        r = codecs::chimp_decode_values(value_bytes, count, values.data());
        break;
      case value_codec::decimal:
      case value_codec::decimal_runs:
        r = codecs::decimal_decode_values(value_bytes, count, values.data(),
                                          info->values == value_codec::decimal_runs);
        break;
    }
  }
  if (!r) {
    times.clear();
    values.clear();
  }
  return r;
}

}  // namespace keel::tsdb
