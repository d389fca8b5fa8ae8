#pragma once
// The ledger's rules, shared by every engine: validation, result codes, linked chains,
// two-phase transfers, limits and overflow checks, applied to a working set of accounts and
// transfers. The memory engine's working set is everything; the Postgres engine loads the
// rows a batch touches into one, under its journal lock, and writes back what changed.
#include <keel/ledger/journal.hpp>
#include <keel/ledger/types.hpp>

#include <cstdint>
#include <map>
#include <span>
#include <unordered_map>
#include <vector>

namespace keel::ledger::detail {

struct u128_hash {
  std::size_t operator()(u128 v) const noexcept {
    const auto lo = static_cast<std::uint64_t>(v);
    const auto hi = static_cast<std::uint64_t>(v >> 64U);
    std::uint64_t h = (lo ^ (hi * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31U;
    return static_cast<std::size_t>(h);
  }
};

/// A stored transfer and, for a pending one, where it stands.
struct transfer_record {
  transfer value;
  pending_state state = pending_state::none;
  std::uint64_t expires_at = 0;  ///< 0: never
};

/// A committed journal entry and the balances it left on the accounts it moved.
struct applied_entry {
  journal_entry entry;
  u128 debit_id = 0;  ///< 0 for account_created
  u128 credit_id = 0;
  balance debit_after{};
  balance credit_after{};
};

struct working_set {
  std::unordered_map<u128, account, u128_hash> accounts;
  std::unordered_map<u128, transfer_record, u128_hash> transfers;
  std::multimap<std::uint64_t, u128> expiries;  ///< pending transfers with a timeout, by expiry
  std::uint64_t last_timestamp = 0;
};

class state_machine {
 public:
  explicit state_machine(working_set& ws) noexcept : ws_(ws) {}

  /// Appends one result per account to `results` and the committed entries to `out`.
  void create_accounts(std::span<const account> batch, std::uint64_t now,
                       std::vector<account_result>& results, std::vector<applied_entry>& out);
  /// Expires pending transfers whose expiry is <= now.
  void expire(std::uint64_t now, std::vector<applied_entry>& out);
  void create_transfers(std::span<const transfer> batch, std::uint64_t now,
                        std::vector<transfer_result>& results, std::vector<applied_entry>& out);

 private:
  struct undo_entry {
    enum kind_t : std::uint8_t { account_balance, account_insert, transfer_insert, transfer_state } kind;
    u128 id;
    balance old_balance;
    pending_state old_state;
    std::uint64_t expires_at;
  };

  std::uint64_t next_timestamp(std::uint64_t now) noexcept;
  account_result create_account(const account& in, std::uint64_t now, std::vector<applied_entry>& out);
  transfer_result create_transfer(const transfer& in, std::uint64_t now, std::vector<applied_entry>& out);
  transfer_result post_or_void(const transfer& in, std::uint64_t now, std::vector<applied_entry>& out);
  void save_balance(const account& a);
  void rollback(std::uint64_t saved_timestamp);

  template <class Result, class Event, class Apply>
  void run_batch(std::span<const Event> batch, std::vector<Result>& results, std::vector<applied_entry>& out,
                 Apply apply);

  working_set& ws_;
  bool logging_ = false;  // inside a linked chain: record undo entries
  std::vector<undo_entry> undo_;
};

}  // namespace keel::ledger::detail
