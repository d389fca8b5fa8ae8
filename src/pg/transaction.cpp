#include <keel/core/backoff.hpp>
#include <keel/pg/transaction.hpp>

#include <algorithm>
#include <random>
#include <thread>

namespace keel::pg {

result<transaction> transaction::begin(connection& c, const transaction_options& options) {
  std::string sql = "BEGIN ISOLATION LEVEL ";
  switch (options.level) {
    case isolation::read_committed:
      sql += "READ COMMITTED";
      break;
    case isolation::repeatable_read:
      sql += "REPEATABLE READ";
      break;
    case isolation::serializable:
      sql += "SERIALIZABLE";
      break;
  }
  sql += options.read_only ? " READ ONLY" : " READ WRITE";
  if (c.in_transaction()) return errc::invalid_argument;  // nested: use a savepoint
  if (auto r = c.execute(sql); !r) return r.error();
  return transaction(c);
}

transaction::transaction(transaction&& other) noexcept
    : connection_(other.connection_), active_(other.active_), savepoints_(other.savepoints_) {
  other.active_ = false;
}

transaction::~transaction() {
  if (active_) (void)rollback();
}

result<void> transaction::commit() {
  if (!active_) return errc::invalid_argument;
  if (connection_->in_failed_transaction()) {
    (void)rollback();
    return errc::transaction_aborted;
  }
  active_ = false;
  auto r = connection_->execute("COMMIT");
  if (!r) return r.error();
  // The server answers COMMIT of a failed transaction with ROLLBACK; never report that as done.
  if (r->command() == "ROLLBACK") return errc::transaction_aborted;
  return {};
}

result<void> transaction::rollback() {
  if (!active_) return {};
  active_ = false;
  auto r = connection_->execute("ROLLBACK");
  if (!r) return r.error();
  return {};
}

result<savepoint> transaction::make_savepoint() {
  if (!active_) return errc::invalid_argument;
  std::string name = "keel_savepoint_" + std::to_string(++savepoints_);
  if (auto r = connection_->execute("SAVEPOINT " + name); !r) return r.error();
  return savepoint(*this, std::move(name));
}

savepoint::savepoint(savepoint&& other) noexcept
    : transaction_(other.transaction_), name_(std::move(other.name_)), active_(other.active_) {
  other.active_ = false;
}

savepoint::~savepoint() {
  if (active_) (void)rollback();
}

result<void> savepoint::release() {
  if (!active_) return errc::invalid_argument;
  active_ = false;
  auto r = transaction_->conn().execute("RELEASE SAVEPOINT " + name_);
  if (!r) return r.error();
  return {};
}

result<void> savepoint::rollback() {
  if (!active_) return errc::invalid_argument;
  active_ = false;
  if (!transaction_->active()) return {};
  auto r = transaction_->conn().execute("ROLLBACK TO SAVEPOINT " + name_ + "; RELEASE SAVEPOINT " + name_);
  if (!r) return r.error();
  return {};
}

void detail::retry_backoff(int attempt, const retry_options& options) {
  thread_local std::minstd_rand random{std::random_device{}()};
  const auto delay = backoff_delay(
      {.initial = options.initial_backoff, .max = options.max_backoff, .mode = jitter_mode::full},
      static_cast<std::uint32_t>(std::max(attempt, 1)),
      std::uniform_real_distribution<double>(0.0, 1.0)(random));
  std::this_thread::sleep_for(delay);
}

}  // namespace keel::pg
