#include <keel/core/assert.hpp>
#include <keel/core/byte_io.hpp>
#include <keel/ledger/journal.hpp>

#include "journal_layout.hpp"

#include <algorithm>

namespace keel::ledger {

namespace {

namespace layout = detail::entry_layout;

constexpr std::uint8_t format_version = 1;

// Reads the fields of untrusted bytes in layout order through the checked reader; the first
// short read is remembered, so the decoder checks once instead of after every field.
class field_reader {
 public:
  explicit field_reader(bytes_view data) noexcept : in_(data) {}

  template <keel::detail::fixed_integer T>
  T next(layout::field f) noexcept {
    KEEL_ASSERT(failed_ || (f.size == sizeof(T) && in_.position() == f.offset),
                "fields are read in layout order");
    auto v = in_.be<T>();
    if (!v) {
      failed_ = true;
      return 0;
    }
    return *v;
  }
  u128 next_u128(layout::field f) noexcept {
    KEEL_ASSERT(failed_ || (f.size == 16 && in_.position() == f.offset), "fields are read in layout order");
    const auto high = in_.be<std::uint64_t>();
    const auto low = in_.be<std::uint64_t>();
    if (!high || !low) {
      failed_ = true;
      return 0;
    }
    return (static_cast<u128>(*high) << 64U) | *low;
  }
  [[nodiscard]] bool zeros(std::size_t n) noexcept {
    auto run = in_.take(n);
    if (!run) failed_ = true;
    return run && std::all_of(run->begin(), run->end(), [](std::uint8_t b) { return b == 0; });
  }
  /// True when every field was there and nothing follows them.
  [[nodiscard]] bool complete() const noexcept { return !failed_ && in_.expect_end(); }

 private:
  byte_reader in_;
  bool failed_ = false;
};

}  // namespace

encoded_entry encode(const journal_entry& entry) noexcept {
  encoded_entry out{};
  layout::store(out, layout::version, format_version);
  layout::store(out, layout::kind, static_cast<std::uint8_t>(entry.kind));
  layout::store(out, layout::timestamp, entry.timestamp());
  if (entry.kind == entry_kind::account_created) {
    namespace f = layout::account_fields;
    const auto& a = entry.account;
    layout::store(out, layout::id, a.id);
    layout::store(out, f::user_data, a.user_data);
    layout::store(out, f::ledger, a.ledger);
    layout::store(out, f::code, a.code);
    layout::store(out, f::flags, a.flags);
    // the padding stays zero
  } else {
    namespace f = layout::transfer_fields;
    const auto& t = entry.transfer;
    layout::store(out, layout::id, t.id);
    layout::store(out, f::debit_account_id, t.debit_account_id);
    layout::store(out, f::credit_account_id, t.credit_account_id);
    layout::store(out, f::amount, t.amount);
    layout::store(out, f::pending_id, t.pending_id);
    layout::store(out, f::user_data, t.user_data);
    layout::store(out, f::timeout, t.timeout);
    layout::store(out, f::ledger, t.ledger);
    layout::store(out, f::code, t.code);
    layout::store(out, f::flags, t.flags);
  }
  return out;
}

result<journal_entry> decode(bytes_view data) {
  field_reader in(data);
  const auto version = in.next<std::uint8_t>(layout::version);
  const auto kind = in.next<std::uint8_t>(layout::kind);
  const auto ts = in.next<std::uint64_t>(layout::timestamp);
  if (version != format_version || kind < 1 || kind > 3) return errc::corrupt_entry;
  journal_entry e;
  e.kind = static_cast<entry_kind>(kind);
  if (e.kind == entry_kind::account_created) {
    namespace f = layout::account_fields;
    auto& a = e.account;
    a.timestamp = ts;
    a.id = in.next_u128(layout::id);
    a.user_data = in.next_u128(f::user_data);
    a.ledger = in.next<std::uint32_t>(f::ledger);
    a.code = in.next<std::uint16_t>(f::code);
    a.flags = in.next<std::uint16_t>(f::flags);
    if (!in.zeros(f::padding)) return errc::corrupt_entry;
  } else {
    namespace f = layout::transfer_fields;
    auto& t = e.transfer;
    t.timestamp = ts;
    t.id = in.next_u128(layout::id);
    t.debit_account_id = in.next_u128(f::debit_account_id);
    t.credit_account_id = in.next_u128(f::credit_account_id);
    t.amount = in.next_u128(f::amount);
    t.pending_id = in.next_u128(f::pending_id);
    t.user_data = in.next_u128(f::user_data);
    t.timeout = in.next<std::uint32_t>(f::timeout);
    t.ledger = in.next<std::uint32_t>(f::ledger);
    t.code = in.next<std::uint16_t>(f::code);
    t.flags = in.next<std::uint16_t>(f::flags);
  }
  if (!in.complete()) return errc::corrupt_entry;
  return e;
}

}  // namespace keel::ledger
