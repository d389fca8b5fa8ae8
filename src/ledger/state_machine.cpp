#include "state_machine.hpp"

#include <keel/core/assert.hpp>

#include <algorithm>
#include <bit>

namespace keel::ledger::detail {

namespace {

bool add_overflows(u128 a, u128 b) noexcept {
  return a > u128_max - b;
}

// a - b, or 0 when b >= a.
u128 saturating_sub(u128 a, u128 b) noexcept {
  return a > b ? a - b : 0;
}

// a + b, or u128_max when it would overflow.
u128 saturating_add(u128 a, u128 b) noexcept {
  return add_overflows(a, b) ? u128_max : a + b;
}

constexpr std::uint64_t ns_per_second = 1'000'000'000ULL;

// A closing transfer that is voided or expires gives the accounts it closed back.
void reopen_closed_by(const transfer& pending, account& debit, account& credit) noexcept {
  constexpr auto open = static_cast<std::uint16_t>(~account_flags::closed);
  if ((pending.flags & transfer_flags::closing_debit) != 0) debit.flags &= open;
  if ((pending.flags & transfer_flags::closing_credit) != 0) credit.flags &= open;
}

}  // namespace

std::uint64_t state_machine::next_timestamp(std::uint64_t now) noexcept {
  // Strictly increasing even when the clock stalls or steps back: timestamps order the journal.
  KEEL_ASSERT(ws_.last_timestamp < UINT64_MAX, "the journal's timestamps ran out");
  ws_.last_timestamp = std::max(now, ws_.last_timestamp + 1);
  return ws_.last_timestamp;
}

void state_machine::save_account(const account& a) {
  if (logging_)
    undo_.push_back({undo_entry::account_state, a.id, a.balances, a.flags, pending_state::none, 0});
}

void state_machine::rollback(std::uint64_t saved_timestamp) {
  // Newest first. (A reverse iterator loop: std::views::reverse over this vector does not
  // compile with clang 14 on libstdc++ 12, and keel builds with both.)
  // NOLINTNEXTLINE(modernize-loop-convert)
  for (auto entry = undo_.rbegin(); entry != undo_.rend(); ++entry) {
    const auto& change = *entry;
    switch (change.kind) {
      case undo_entry::account_state: {
        auto& a = ws_.accounts.at(change.id);
        a.balances = change.old_balance;
        a.flags = change.old_flags;
        break;
      }
      case undo_entry::account_insert:
        ws_.accounts.erase(change.id);
        break;
      case undo_entry::transfer_insert: {
        auto found = ws_.transfers.find(change.id);
        if (found != nullptr && found->expires_at != 0) ws_.expiries.erase({found->expires_at, change.id});
        ws_.transfers.erase(change.id);
        break;
      }
      case undo_entry::transfer_state: {
        auto& record = ws_.transfers.at(change.id);
        record.state = change.old_state;
        if (change.expires_at != 0) ws_.expiries.emplace(change.expires_at, change.id);
        break;
      }
    }
  }
  undo_.clear();
  ws_.last_timestamp = saved_timestamp;
}

template <class Result, class Event, class Apply>
void state_machine::run_batch(std::span<const Event> batch, std::vector<Result>& results,
                              std::vector<applied_entry>& out, Apply apply) {
  const auto first = results.size();
  results.resize(first + batch.size(), Result::ok);
  std::size_t i = 0;
  while (i < batch.size()) {
    if ((batch[i].flags & 1U) == 0U) {  // bit 0 is `linked` for accounts and transfers
      results[first + i] = apply(batch[i]);
      ++i;
      continue;
    }
    // A linked chain runs to the first event without the flag; all of it commits or none.
    std::size_t end = i;
    while (end < batch.size() && (batch[end].flags & 1U) != 0U) ++end;
    if (end == batch.size()) {  // the batch ends inside the chain
      for (std::size_t j = i; j + 1 < end; ++j) results[first + j] = Result::linked_event_failed;
      results[first + end - 1] = Result::linked_event_chain_open;
      i = end;
      continue;
    }
    const auto saved_out = out.size();
    const auto saved_timestamp = ws_.last_timestamp;
    KEEL_ASSERT(undo_.empty(), "the undo log is empty between linked chains");
    logging_ = true;
    std::size_t failed = end + 1;
    for (std::size_t j = i; j <= end; ++j) {
      const auto r = apply(batch[j]);
      if (r != Result::ok) {
        failed = j;
        results[first + j] = r;
        break;
      }
    }
    logging_ = false;
    if (failed <= end) {
      rollback(saved_timestamp);
      out.resize(saved_out);
      for (std::size_t j = i; j <= end; ++j)
        if (j != failed) results[first + j] = Result::linked_event_failed;
    }
    undo_.clear();
    i = end + 1;
  }
}

// ---------------------------------------------------------------- accounts

void state_machine::create_accounts(std::span<const account> batch, std::uint64_t now,
                                    std::vector<account_result>& results, std::vector<applied_entry>& out) {
  run_batch<account_result>(batch, results, out,
                            [&](const account& a) { return create_account(a, now, out); });
}

account_result state_machine::create_account(const account& in, std::uint64_t now,
                                             std::vector<applied_entry>& out) {
  using r = account_result;
  if (in.timestamp != 0) return r::timestamp_must_be_zero;
  if ((in.flags & ~account_flags::all) != 0) return r::reserved_flag;
  if (in.id == 0) return r::id_must_not_be_zero;
  if (in.id == u128_max) return r::id_must_not_be_int_max;
  if ((in.flags & account_flags::debits_must_not_exceed_credits) != 0 &&
      (in.flags & account_flags::credits_must_not_exceed_debits) != 0)
    return r::flags_are_mutually_exclusive;
  if (in.balances != balance{}) return r::balances_must_be_zero;
  if (in.ledger == 0) return r::ledger_must_not_be_zero;
  if (in.code == 0) return r::code_must_not_be_zero;
  if (const auto* found = ws_.accounts.find(in.id); found != nullptr) {
    const auto& e = *found;
    if ((e.flags & ~account_flags::linked) != (in.flags & ~account_flags::linked))
      return r::exists_with_different_flags;
    if (e.user_data != in.user_data) return r::exists_with_different_user_data;
    if (e.ledger != in.ledger) return r::exists_with_different_ledger;
    if (e.code != in.code) return r::exists_with_different_code;
    return r::exists;
  }
  account stored = in;
  stored.timestamp = next_timestamp(now);
  ws_.accounts.emplace(stored.id, stored);
  if (logging_) undo_.push_back({undo_entry::account_insert, stored.id, {}, 0, pending_state::none, 0});
  auto& entry = out.emplace_back();
  entry.entry.kind = entry_kind::account_created;
  entry.entry.account = stored;
  return r::ok;
}

// ---------------------------------------------------------------- transfers

void append_due_lines(statement_page& page, const expiry_projection& due, std::uint64_t first_sequence,
                      u128 account_id, const statement_query& query) {
  for (std::size_t i = 0; i < due.entries.size(); ++i) {
    const auto& a = due.entries[i];
    const auto sequence = first_sequence + i;
    if (a.debit_id != account_id && a.credit_id != account_id) continue;
    if (sequence < query.from_sequence) continue;
    if (sequence > query.to_sequence) break;
    if (page.lines.size() == query.limit) {
      page.next_sequence = sequence;
      break;
    }
    page.lines.push_back({sequence, a.entry.transfer.timestamp, a.entry.transfer.id,
                          a.debit_id == account_id ? a.debit_after : a.credit_after});
  }
}

expiry_projection project_expiries(const working_set& ws, std::uint64_t now) {
  expiry_projection p;
  p.last_timestamp = ws.last_timestamp;
  const auto account_after = [&](u128 id) -> account& {
    if (auto* seen = p.accounts.find(id); seen != nullptr) return *seen;
    return *p.accounts.emplace(id, ws.accounts.at(id)).first;
  };
  for (const auto& [expires_at, id] : ws.expiries) {
    if (expires_at > now) break;
    const auto* found = ws.transfers.find(id);
    if (found == nullptr || found->state != pending_state::pending) continue;
    const auto& pending = found->value;
    KEEL_ASSERT(found->expires_at == expires_at, "the expiry queue agrees with the transfer it names");
    auto& dr = account_after(pending.debit_account_id);
    auto& cr = account_after(pending.credit_account_id);
    KEEL_ASSERT(dr.id == pending.debit_account_id && cr.id == pending.credit_account_id);
    KEEL_ASSERT(dr.balances.debits_pending >= pending.amount,
                "an expiring hold is still reserved on its debit");
    KEEL_ASSERT(cr.balances.credits_pending >= pending.amount,
                "an expiring hold is still reserved on its credit");
    dr.balances.debits_pending -= pending.amount;
    cr.balances.credits_pending -= pending.amount;
    reopen_closed_by(pending, dr, cr);
    p.last_timestamp = std::max(expires_at, p.last_timestamp + 1);
    auto& entry = p.entries.emplace_back();
    entry.entry.kind = entry_kind::pending_expired;
    auto& t = entry.entry.transfer;
    t.id = pending.id;
    t.pending_id = pending.id;
    t.debit_account_id = pending.debit_account_id;
    t.credit_account_id = pending.credit_account_id;
    t.amount = pending.amount;
    t.ledger = pending.ledger;
    t.code = pending.code;
    t.flags = transfer_flags::void_pending;
    t.timestamp = p.last_timestamp;
    entry.debit_id = dr.id;
    entry.credit_id = cr.id;
    entry.debit_after = dr.balances;
    entry.credit_after = cr.balances;
  }
  return p;
}

void state_machine::expire(std::uint64_t now, std::vector<applied_entry>& out) {
  if (ws_.expiries.empty() || ws_.expiries.begin()->first > now) return;
  auto projection = project_expiries(ws_, now);
  projection.accounts.for_each([&](u128 id, const account& after) { ws_.accounts.at(id) = after; });
  for (const auto& e : projection.entries)
    ws_.transfers.at(e.entry.transfer.id).state = pending_state::expired;
  // Everything due is gone from the queue, including entries of transfers no longer pending.
  ws_.expiries.erase(ws_.expiries.begin(), ws_.expiries.upper_bound({now, u128_max}));
  ws_.last_timestamp = projection.last_timestamp;
  out.insert(out.end(), projection.entries.begin(), projection.entries.end());
}

void state_machine::create_transfers(std::span<const transfer> batch, std::uint64_t now,
                                     std::vector<transfer_result>& results, std::vector<applied_entry>& out) {
  run_batch<transfer_result>(batch, results, out,
                             [&](const transfer& t) { return create_transfer(t, now, out); });
}

namespace {

// Idempotency: the same id again is `exists` only when every field the caller gave matches.
transfer_result compare_existing(const transfer& in, const transfer& e) {
  using r = transfer_result;
  const bool two_phase_follow_up =
      (in.flags & (transfer_flags::post_pending | transfer_flags::void_pending)) != 0;
  if ((e.flags & ~transfer_flags::linked) != (in.flags & ~transfer_flags::linked))
    return r::exists_with_different_flags;
  if (e.pending_id != in.pending_id) return r::exists_with_different_pending_id;
  if (e.timeout != in.timeout) return r::exists_with_different_timeout;
  if (two_phase_follow_up) {
    // post/void may leave accounts, ledger, code and amount zero: they come from the pending one.
    if (in.debit_account_id != 0 && e.debit_account_id != in.debit_account_id)
      return r::exists_with_different_debit_account_id;
    if (in.credit_account_id != 0 && e.credit_account_id != in.credit_account_id)
      return r::exists_with_different_credit_account_id;
    if (in.amount != 0 && e.amount != in.amount) return r::exists_with_different_amount;
    if (in.user_data != 0 && e.user_data != in.user_data) return r::exists_with_different_user_data;
    if (in.ledger != 0 && e.ledger != in.ledger) return r::exists_with_different_ledger;
    if (in.code != 0 && e.code != in.code) return r::exists_with_different_code;
    return r::exists;
  }
  if (e.debit_account_id != in.debit_account_id) return r::exists_with_different_debit_account_id;
  if (e.credit_account_id != in.credit_account_id) return r::exists_with_different_credit_account_id;
  const bool balancing =
      (in.flags & (transfer_flags::balancing_debit | transfer_flags::balancing_credit)) != 0;
  // A balancing transfer stored what the limit allowed: asking for at least that is the same.
  if (balancing ? in.amount < e.amount : in.amount != e.amount) return r::exists_with_different_amount;
  if (e.user_data != in.user_data) return r::exists_with_different_user_data;
  if (e.ledger != in.ledger) return r::exists_with_different_ledger;
  if (e.code != in.code) return r::exists_with_different_code;
  return r::exists;
}

}  // namespace

transfer_result state_machine::create_transfer(const transfer& in, std::uint64_t now,
                                               std::vector<applied_entry>& out) {
  using r = transfer_result;
  namespace f = transfer_flags;
  if (in.timestamp != 0) return r::timestamp_must_be_zero;
  if ((in.flags & ~f::all) != 0) return r::reserved_flag;
  if (in.id == 0) return r::id_must_not_be_zero;
  if (in.id == u128_max) return r::id_must_not_be_int_max;
  const auto phase = in.flags & (f::pending | f::post_pending | f::void_pending);
  const bool balancing = (in.flags & (f::balancing_debit | f::balancing_credit)) != 0;
  if (std::popcount(static_cast<unsigned>(phase)) > 1 ||
      (balancing && (in.flags & (f::post_pending | f::void_pending)) != 0))
    return r::flags_are_mutually_exclusive;
  const bool closing = (in.flags & (f::closing_debit | f::closing_credit)) != 0;
  if (closing && (in.flags & f::pending) == 0) return r::closing_transfer_must_be_pending;
  if ((in.flags & (f::post_pending | f::void_pending)) != 0) return post_or_void(in, now, out);

  if (in.debit_account_id == 0) return r::debit_account_id_must_not_be_zero;
  if (in.debit_account_id == u128_max) return r::debit_account_id_must_not_be_int_max;
  if (in.credit_account_id == 0) return r::credit_account_id_must_not_be_zero;
  if (in.credit_account_id == u128_max) return r::credit_account_id_must_not_be_int_max;
  if (in.debit_account_id == in.credit_account_id) return r::accounts_must_be_different;
  if (in.pending_id != 0) return r::pending_id_must_be_zero;
  if ((in.flags & f::pending) == 0 && in.timeout != 0) return r::timeout_reserved_for_pending_transfer;
  if (in.amount == 0 && !closing) return r::amount_must_not_be_zero;
  if (in.ledger == 0) return r::ledger_must_not_be_zero;
  if (in.code == 0) return r::code_must_not_be_zero;

  auto* const dr_it = ws_.accounts.find(in.debit_account_id);
  if (dr_it == nullptr) return r::debit_account_not_found;
  auto* const cr_it = ws_.accounts.find(in.credit_account_id);
  if (cr_it == nullptr) return r::credit_account_not_found;
  auto& dr = *dr_it;
  auto& cr = *cr_it;
  if (dr.ledger != cr.ledger) return r::accounts_must_have_the_same_ledger;
  if (in.ledger != dr.ledger) return r::transfer_must_have_the_same_ledger_as_accounts;
  if (const auto* found = ws_.transfers.find(in.id); found != nullptr)
    return compare_existing(in, found->value);
  if ((dr.flags & account_flags::closed) != 0) return r::debit_account_already_closed;
  if ((cr.flags & account_flags::closed) != 0) return r::credit_account_already_closed;

  auto& db = dr.balances;
  auto& cb = cr.balances;
  u128 amount = in.amount;
  if ((in.flags & f::balancing_debit) != 0) {
    amount = std::min(amount,
                      saturating_sub(db.credits_posted, saturating_add(db.debits_posted, db.debits_pending)));
    if (amount == 0) return r::exceeds_credits;
  }
  if ((in.flags & f::balancing_credit) != 0) {
    amount = std::min(
        amount, saturating_sub(cb.debits_posted, saturating_add(cb.credits_posted, cb.credits_pending)));
    if (amount == 0) return r::exceeds_debits;
  }
  const bool pending = (in.flags & f::pending) != 0;
  if (pending) {
    if (add_overflows(db.debits_pending, amount)) return r::overflows_debits_pending;
    if (add_overflows(cb.credits_pending, amount)) return r::overflows_credits_pending;
  } else {
    if (add_overflows(db.debits_posted, amount)) return r::overflows_debits_posted;
    if (add_overflows(cb.credits_posted, amount)) return r::overflows_credits_posted;
  }
  if (add_overflows(db.debits_pending, db.debits_posted) ||
      add_overflows(db.debits_pending + db.debits_posted, amount))
    return r::overflows_debits;
  if (add_overflows(cb.credits_pending, cb.credits_posted) ||
      add_overflows(cb.credits_pending + cb.credits_posted, amount))
    return r::overflows_credits;
  const auto timestamp = std::max(now, ws_.last_timestamp + 1);  // what next_timestamp will give
  std::uint64_t expires_at = 0;
  if (pending && in.timeout != 0) {
    const auto timeout_ns = static_cast<std::uint64_t>(in.timeout) * ns_per_second;
    if (timestamp > UINT64_MAX - timeout_ns) return r::overflows_timeout;
    expires_at = timestamp + timeout_ns;
  }
  if ((dr.flags & account_flags::debits_must_not_exceed_credits) != 0 &&
      db.debits_pending + db.debits_posted + amount > db.credits_posted)
    return r::exceeds_credits;
  if ((cr.flags & account_flags::credits_must_not_exceed_debits) != 0 &&
      cb.credits_pending + cb.credits_posted + amount > cb.debits_posted)
    return r::exceeds_debits;

  save_account(dr);
  save_account(cr);
  if (pending) {
    db.debits_pending += amount;
    cb.credits_pending += amount;
  } else {
    db.debits_posted += amount;
    cb.credits_posted += amount;
  }
  if ((in.flags & f::closing_debit) != 0) dr.flags |= account_flags::closed;
  if ((in.flags & f::closing_credit) != 0) cr.flags |= account_flags::closed;
  transfer stored = in;
  stored.amount = amount;
  stored.timestamp = next_timestamp(now);
  ws_.transfers.emplace(
      stored.id, transfer_record{stored, pending ? pending_state::pending : pending_state::none, expires_at});
  if (expires_at != 0) ws_.expiries.emplace(expires_at, stored.id);
  if (logging_) undo_.push_back({undo_entry::transfer_insert, stored.id, {}, 0, pending_state::none, 0});

  auto& entry = out.emplace_back();
  entry.entry.kind = entry_kind::transfer;
  entry.entry.transfer = stored;
  entry.debit_id = dr.id;
  entry.credit_id = cr.id;
  entry.debit_after = db;
  entry.credit_after = cb;
  return r::ok;
}

transfer_result state_machine::post_or_void(const transfer& in, std::uint64_t now,
                                            std::vector<applied_entry>& out) {
  using r = transfer_result;
  namespace f = transfer_flags;
  const bool post = (in.flags & f::post_pending) != 0;
  if (in.pending_id == 0) return r::pending_id_must_not_be_zero;
  if (in.pending_id == u128_max) return r::pending_id_must_not_be_int_max;
  if (in.pending_id == in.id) return r::pending_id_must_be_different;
  if (in.timeout != 0) return r::timeout_reserved_for_pending_transfer;
  if (const auto* found = ws_.transfers.find(in.id); found != nullptr)
    return compare_existing(in, found->value);
  auto* const p_it = ws_.transfers.find(in.pending_id);
  if (p_it == nullptr) return r::pending_transfer_not_found;
  auto& p = *p_it;
  if ((p.value.flags & f::pending) == 0) return r::pending_transfer_not_pending;
  if (in.debit_account_id != 0 && in.debit_account_id != p.value.debit_account_id)
    return r::pending_transfer_has_different_debit_account_id;
  if (in.credit_account_id != 0 && in.credit_account_id != p.value.credit_account_id)
    return r::pending_transfer_has_different_credit_account_id;
  if (in.ledger != 0 && in.ledger != p.value.ledger) return r::pending_transfer_has_different_ledger;
  if (in.code != 0 && in.code != p.value.code) return r::pending_transfer_has_different_code;
  if (post && in.amount > p.value.amount) return r::exceeds_pending_transfer_amount;
  if (!post && in.amount != 0 && in.amount != p.value.amount) return r::pending_transfer_has_different_amount;
  switch (p.state) {
    case pending_state::posted:
      return r::pending_transfer_already_posted;
    case pending_state::voided:
      return r::pending_transfer_already_voided;
    case pending_state::expired:
      return r::pending_transfer_expired;
    default:
      break;
  }
  const auto timestamp = std::max(now, ws_.last_timestamp + 1);
  if (p.expires_at != 0 && p.expires_at <= timestamp) return r::pending_transfer_expired;

  auto& dr = ws_.accounts.at(p.value.debit_account_id);
  auto& cr = ws_.accounts.at(p.value.credit_account_id);
  if (post && (dr.flags & account_flags::closed) != 0) return r::debit_account_already_closed;
  if (post && (cr.flags & account_flags::closed) != 0) return r::credit_account_already_closed;
  auto& db = dr.balances;
  auto& cb = cr.balances;
  const u128 posted = post ? (in.amount == 0 ? p.value.amount : in.amount) : 0;
  if (add_overflows(db.debits_posted, posted)) return r::overflows_debits_posted;
  if (add_overflows(cb.credits_posted, posted)) return r::overflows_credits_posted;

  KEEL_ASSERT(dr.id == p.value.debit_account_id && cr.id == p.value.credit_account_id);
  KEEL_ASSERT(db.debits_pending >= p.value.amount, "a pending debit is released once");
  KEEL_ASSERT(cb.credits_pending >= p.value.amount, "a pending credit is released once");
  KEEL_ASSERT(posted <= p.value.amount, "a post never exceeds its hold");
  save_account(dr);
  save_account(cr);
  db.debits_pending -= p.value.amount;
  cb.credits_pending -= p.value.amount;
  db.debits_posted += posted;
  cb.credits_posted += posted;
  if (!post) reopen_closed_by(p.value, dr, cr);
  if (logging_) undo_.push_back({undo_entry::transfer_state, p.value.id, {}, 0, p.state, p.expires_at});
  if (p.expires_at != 0) ws_.expiries.erase({p.expires_at, p.value.id});
  p.state = post ? pending_state::posted : pending_state::voided;

  transfer stored;
  stored.id = in.id;
  stored.debit_account_id = p.value.debit_account_id;
  stored.credit_account_id = p.value.credit_account_id;
  stored.amount = post ? posted : p.value.amount;
  stored.pending_id = p.value.id;
  stored.user_data = in.user_data != 0 ? in.user_data : p.value.user_data;
  stored.ledger = p.value.ledger;
  stored.code = p.value.code;
  stored.flags = in.flags;
  stored.timestamp = next_timestamp(now);
  ws_.transfers.emplace(stored.id, transfer_record{stored, pending_state::none, 0});
  if (logging_) undo_.push_back({undo_entry::transfer_insert, stored.id, {}, 0, pending_state::none, 0});

  auto& entry = out.emplace_back();
  entry.entry.kind = entry_kind::transfer;
  entry.entry.transfer = stored;
  entry.debit_id = dr.id;
  entry.credit_id = cr.id;
  entry.debit_after = db;
  entry.credit_after = cb;
  return r::ok;
}

}  // namespace keel::ledger::detail
