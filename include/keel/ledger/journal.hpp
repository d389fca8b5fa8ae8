#pragma once
/// @file keel/ledger/journal.hpp
/// @brief Journal entries and their canonical encoding (docs/ledger.md specifies it byte by byte).
#include <keel/core/bytes.hpp>
#include <keel/ledger/types.hpp>

#include <array>
#include <cstdint>

namespace keel::ledger {

/// What a journal entry records.
enum class entry_kind : std::uint8_t {
  account_created = 1,  ///< an account was created
  transfer = 2,         ///< a transfer committed (single-phase, pending, post or void)
  pending_expired = 3,  ///< a pending transfer's timeout passed and its amount was released
};

/// One journal entry. Its sequence is its position (the Merkle leaf index), not part of it.
/// For account_created, `account` is set (balances zero); otherwise `transfer` is. A
/// pending_expired entry carries the pending transfer's id (as `id` and `pending_id`), accounts,
/// amount, ledger and code, the flag void_pending, and the expiry time as `timestamp`.
struct journal_entry {
  entry_kind kind = entry_kind::transfer;
  ledger::account account{};
  ledger::transfer transfer{};
  [[nodiscard]] std::uint64_t timestamp() const noexcept {
    return kind == entry_kind::account_created ? account.timestamp : transfer.timestamp;
  }
  friend bool operator==(const journal_entry&, const journal_entry&) = default;
};

/// Every entry encodes to exactly this many bytes, so a leaf (0x00 ‖ entry) is 119 bytes and
/// SHA-256 hashes it in two blocks.
inline constexpr std::size_t entry_size = 118;
using encoded_entry = std::array<std::uint8_t, entry_size>;

/// The canonical bytes of an entry (big-endian, fixed layout; see docs/ledger.md).
[[nodiscard]] encoded_entry encode(const journal_entry& entry) noexcept;
/// Decodes canonical bytes. @returns errc::corrupt_entry for a wrong size, version, kind or
/// non-zero padding: every entry has exactly one encoding.
[[nodiscard]] result<journal_entry> decode(bytes_view data);

}  // namespace keel::ledger
