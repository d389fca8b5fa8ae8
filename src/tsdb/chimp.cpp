// Chimp128 (Liakos et al., VLDB 2022): XOR with one of the previous 128 values, the one found
// through a table of the latest position per low-14-bit pattern when its XOR has more than 13
// trailing zeros, else the previous value. Codes: `00` + 7-bit slot (equal to that value); `01` +
// slot + 3-bit leading-zero class + 6-bit length + the meaningful bits (many trailing zeros);
// `10` + the low 64 − lead bits (same leading-zero class as before); `11` + 3-bit class + the low
// 64 − lead bits. A slot is the position modulo 128, so encoder and decoder keep the same ring.
#include <keel/core/bits.hpp>
#include <keel/tsdb/codec.hpp>

#include <array>
#include <bit>
#include <vector>

namespace keel::tsdb::codecs {
namespace {

constexpr unsigned chimp_ring = 128;
constexpr unsigned chimp_threshold = 13;
constexpr std::uint64_t chimp_key_mask = (std::uint64_t{1} << 14) - 1;
constexpr std::array<unsigned, 8> chimp_leads = {0, 8, 12, 16, 18, 20, 22, 24};
constexpr unsigned chimp_no_lead = 65;

/// What an impossible code means: reads past the end return zero bits, which can spell one, so a
/// stream that ran out first was cut short, not damaged.
errc damaged(const bit_reader& r) noexcept {
  return r.overrun() ? errc::block_truncated : errc::block_corrupt;
}

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
  auto bits = std::bit_cast<std::uint64_t>(values[0]);
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
        return damaged(r);  // a slot not written yet
      bits = ring[slot];
      if (flag == 1) {
        const auto fields = static_cast<unsigned>(r.read(9));
        const unsigned lead = chimp_leads[fields >> 6];
        const unsigned meaningful = fields & 63U;
        if (meaningful == 0 || lead + meaningful > 64 - chimp_threshold - 1) [[unlikely]]
          return damaged(r);
        bits ^= r.read(meaningful) << (64 - lead - meaningful);
      }
      stored_lead = chimp_no_lead;
    } else {
      if (flag == 3) {
        stored_lead = chimp_leads[r.read(3)];
      } else if (stored_lead == chimp_no_lead) [[unlikely]] {
        return damaged(r);
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

}  // namespace keel::tsdb::codecs
