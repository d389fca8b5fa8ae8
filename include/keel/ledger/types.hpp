#pragma once
/// @file keel/ledger/types.hpp
/// @brief The ledger's data model: 128-bit ids and amounts, accounts, transfers, result codes.
#include <keel/core/result.hpp>
#include <keel/ledger/error.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::ledger {

/// An unsigned 128-bit integer: ids, amounts and balances. (`__extension__` keeps -Wpedantic
/// quiet; g++ and clang both provide the type on 64-bit targets.)
// NOLINTNEXTLINE(modernize-use-using): `__extension__` applies to a typedef, not to `using`
__extension__ typedef unsigned __int128 u128;

/// The largest u128; reserved (ids must not be it, as in TigerBeetle).
inline constexpr u128 u128_max = ~u128{0};

/// Decimal text of `value` ("0" .. "340282366920938463463374607431768211455").
[[nodiscard]] std::string to_string(u128 value);
/// Parses decimal digits only (no sign, no spaces, no leading `+`), rejecting overflow.
/// @returns errc::invalid_amount otherwise.
[[nodiscard]] result<u128> parse_u128(std::string_view text);

/// At most this many events per create_accounts / create_transfers call (TigerBeetle's limit).
inline constexpr std::size_t max_batch = 8190;

/// Account flags (combine with `|`).
namespace account_flags {
inline constexpr std::uint16_t linked = 1U << 0;  ///< commits or fails with the next event
inline constexpr std::uint16_t debits_must_not_exceed_credits = 1U << 1;
inline constexpr std::uint16_t credits_must_not_exceed_debits = 1U << 2;
inline constexpr std::uint16_t history = 1U << 3;  ///< keep per-entry balances (as-of, statement)
/// Rejects new transfers and posts; only voids of pending transfers pass. Set at creation, or
/// by a pending transfer with transfer_flags::closing_debit / closing_credit.
inline constexpr std::uint16_t closed = 1U << 4;
inline constexpr std::uint16_t all = (1U << 5) - 1;
}  // namespace account_flags

/// Transfer flags (combine with `|`).
namespace transfer_flags {
inline constexpr std::uint16_t linked = 1U << 0;            ///< commits or fails with the next event
inline constexpr std::uint16_t pending = 1U << 1;           ///< two-phase: reserve now, post or void later
inline constexpr std::uint16_t post_pending = 1U << 2;      ///< posts `pending_id` (amount 0 = all)
inline constexpr std::uint16_t void_pending = 1U << 3;      ///< voids `pending_id`
inline constexpr std::uint16_t balancing_debit = 1U << 4;   ///< at most what the debit side allows
inline constexpr std::uint16_t balancing_credit = 1U << 5;  ///< at most what the credit side allows
/// Closes the debit account when this pending transfer commits; voiding it (or its expiry)
/// reopens the account. Requires `pending`; the amount may be 0.
inline constexpr std::uint16_t closing_debit = 1U << 6;
/// Closes the credit account, as closing_debit.
inline constexpr std::uint16_t closing_credit = 1U << 7;
inline constexpr std::uint16_t all = (1U << 8) - 1;
}  // namespace transfer_flags

/// An account's four balances.
struct balance {
  u128 debits_pending = 0;
  u128 debits_posted = 0;
  u128 credits_pending = 0;
  u128 credits_posted = 0;
  friend bool operator==(const balance&, const balance&) = default;
};

/// An account. `timestamp` (ns since the Unix epoch) is assigned by the ledger.
struct account {
  u128 id = 0;
  u128 user_data = 0;
  std::uint32_t ledger = 0;
  std::uint16_t code = 0;
  std::uint16_t flags = 0;
  std::uint64_t timestamp = 0;
  balance balances{};  ///< ignored on create (must be zero)
  friend bool operator==(const account&, const account&) = default;
};

/// A transfer of `amount` from `debit_account_id` to `credit_account_id` within one ledger.
struct transfer {
  u128 id = 0;
  u128 debit_account_id = 0;
  u128 credit_account_id = 0;
  u128 amount = 0;
  u128 pending_id = 0;  ///< for post_pending / void_pending: the pending transfer
  u128 user_data = 0;
  std::uint32_t timeout = 0;  ///< seconds; pending only; 0 = never expires
  std::uint32_t ledger = 0;
  std::uint16_t code = 0;
  std::uint16_t flags = 0;
  std::uint64_t timestamp = 0;  ///< assigned by the ledger; must be 0 on create
  friend bool operator==(const transfer&, const transfer&) = default;
};

/// Outcome of one account in a create_accounts batch.
enum class account_result : std::uint8_t {
  ok,
  linked_event_failed,
  linked_event_chain_open,
  timestamp_must_be_zero,
  reserved_flag,
  id_must_not_be_zero,
  id_must_not_be_int_max,
  flags_are_mutually_exclusive,
  balances_must_be_zero,
  ledger_must_not_be_zero,
  code_must_not_be_zero,
  exists_with_different_flags,
  exists_with_different_user_data,
  exists_with_different_ledger,
  exists_with_different_code,
  exists,
};

/// Outcome of one transfer in a create_transfers batch (TigerBeetle's codes).
enum class transfer_result : std::uint8_t {
  ok,
  linked_event_failed,
  linked_event_chain_open,
  timestamp_must_be_zero,
  reserved_flag,
  id_must_not_be_zero,
  id_must_not_be_int_max,
  flags_are_mutually_exclusive,
  debit_account_id_must_not_be_zero,
  debit_account_id_must_not_be_int_max,
  credit_account_id_must_not_be_zero,
  credit_account_id_must_not_be_int_max,
  accounts_must_be_different,
  pending_id_must_be_zero,
  pending_id_must_not_be_zero,
  pending_id_must_not_be_int_max,
  pending_id_must_be_different,
  timeout_reserved_for_pending_transfer,
  amount_must_not_be_zero,
  ledger_must_not_be_zero,
  code_must_not_be_zero,
  debit_account_not_found,
  credit_account_not_found,
  accounts_must_have_the_same_ledger,
  transfer_must_have_the_same_ledger_as_accounts,
  pending_transfer_not_found,
  pending_transfer_not_pending,
  pending_transfer_has_different_debit_account_id,
  pending_transfer_has_different_credit_account_id,
  pending_transfer_has_different_ledger,
  pending_transfer_has_different_code,
  exceeds_pending_transfer_amount,
  pending_transfer_has_different_amount,
  pending_transfer_already_posted,
  pending_transfer_already_voided,
  pending_transfer_expired,
  exists_with_different_flags,
  exists_with_different_pending_id,
  exists_with_different_timeout,
  exists_with_different_debit_account_id,
  exists_with_different_credit_account_id,
  exists_with_different_amount,
  exists_with_different_user_data,
  exists_with_different_ledger,
  exists_with_different_code,
  exists,
  overflows_debits_pending,
  overflows_credits_pending,
  overflows_debits_posted,
  overflows_credits_posted,
  overflows_debits,
  overflows_credits,
  overflows_timeout,
  exceeds_credits,
  exceeds_debits,
  debit_account_already_closed,
  credit_account_already_closed,
  closing_transfer_must_be_pending,
};

/// snake_case name of a result code ("exceeds_credits").
[[nodiscard]] std::string_view to_string(account_result r) noexcept;
[[nodiscard]] std::string_view to_string(transfer_result r) noexcept;

/// Where a point-in-time query looks: after journal entry `sequence` (inclusive), or after
/// the last entry whose timestamp is <= `timestamp`. Default: now.
struct as_of {
  std::optional<std::uint64_t> sequence;
  std::optional<std::uint64_t> timestamp;
  [[nodiscard]] static as_of now() noexcept { return {}; }
  [[nodiscard]] static as_of at_sequence(std::uint64_t s) noexcept {
    return {.sequence = s, .timestamp = {}};
  }
  [[nodiscard]] static as_of at_time(std::uint64_t t) noexcept { return {.sequence = {}, .timestamp = t}; }
};

/// A state a pending transfer is in.
enum class pending_state : std::uint8_t { none, pending, posted, voided, expired };

/// One line of an account statement: a journal entry that moved the account, and the
/// account's balances right after it (the running balance).
struct statement_line {
  std::uint64_t sequence = 0;
  std::uint64_t timestamp = 0;
  u128 transfer_id = 0;
  balance after{};
  friend bool operator==(const statement_line&, const statement_line&) = default;
};

/// A statement query: lines with sequence in [from_sequence, to_sequence], oldest first,
/// at most `limit`; continue from `next_sequence` of the page.
struct statement_query {
  std::uint64_t from_sequence = 0;
  std::uint64_t to_sequence = UINT64_MAX;
  std::size_t limit = 100;
};

/// A page of a statement. `next_sequence` is set when more lines may follow.
struct statement_page {
  std::vector<statement_line> lines;
  std::optional<std::uint64_t> next_sequence;
};

/// Totals of one ledger at a point: Σ over its accounts. Σ debits = Σ credits always.
struct trial_balance {
  std::uint32_t ledger = 0;
  std::uint64_t accounts = 0;
  balance totals{};
  [[nodiscard]] bool balanced() const noexcept {
    return totals.debits_posted == totals.credits_posted && totals.debits_pending == totals.credits_pending;
  }
};

}  // namespace keel::ledger
