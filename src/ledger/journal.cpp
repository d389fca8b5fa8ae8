#include <keel/ledger/journal.hpp>

#include <algorithm>
#include <bit>
#include <cstring>

namespace keel::ledger {

namespace {

constexpr std::uint8_t format_version = 1;

struct writer {
  std::uint8_t* out;
  std::size_t at = 0;
  void u8(std::uint8_t v) noexcept { out[at++] = v; }
  // Big-endian, the low `size` bytes of v. Fixed sizes compile to byte swaps and stores: this
  // runs for every journal entry.
  void be(u128 v, int size) noexcept {
    if (size == 16) {
      store64(static_cast<std::uint64_t>(v >> 64U));
      store64(static_cast<std::uint64_t>(v));
      return;
    }
    if (size == 8) {
      store64(static_cast<std::uint64_t>(v));
      return;
    }
    for (int i = size - 1; i >= 0; --i) out[at++] = static_cast<std::uint8_t>(v >> (8 * i));
  }
  void store64(std::uint64_t v) noexcept {
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
    std::memcpy(out + at, &v, sizeof v);
    at += sizeof v;
  }
};

struct reader {
  const std::uint8_t* in;
  std::size_t at = 0;
  std::uint8_t u8() noexcept { return in[at++]; }
  u128 be(int size) noexcept {
    u128 v = 0;
    for (int i = 0; i < size; ++i) v = (v << 8U) | in[at++];
    return v;
  }
};

}  // namespace

encoded_entry encode(const journal_entry& entry) noexcept {
  encoded_entry out{};
  writer w{out.data()};
  w.u8(format_version);
  w.u8(static_cast<std::uint8_t>(entry.kind));
  w.be(entry.timestamp(), 8);
  if (entry.kind == entry_kind::account_created) {
    const auto& a = entry.account;
    w.be(a.id, 16);
    w.be(a.user_data, 16);
    w.be(a.ledger, 4);
    w.be(a.code, 2);
    w.be(a.flags, 2);
    // the rest stays zero
  } else {
    const auto& t = entry.transfer;
    w.be(t.id, 16);
    w.be(t.debit_account_id, 16);
    w.be(t.credit_account_id, 16);
    w.be(t.amount, 16);
    w.be(t.pending_id, 16);
    w.be(t.user_data, 16);
    w.be(t.timeout, 4);
    w.be(t.ledger, 4);
    w.be(t.code, 2);
    w.be(t.flags, 2);
  }
  return out;
}

result<journal_entry> decode(bytes_view data) {
  if (data.size() != entry_size) return errc::corrupt_entry;
  reader r{data.data()};
  if (r.u8() != format_version) return errc::corrupt_entry;
  const auto kind = r.u8();
  if (kind < 1 || kind > 3) return errc::corrupt_entry;
  journal_entry e;
  e.kind = static_cast<entry_kind>(kind);
  const auto ts = static_cast<std::uint64_t>(r.be(8));
  if (e.kind == entry_kind::account_created) {
    auto& a = e.account;
    a.timestamp = ts;
    a.id = r.be(16);
    a.user_data = r.be(16);
    a.ledger = static_cast<std::uint32_t>(r.be(4));
    a.code = static_cast<std::uint16_t>(r.be(2));
    a.flags = static_cast<std::uint16_t>(r.be(2));
    if (std::any_of(data.begin() + static_cast<std::ptrdiff_t>(r.at), data.end(),
                    [](std::uint8_t b) { return b != 0; }))
      return errc::corrupt_entry;
  } else {
    auto& t = e.transfer;
    t.timestamp = ts;
    t.id = r.be(16);
    t.debit_account_id = r.be(16);
    t.credit_account_id = r.be(16);
    t.amount = r.be(16);
    t.pending_id = r.be(16);
    t.user_data = r.be(16);
    t.timeout = static_cast<std::uint32_t>(r.be(4));
    t.ledger = static_cast<std::uint32_t>(r.be(4));
    t.code = static_cast<std::uint16_t>(r.be(2));
    t.flags = static_cast<std::uint16_t>(r.be(2));
  }
  return e;
}

}  // namespace keel::ledger
