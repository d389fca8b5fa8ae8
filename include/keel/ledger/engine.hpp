#pragma once
/// @file keel/ledger/engine.hpp
/// @brief The ledger's storage interface and the in-memory engine.
#include <keel/core/clock.hpp>
#include <keel/core/ed25519.hpp>
#include <keel/ledger/journal.hpp>
#include <keel/ledger/merkle.hpp>
#include <keel/ledger/types.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace keel::ledger {

/// A ledger: batches of accounts and transfers in, one result per event out, a Merkle journal
/// of everything committed, and point-in-time queries. Implementations: memory_engine (here)
/// and pg_engine (keel/ledger/pg_engine.hpp). A memory_engine may be shared between threads; a
/// pg_engine may not (give each thread its own).
///
/// A pending transfer past its timeout is voided as of its expiry time: reads of the present
/// (lookups, `as_of::now()`, times after the last entry, statements) show it released at once,
/// and its pending_expired entry is recorded by the next batch or by expire_pending(), with the
/// expiry time as its timestamp, whichever runs first.
class engine {
 public:
  virtual ~engine() = default;

  /// Creates accounts; one result per account, in order. A batch over max_batch fails whole
  /// with errc::batch_too_large. Events marked `linked` commit or fail with the next one.
  [[nodiscard]] virtual result<std::vector<account_result>> create_accounts(
      std::span<const account> batch) = 0;
  /// Creates transfers; one result per transfer, in order. Pending transfers whose timeout has
  /// passed are expired first.
  [[nodiscard]] virtual result<std::vector<transfer_result>> create_transfers(
      std::span<const transfer> batch) = 0;
  /// Records the expiry of every pending transfer whose timeout has passed, exactly as the next
  /// batch would, so an idle ledger's journal shows it. @returns how many it recorded.
  [[nodiscard]] virtual result<std::uint64_t> expire_pending() = 0;

  /// The account with its current balances (expired holds released), or nullopt.
  [[nodiscard]] virtual result<std::optional<account>> lookup_account(u128 id) = 0;
  /// The transfer as stored (amount is what was actually moved), or nullopt.
  [[nodiscard]] virtual result<std::optional<transfer>> lookup_transfer(u128 id) = 0;
  /// Balances of `account_id` at `point`. @returns errc::unknown_account if it did not exist then.
  [[nodiscard]] virtual result<balance> balance_as_of(u128 account_id, as_of point) = 0;
  /// The entries that moved `account_id`, with the running balance, a page at a time; expiries
  /// that are due but not yet recorded follow, at the sequences they will be recorded at.
  [[nodiscard]] virtual result<statement_page> statement(u128 account_id, const statement_query& query) = 0;
  /// Σ of the balances of every account of `ledger_id` that existed at `point`.
  [[nodiscard]] virtual result<trial_balance> trial_balance_as_of(std::uint32_t ledger_id, as_of point) = 0;

  /// Number of journal entries (the next entry's sequence).
  [[nodiscard]] virtual result<std::uint64_t> journal_size() = 0;
  /// The canonical bytes of entry `sequence`.
  [[nodiscard]] virtual result<encoded_entry> entry(std::uint64_t sequence) = 0;
  /// The Merkle root of the first `tree_size` entries.
  [[nodiscard]] virtual result<tree_hash> root(std::uint64_t tree_size) = 0;
  [[nodiscard]] virtual result<std::vector<tree_hash>> inclusion_proof(std::uint64_t sequence,
                                                                       std::uint64_t tree_size) = 0;
  [[nodiscard]] virtual result<std::vector<tree_hash>> consistency_proof(std::uint64_t old_size,
                                                                         std::uint64_t new_size) = 0;

  /// Signs the current tree head (size, root, the last entry's timestamp) with `key`.
  [[nodiscard]] result<checkpoint> make_checkpoint(const ed25519_private_key& key);

 protected:
  engine() = default;
  engine(const engine&) = default;
  engine& operator=(const engine&) = default;
};

/// Options of memory_engine.
struct memory_options {
  const keel::clock* clock = nullptr;  ///< default: keel::system_clock::instance()
  /// Journal entries to allocate for up front. The storage is allocated and faulted in by the
  /// constructor (as TigerBeetle allocates everything at startup), so the first batches do not
  /// stop while the kernel hands out and zeroes fresh pages. Growing past it still works.
  std::uint64_t capacity = 0;
  /// Runs expire_pending() on a thread of the engine's own this often (wall time, whatever the
  /// clock). Zero: no thread; the next batch or a call to expire_pending() records expiries.
  std::chrono::milliseconds expire_every{0};
};

/// Everything in process memory: for embedding, tests and benchmarks. Not durable. Safe to
/// share between threads (each call holds the engine's mutex).
class memory_engine final : public engine {
 public:
  explicit memory_engine(memory_options options = {});
  ~memory_engine() override;
  memory_engine(memory_engine&&) noexcept;
  memory_engine& operator=(memory_engine&&) noexcept;

  [[nodiscard]] result<std::vector<account_result>> create_accounts(std::span<const account> batch) override;
  [[nodiscard]] result<std::vector<transfer_result>> create_transfers(
      std::span<const transfer> batch) override;
  [[nodiscard]] result<std::uint64_t> expire_pending() override;
  [[nodiscard]] result<std::optional<account>> lookup_account(u128 id) override;
  [[nodiscard]] result<std::optional<transfer>> lookup_transfer(u128 id) override;
  [[nodiscard]] result<balance> balance_as_of(u128 account_id, as_of point) override;
  [[nodiscard]] result<statement_page> statement(u128 account_id, const statement_query& query) override;
  [[nodiscard]] result<trial_balance> trial_balance_as_of(std::uint32_t ledger_id, as_of point) override;
  [[nodiscard]] result<std::uint64_t> journal_size() override;
  [[nodiscard]] result<encoded_entry> entry(std::uint64_t sequence) override;
  [[nodiscard]] result<tree_hash> root(std::uint64_t tree_size) override;
  [[nodiscard]] result<std::vector<tree_hash>> inclusion_proof(std::uint64_t sequence,
                                                               std::uint64_t tree_size) override;
  [[nodiscard]] result<std::vector<tree_hash>> consistency_proof(std::uint64_t old_size,
                                                                 std::uint64_t new_size) override;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace keel::ledger
