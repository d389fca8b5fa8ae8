#pragma once
/// @file keel/ledger/pg_engine.hpp
/// @brief The ledger in Postgres: journal, Merkle nodes, accounts, transfers and balance
/// history in one database, each batch one transaction.
#include <keel/core/clock.hpp>
#include <keel/ledger/engine.hpp>
#include <keel/pg/connection.hpp>
#include <keel/pg/migrations.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace keel::ledger {

/// The ledger's schema (tables keel_ledger_*, in the connection's search_path) as migrations
/// for keel::pg::migrate(c, "ledger", ...).
[[nodiscard]] std::span<const pg::migration> migrations() noexcept;
/// Applies migrations() to `c`'s database (safe to call from several processes at once).
[[nodiscard]] result<pg::migration_report> migrate(pg::connection& c);

/// Options of pg_engine.
struct pg_options {
  const keel::clock* clock = nullptr;  ///< default: keel::system_clock::instance()
};

/// A ledger stored in Postgres through one connection (not shared with other threads; give
/// each writer its own). Any number of engines in any number of processes may write to the
/// same database at once: each batch locks the journal head row first, so batches commit one
/// after another in sequence order, and a batch commits whole or not at all.
class pg_engine final : public engine {
 public:
  explicit pg_engine(pg::connection& c, pg_options options = {}) noexcept;

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
  // Where a point reads: the entries [0, count), and the time it reads the present at when it
  // is past the last entry (expiries due by then count though not recorded).
  struct resolved {
    std::uint64_t count = 0;
    std::optional<std::uint64_t> present;
  };
  template <class Result, class Event>
  result<std::vector<Result>> write_batch(std::span<const Event> batch, std::uint64_t* appended = nullptr);
  result<resolved> resolve(as_of point);
  [[nodiscard]] node_reader nodes();

  pg::connection* c_;
  const keel::clock* clock_;
};

/// Options of pg_expirer.
struct pg_expirer_options {
  std::string conninfo;                   ///< the ledger's database (its search_path names the schema)
  const keel::clock* clock = nullptr;     ///< default: keel::system_clock::instance()
  std::chrono::milliseconds every{1000};  ///< how often the elected expirer looks for due holds
};

/// Records the expiries of a Postgres ledger's pending transfers on a thread of its own, so the
/// journal shows them while no batch runs. Start one in each process that serves the ledger:
/// they elect one through a session-level Postgres advisory lock per schema, held on a
/// connection of the expirer's own, and only the elected one records; when its session ends,
/// the next one to try takes over. Reads do not wait for it: they already show expired holds
/// released.
class pg_expirer {
 public:
  /// Where the expirer stands.
  struct status {
    bool leading = false;        ///< this one holds the lock and records
    std::uint64_t passes = 0;    ///< completed looks (elected or not)
    std::uint64_t recorded = 0;  ///< expiries this one appended
  };

  /// Starts the thread; it connects (and reconnects) by itself.
  explicit pg_expirer(pg_expirer_options options);
  /// Stops the thread and gives up the lock.
  ~pg_expirer();
  pg_expirer(const pg_expirer&) = delete;
  pg_expirer& operator=(const pg_expirer&) = delete;

  [[nodiscard]] status current() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// What `verify_journal` found. `first_bad` names the first entry that is not what the trusted
/// checkpoint committed to.
struct verify_report {
  enum class verdict {
    ok,                  ///< the first tree_size entries reproduce the checkpoint's root
    changed,             ///< entry first_bad's bytes differ from what was committed
    deleted,             ///< entry first_bad is missing
    inserted,            ///< a row that was never committed sits at sequence first_bad
    reordered,           ///< sequence first_bad holds another committed entry (expected_at says which)
    tree_altered,        ///< the stored Merkle nodes do not reproduce the checkpoint; cannot localize
    checkpoint_invalid,  ///< the checkpoint's signature is not the trusted key's
    balances_differ,  ///< the journal is intact but account_id's stored balances are not what it adds up to
  };
  verdict result = verdict::ok;
  std::uint64_t first_bad = 0;
  std::uint64_t expected_at = 0;  ///< for reordered: the sequence that entry was committed at
  u128 account_id = 0;            ///< for balances_differ
  std::uint64_t entries_checked = 0;
  std::string message;  ///< one line, for people
};

/// Re-derives the Merkle tree from the journal rows and checks it against `trusted` (whose
/// signature must be `key`'s). Localizes damage using the stored leaf hashes, which are only
/// trusted after they reproduce the checkpoint's root. When the journal is intact, replays it
/// and checks every account's stored balances against what the entries add up to.
[[nodiscard]] result<verify_report> verify_journal(pg::connection& c, const checkpoint& trusted,
                                                   const ed25519_public_key& key);

}  // namespace keel::ledger
