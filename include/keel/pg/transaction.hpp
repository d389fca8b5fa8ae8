#pragma once
/// @file keel/pg/transaction.hpp
/// @brief Transactions that never commit after an error, savepoints, and retry_transaction
/// for serialization failures and deadlocks.
#include <keel/pg/connection.hpp>

#include <chrono>
#include <type_traits>

namespace keel::pg {

enum class isolation { read_committed, repeatable_read, serializable };

struct transaction_options {
  isolation level = isolation::read_committed;
  bool read_only = false;
};

class savepoint;

/// An open transaction on a connection. Rolls back on destruction unless committed.
class transaction {
 public:
  /// BEGIN with the given isolation level.
  [[nodiscard]] static result<transaction> begin(connection& c, const transaction_options& options = {});

  transaction(transaction&& other) noexcept;
  transaction& operator=(transaction&&) = delete;
  ~transaction();

  template <class... Args>
  [[nodiscard]] result<rows> query(std::string_view sql, const Args&... args) {
    return connection_->query(sql, args...);
  }
  [[nodiscard]] result<rows> execute(std::string_view sql) { return connection_->execute(sql); }

  /// COMMIT. If any statement failed since BEGIN (and was not undone by rolling back to a
  /// savepoint), the transaction is rolled back instead and errc::transaction_aborted returned:
  /// a transaction never commits part of its work after an error.
  [[nodiscard]] result<void> commit();
  /// ROLLBACK; idempotent.
  result<void> rollback();
  /// A savepoint inside this transaction.
  [[nodiscard]] result<savepoint> make_savepoint();

  [[nodiscard]] connection& conn() noexcept { return *connection_; }
  /// False after commit or rollback.
  [[nodiscard]] bool active() const noexcept { return active_; }

 private:
  explicit transaction(connection& c) noexcept : connection_(&c) {}
  connection* connection_;
  bool active_ = true;
  int savepoints_ = 0;
  friend class savepoint;
};

/// A savepoint: rolling back to it undoes the work since, including a failed statement, and
/// keeps the transaction usable. Rolls back to itself on destruction unless released.
class savepoint {
 public:
  savepoint(savepoint&& other) noexcept;
  savepoint& operator=(savepoint&&) = delete;
  ~savepoint();

  /// RELEASE: keep the work done since the savepoint.
  [[nodiscard]] result<void> release();
  /// ROLLBACK TO: undo the work done since the savepoint.
  [[nodiscard]] result<void> rollback();

 private:
  friend class transaction;
  savepoint(transaction& t, std::string name) noexcept : transaction_(&t), name_(std::move(name)) {}
  transaction* transaction_;
  std::string name_;
  bool active_ = true;
};

/// How retry_transaction retries.
struct retry_options {
  transaction_options transaction;
  int max_attempts = 10;
  std::chrono::milliseconds initial_backoff{2};
  std::chrono::milliseconds max_backoff{500};
};

namespace detail {
/// Sleeps before attempt `attempt` (1-based): exponential backoff with full jitter.
void retry_backoff(int attempt, const retry_options& options);
}  // namespace detail

/// Runs `work(transaction&)` in a transaction and commits, re-running the whole transaction
/// when it fails with a serialization failure (40001) or deadlock (40P01), with exponential
/// backoff and jitter, up to max_attempts. `work` returns result<T> (T may be void) and must be
/// safe to run again: keep side effects outside Postgres out of it.
template <class Work>
auto retry_transaction(connection& c, Work&& work, const retry_options& options = {})
    -> std::invoke_result_t<Work&, transaction&> {
  using result_type = std::invoke_result_t<Work&, transaction&>;
  for (int attempt = 1;; ++attempt) {
    auto tx = transaction::begin(c, options.transaction);
    if (!tx) return result_type(boost::system::in_place_error, tx.error());
    result_type outcome = work(*tx);
    error_code failure;
    if (!outcome) {
      failure = outcome.error();
      (void)tx->rollback();
    } else if (auto committed = tx->commit(); !committed) {
      failure = committed.error();
    } else {
      return outcome;
    }
    if (!is_retryable(failure) || attempt >= options.max_attempts) {
      return result_type(boost::system::in_place_error, failure);
    }
    detail::retry_backoff(attempt, options);
  }
}

}  // namespace keel::pg
