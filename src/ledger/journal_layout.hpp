#pragma once
// The canonical journal entry's layout (docs/ledger.md, "Canonical entry encoding"), defined
// once: encode, decode and the memory engine's reads of stored entries all use these fields.
#include <keel/core/endian.hpp>
#include <keel/ledger/journal.hpp>

#include <cstddef>
#include <cstdint>

namespace keel::ledger::detail::entry_layout {

/// Where a big-endian field starts in an entry, and its width in bytes.
struct field {
  std::size_t offset;
  std::size_t size;
  [[nodiscard]] constexpr std::size_t end() const noexcept { return offset + size; }
};

// Each field starts where the one before it ends, so the layout has no gaps to get wrong and a
// decoder that reads the fields in this order reads them at these offsets.
[[nodiscard]] constexpr field after(field previous, std::size_t size) noexcept {
  return {previous.end(), size};
}

inline constexpr field version{0, 1};
inline constexpr field kind = after(version, 1);
inline constexpr field timestamp = after(kind, 8);
inline constexpr field id = after(timestamp, 16);  ///< the account's, or the transfer's

/// Fields of an account_created entry; zero bytes follow up to entry_size.
namespace account_fields {
inline constexpr field user_data = after(id, 16);
inline constexpr field ledger = after(user_data, 4);
inline constexpr field code = after(ledger, 2);
inline constexpr field flags = after(code, 2);
inline constexpr std::size_t padding = entry_size - flags.end();
}  // namespace account_fields

/// Fields of a transfer or pending_expired entry.
namespace transfer_fields {
inline constexpr field debit_account_id = after(id, 16);
inline constexpr field credit_account_id = after(debit_account_id, 16);
inline constexpr field amount = after(credit_account_id, 16);
inline constexpr field pending_id = after(amount, 16);
inline constexpr field user_data = after(pending_id, 16);
inline constexpr field timeout = after(user_data, 4);
inline constexpr field ledger = after(timeout, 4);
inline constexpr field code = after(ledger, 2);
inline constexpr field flags = after(code, 2);
}  // namespace transfer_fields
static_assert(transfer_fields::flags.end() == entry_size, "a transfer entry fills the entry exactly");
static_assert(account_fields::flags.end() <= entry_size);

/// Writes `value`'s low `f.size` bytes big-endian at `f`. In bounds by the array's type; the
/// sizes are constants, so each call compiles to one or two stores.
inline void store(encoded_entry& out, field f, u128 value) noexcept {
  std::uint8_t* at = out.data() + f.offset;
  switch (f.size) {
    case 1:
      *at = static_cast<std::uint8_t>(value);
      return;
    case 2:
      store_be(at, static_cast<std::uint16_t>(value));
      return;
    case 4:
      store_be(at, static_cast<std::uint32_t>(value));
      return;
    case 8:
      store_be(at, static_cast<std::uint64_t>(value));
      return;
    default:
      store_be(at, static_cast<std::uint64_t>(value >> 64U));
      store_be(at + 8, static_cast<std::uint64_t>(value));
  }
}

/// The 8-byte field `f` of an entry the engine stored itself (and so knows to be well formed).
[[nodiscard]] inline std::uint64_t load_u64(const encoded_entry& in, field f) noexcept {
  return load_be<std::uint64_t>(in.data() + f.offset);
}
/// The 16-byte field `f` of an entry the engine stored itself.
[[nodiscard]] inline u128 load_u128(const encoded_entry& in, field f) noexcept {
  return (static_cast<u128>(load_be<std::uint64_t>(in.data() + f.offset)) << 64U) |
         load_be<std::uint64_t>(in.data() + f.offset + 8);
}

}  // namespace keel::ledger::detail::entry_layout
