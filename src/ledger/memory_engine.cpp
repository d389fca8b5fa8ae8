#include <keel/ledger/engine.hpp>

#include "journal_layout.hpp"
#include "state_machine.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace keel::ledger {

result<checkpoint> engine::make_checkpoint(const ed25519_private_key& key) {
  auto size = journal_size();
  if (!size) return size.error();
  auto head = root(*size);
  if (!head) return head.error();
  std::uint64_t timestamp = 0;
  if (*size > 0) {
    auto last = entry(*size - 1);
    if (!last) return last.error();
    auto decoded = decode(*last);
    if (!decoded) return decoded.error();
    timestamp = decoded->timestamp();
  }
  return checkpoint::sign(*size, *head, timestamp, key);
}

namespace {
std::uint64_t to_ns(timestamp t) noexcept {
  return static_cast<std::uint64_t>(t.time_since_epoch().count());
}
}  // namespace

struct memory_engine::state {
  // What one entry left on the accounts it moved (empty for account creation). The transfer id,
  // the debit account and the timestamp are read back from the entry's canonical bytes rather
  // than stored twice: every byte kept per transfer is a byte the kernel must fault in and zero.
  struct moved {
    balance debit_after{};
    balance credit_after{};
  };

  const keel::clock* clock;
  // Held by every call, and by the expirer thread while it records.
  mutable std::mutex mutex;
  std::condition_variable wake_expirer;
  bool stopping = false;
  std::thread expirer;
  detail::working_set ws;
  merkle_tree tree;
  // Per sequence; segmented so that growing never copies what is already stored.
  detail::segmented_vector<encoded_entry> entries;
  detail::segmented_vector<moved> effects;
  // Per account, the sequences that moved it: 8 bytes a line, so growing them stays cheap.
  detail::u128_map<std::vector<std::uint64_t>> history;
  detail::u128_map<std::uint64_t> created_at;                  // account -> sequence
  std::map<std::uint32_t, std::vector<u128>> ledger_accounts;  // in creation order
  std::vector<detail::applied_entry> scratch;

  ~state() {
    if (!expirer.joinable()) return;
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    wake_expirer.notify_all();
    expirer.join();
  }

  [[nodiscard]] std::uint64_t now() const noexcept { return to_ns(clock->now()); }

  // The expiries due by `time` that no entry records yet (empty when none is due).
  [[nodiscard]] detail::expiry_projection due(std::uint64_t time) const {
    if (ws.expiries.empty() || ws.expiries.begin()->first > time) return {};
    return detail::project_expiries(ws, time);
  }

  // The time a point reads the present at, when it reads past the last entry (where expiries
  // due but not recorded count); nullopt for points inside the journal, read as recorded.
  [[nodiscard]] std::optional<std::uint64_t> present_at(as_of point, std::uint64_t count) const {
    if (point.sequence || count != entries.size()) return std::nullopt;
    return point.timestamp ? std::min(*point.timestamp, now()) : now();
  }

  std::uint64_t record_expiries() {
    scratch.clear();
    detail::state_machine machine(ws);
    machine.expire(now(), scratch);
    commit(scratch);
    return scratch.size();
  }

  void commit(const std::vector<detail::applied_entry>& applied) {
    for (const auto& a : applied) {
      const std::uint64_t sequence = entries.size();
      const auto& bytes = entries.push_back(encode(a.entry));
      tree.append(leaf_hash(bytes));
      if (a.entry.kind == entry_kind::account_created) {
        effects.push_back({});
        created_at.emplace(a.entry.account.id, sequence);
        ledger_accounts[a.entry.account.ledger].push_back(a.entry.account.id);
        history[a.entry.account.id];
      } else {
        effects.push_back({a.debit_after, a.credit_after});
        history[a.debit_id].push_back(sequence);
        history[a.credit_id].push_back(sequence);
      }
    }
  }

  [[nodiscard]] std::uint64_t timestamp_at(std::uint64_t sequence) const noexcept {
    return detail::entry_layout::load_u64(entries[sequence], detail::entry_layout::timestamp);
  }

  [[nodiscard]] statement_line line(u128 account_id, std::uint64_t sequence) const {
    const auto& m = effects[sequence];
    const auto& bytes = entries[sequence];
    namespace layout = detail::entry_layout;
    const auto debit_id = layout::load_u128(bytes, layout::transfer_fields::debit_account_id);
    return {sequence, timestamp_at(sequence), layout::load_u128(bytes, layout::id),
            debit_id == account_id ? m.debit_after : m.credit_after};
  }

  // How many entries a point includes: [0, count).
  result<std::uint64_t> resolve(as_of point) const {
    if (point.sequence) {
      if (*point.sequence >= entries.size()) return errc::sequence_out_of_range;
      return *point.sequence + 1;
    }
    if (point.timestamp) {
      // Timestamps increase with the sequence: the first entry later than the point.
      std::uint64_t low = 0;
      std::uint64_t high = entries.size();
      while (low < high) {
        const auto mid = low + (high - low) / 2;
        if (timestamp_at(mid) <= *point.timestamp) {
          low = mid + 1;
        } else {
          high = mid;
        }
      }
      return low;
    }
    return entries.size();
  }

  result<balance> balance_at(u128 id, std::uint64_t count) const {
    const auto* created = created_at.find(id);
    if (created == nullptr || *created >= count) return errc::unknown_account;
    const auto& sequences = history.at(id);
    const auto it = std::lower_bound(sequences.begin(), sequences.end(), count);
    if (it == sequences.begin()) return balance{};
    return line(id, *std::prev(it)).after;
  }
};

memory_engine::memory_engine(memory_options options) : state_(std::make_unique<state>()) {
  state_->clock = options.clock != nullptr ? options.clock : &system_clock::instance();
  if (options.capacity != 0) {
    auto& s = *state_;
    s.entries.reserve(options.capacity);
    s.effects.reserve(options.capacity);
    s.tree.reserve(options.capacity);
    s.ws.transfers.reserve(options.capacity);
  }
  if (options.expire_every.count() > 0) {
    state_->expirer = std::thread([&s = *state_, every = options.expire_every] {
      std::unique_lock lock(s.mutex);
      while (!s.wake_expirer.wait_for(lock, every, [&s] { return s.stopping; })) (void)s.record_expiries();
    });
  }
}
memory_engine::~memory_engine() = default;
memory_engine::memory_engine(memory_engine&&) noexcept = default;
memory_engine& memory_engine::operator=(memory_engine&&) noexcept = default;

result<std::vector<account_result>> memory_engine::create_accounts(std::span<const account> batch) {
  if (batch.size() > max_batch) return errc::batch_too_large;
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  s.scratch.clear();
  std::vector<account_result> results;
  results.reserve(batch.size());
  detail::state_machine machine(s.ws);
  machine.create_accounts(batch, s.now(), results, s.scratch);
  s.commit(s.scratch);
  return results;
}

result<std::vector<transfer_result>> memory_engine::create_transfers(std::span<const transfer> batch) {
  if (batch.size() > max_batch) return errc::batch_too_large;
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  s.scratch.clear();
  std::vector<transfer_result> results;
  results.reserve(batch.size());
  detail::state_machine machine(s.ws);
  const auto now = s.now();
  machine.expire(now, s.scratch);
  machine.create_transfers(batch, now, results, s.scratch);
  s.commit(s.scratch);
  return results;
}

result<std::uint64_t> memory_engine::expire_pending() {
  std::lock_guard lock(state_->mutex);
  return state_->record_expiries();
}

result<std::optional<account>> memory_engine::lookup_account(u128 id) {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  const auto* found = s.ws.accounts.find(id);
  if (found == nullptr) return std::optional<account>{};
  const auto due = s.due(s.now());
  const auto* after = due.accounts.find(id);
  return std::optional<account>{after != nullptr ? *after : *found};
}

result<std::optional<transfer>> memory_engine::lookup_transfer(u128 id) {
  std::lock_guard lock(state_->mutex);
  const auto* found = state_->ws.transfers.find(id);
  if (found == nullptr) return std::optional<transfer>{};
  return std::optional<transfer>{found->value};
}

result<balance> memory_engine::balance_as_of(u128 account_id, as_of point) {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  auto count = s.resolve(point);
  if (!count) return count.error();
  auto recorded = s.balance_at(account_id, *count);
  if (!recorded) return recorded;
  if (const auto present = s.present_at(point, *count)) {
    const auto due = s.due(*present);
    if (const auto* after = due.accounts.find(account_id); after != nullptr) return after->balances;
  }
  return recorded;
}

result<statement_page> memory_engine::statement(u128 account_id, const statement_query& query) {
  if (query.limit == 0) return errc::invalid_argument;
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  const auto* found = s.history.find(account_id);
  if (found == nullptr) return errc::unknown_account;
  const auto& sequences = *found;
  auto it = std::lower_bound(sequences.begin(), sequences.end(), query.from_sequence);
  statement_page page;
  for (; it != sequences.end() && *it <= query.to_sequence; ++it) {
    if (page.lines.size() == query.limit) {
      page.next_sequence = *it;
      return page;
    }
    page.lines.push_back(s.line(account_id, *it));
  }
  // Expiries due but not recorded come next, at the sequences they will be recorded at.
  detail::append_due_lines(page, s.due(s.now()), s.entries.size(), account_id, query);
  return page;
}

result<trial_balance> memory_engine::trial_balance_as_of(std::uint32_t ledger_id, as_of point) {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  auto count = s.resolve(point);
  if (!count) return count.error();
  trial_balance out;
  out.ledger = ledger_id;
  const auto found = s.ledger_accounts.find(ledger_id);
  if (found == s.ledger_accounts.end()) return out;
  for (const auto id : found->second) {
    auto b = s.balance_at(id, *count);
    if (!b) continue;  // created after the point
    ++out.accounts;
    out.totals.debits_pending += b->debits_pending;
    out.totals.debits_posted += b->debits_posted;
    out.totals.credits_pending += b->credits_pending;
    out.totals.credits_posted += b->credits_posted;
  }
  if (const auto present = s.present_at(point, *count)) {
    for (const auto& a : s.due(*present).entries) {
      if (a.entry.transfer.ledger != ledger_id) continue;
      out.totals.debits_pending -= a.entry.transfer.amount;
      out.totals.credits_pending -= a.entry.transfer.amount;
    }
  }
  return out;
}

result<std::uint64_t> memory_engine::journal_size() {
  std::lock_guard lock(state_->mutex);
  return state_->entries.size();
}

result<encoded_entry> memory_engine::entry(std::uint64_t sequence) {
  std::lock_guard lock(state_->mutex);
  if (sequence >= state_->entries.size()) return errc::sequence_out_of_range;
  return state_->entries[sequence];
}

result<tree_hash> memory_engine::root(std::uint64_t tree_size) {
  std::lock_guard lock(state_->mutex);
  return state_->tree.root(tree_size);
}

result<std::vector<tree_hash>> memory_engine::inclusion_proof(std::uint64_t sequence,
                                                              std::uint64_t tree_size) {
  std::lock_guard lock(state_->mutex);
  return state_->tree.inclusion_proof(sequence, tree_size);
}

result<std::vector<tree_hash>> memory_engine::consistency_proof(std::uint64_t old_size,
                                                                std::uint64_t new_size) {
  std::lock_guard lock(state_->mutex);
  return state_->tree.consistency_proof(old_size, new_size);
}

}  // namespace keel::ledger
