#pragma once
// The ledger's rules, shared by every engine: validation, result codes, linked chains,
// two-phase transfers, limits and overflow checks, applied to a working set of accounts and
// transfers. The memory engine's working set is everything; the Postgres engine loads the
// rows a batch touches into one, under its journal lock, and writes back what changed.
#include <keel/ledger/detail/segmented_vector.hpp>
#include <keel/ledger/journal.hpp>
#include <keel/ledger/types.hpp>

#include "u128_map.hpp"

#include <cstdint>
#include <set>
#include <span>
#include <utility>
#include <vector>

namespace keel::ledger::detail {

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

/// Transfers by id. The records sit in append-only huge-page-backed segments and the hash map
/// holds only their positions, so growing the map moves 24 bytes per transfer instead of the
/// whole record, and a record never moves once stored.
class transfer_store {
 public:
  [[nodiscard]] std::size_t size() const noexcept { return index_.size(); }
  [[nodiscard]] transfer_record* find(u128 id) noexcept {
    const auto* at = index_.find(id);
    return at != nullptr ? &records_[*at] : nullptr;
  }
  [[nodiscard]] const transfer_record* find(u128 id) const noexcept {
    const auto* at = index_.find(id);
    return at != nullptr ? &records_[*at] : nullptr;
  }
  [[nodiscard]] std::size_t count(u128 id) const noexcept { return index_.count(id); }
  void reserve(std::size_t count) {
    index_.reserve(count);
    records_.reserve(count);
  }
  [[nodiscard]] transfer_record& at(u128 id) { return records_[index_.at(id)]; }
  [[nodiscard]] const transfer_record& at(u128 id) const { return records_[index_.at(id)]; }
  /// Stores `record` under `id` unless the id is present. @returns whether it was stored.
  bool emplace(u128 id, const transfer_record& record) {
    if (!index_.emplace(id, records_.size()).second) return false;
    records_.push_back(record);
    return true;
  }
  /// Removes `id`; its record's storage is reclaimed when it was the last one stored (the
  /// rollback of a linked chain removes transfers in reverse order, so it always is).
  bool erase(u128 id) {
    const auto* at = index_.find(id);
    if (at == nullptr) return false;
    const auto position = *at;
    index_.erase(id);
    if (position + 1 == records_.size()) records_.pop_back();
    return true;
  }
  template <class F>
  void for_each(F&& f) const {
    index_.for_each([&](u128 id, std::uint64_t at) { f(id, records_[at]); });
  }

 private:
  u128_map<std::uint64_t> index_;
  segmented_vector<transfer_record> records_;
};

struct working_set {
  u128_map<account> accounts;
  transfer_store transfers;
  /// Pending transfers with a timeout, by (expiry, id): the order they expire in.
  std::set<std::pair<std::uint64_t, u128>> expiries;
  std::uint64_t last_timestamp = 0;
};

/// What expiring the holds due by a time would do, computed without changing anything: the
/// entries it would append, in order, and the accounts they touch as they would be after.
struct expiry_projection {
  std::vector<applied_entry> entries;
  u128_map<account> accounts;
  std::uint64_t last_timestamp = 0;
};

/// The expiries of every pending transfer in `ws` whose expiry is <= `now`. Each is stamped
/// with its expiry time (kept strictly after the entry before it), so the journal reads the
/// same whether a batch, the expirer or a read finds it, and a read can show an expiry exactly
/// as it will be recorded.
[[nodiscard]] expiry_projection project_expiries(const working_set& ws, std::uint64_t now);

/// Appends to a statement page of `account_id` the lines the projected expiries `due` will add
/// once recorded: they take the sequences from `first_sequence` on. Both engines' statements
/// end this way, after the lines already recorded.
void append_due_lines(statement_page& page, const expiry_projection& due, std::uint64_t first_sequence,
                      u128 account_id, const statement_query& query);

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
    enum kind_t : std::uint8_t { account_state, account_insert, transfer_insert, transfer_state } kind;
    u128 id;
    balance old_balance;
    std::uint16_t old_flags;
    pending_state old_state;
    std::uint64_t expires_at;
  };

  std::uint64_t next_timestamp(std::uint64_t now) noexcept;
  account_result create_account(const account& in, std::uint64_t now, std::vector<applied_entry>& out);
  transfer_result create_transfer(const transfer& in, std::uint64_t now, std::vector<applied_entry>& out);
  transfer_result post_or_void(const transfer& in, std::uint64_t now, std::vector<applied_entry>& out);
  void save_account(const account& a);
  void rollback(std::uint64_t saved_timestamp);

  template <class Result, class Event, class Apply>
  void run_batch(std::span<const Event> batch, std::vector<Result>& results, std::vector<applied_entry>& out,
                 Apply apply);

  working_set& ws_;
  bool logging_ = false;  // inside a linked chain: record undo entries
  std::vector<undo_entry> undo_;
};

}  // namespace keel::ledger::detail
