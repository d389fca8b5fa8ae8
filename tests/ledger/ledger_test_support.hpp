#pragma once
// A deliberately simple reference model of the ledger's rules (maps, whole-state copies for
// linked chains, a scan for expiries) and a seeded scenario generator, for property tests.
#include <keel/core/clock.hpp>
#include <keel/ledger/engine.hpp>
#include <keel/ledger/types.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include <support/random.hpp>

namespace keel::ledger::test {

class reference_model {
 public:
  std::vector<account_result> create_accounts(const std::vector<account>& batch, std::uint64_t now) {
    std::vector<account_result> out;
    for (const auto& a : batch) {
      if (s_.accounts.count(a.id) != 0) {
        out.push_back(account_result::exists);
        continue;
      }
      s_.accounts[a.id] = {a, {}};
      tick(now);
      ++s_.size;
      out.push_back(account_result::ok);
    }
    return out;
  }

  std::vector<transfer_result> create_transfers(const std::vector<transfer>& batch, std::uint64_t now) {
    expire(s_, now);  // first: every pending transfer whose expiry has passed
    std::vector<transfer_result> out(batch.size(), transfer_result::ok);
    for (std::size_t i = 0; i < batch.size();) {
      std::size_t end = i;
      while (end < batch.size() && (batch[end].flags & transfer_flags::linked) != 0) ++end;
      if (end == batch.size()) {
        for (std::size_t j = i; j < end; ++j) out[j] = transfer_result::linked_event_failed;
        out[end - 1] = transfer_result::linked_event_chain_open;
        break;
      }
      const state saved = s_;
      for (std::size_t j = i; j <= end; ++j) {
        out[j] = apply(batch[j], now);
        if (out[j] != transfer_result::ok) {
          s_ = saved;
          for (std::size_t k = i; k <= end; ++k)
            if (k != j) out[k] = transfer_result::linked_event_failed;
          break;
        }
      }
      i = end + 1;
    }
    snapshot();
    return out;
  }

  /// The expirer's pass: records what is due by `now`. @returns how many it recorded.
  std::uint64_t expire_pending(std::uint64_t now) {
    const auto before = s_.size;
    expire(s_, now);
    snapshot();
    return s_.size - before;
  }

  /// Balances read at `now`: holds past their timeout are released whether recorded or not.
  [[nodiscard]] std::map<u128, balance> balances(std::uint64_t now) const {
    auto read = s_;
    expire(read, now);
    std::map<u128, balance> out;
    for (const auto& [id, a] : read.accounts) out[id] = a.b;
    return out;
  }
  [[nodiscard]] std::map<u128, std::uint16_t> flags(std::uint64_t now) const {
    auto read = s_;
    expire(read, now);
    std::map<u128, std::uint16_t> out;
    for (const auto& [id, a] : read.accounts) out[id] = a.a.flags;
    return out;
  }
  [[nodiscard]] std::uint64_t journal_size() const { return s_.size; }
  [[nodiscard]] const std::map<std::uint64_t, std::map<u128, balance>>& history() const { return history_; }

 private:
  struct acct {
    account a;
    balance b;
  };
  struct xfer {
    transfer t;
    pending_state state = pending_state::none;
    std::uint64_t expires_at = 0;
  };
  struct state {
    std::map<u128, acct> accounts;
    std::map<u128, xfer> transfers;
    std::uint64_t last = 0;
    std::uint64_t size = 0;
  };

  std::uint64_t tick(std::uint64_t now) { return s_.last = std::max(now, s_.last + 1); }

  // Every pending transfer whose expiry is <= now, in (expiry, id) order, each an entry stamped
  // with its expiry time (kept after the entry before it).
  static void expire(state& s, std::uint64_t now) {
    std::vector<std::pair<std::uint64_t, u128>> due;
    for (const auto& [id, x] : s.transfers)
      if (x.state == pending_state::pending && x.expires_at != 0 && x.expires_at <= now)
        due.emplace_back(x.expires_at, id);
    std::sort(due.begin(), due.end());
    for (const auto& [at, id] : due) {
      auto& x = s.transfers[id];
      x.state = pending_state::expired;
      s.accounts[x.t.debit_account_id].b.debits_pending -= x.t.amount;
      s.accounts[x.t.credit_account_id].b.credits_pending -= x.t.amount;
      auto reopen_side = [&s](u128 account_id) {
        auto& flags = s.accounts[account_id].a.flags;
        flags = static_cast<std::uint16_t>(flags & ~account_flags::closed);
      };
      if ((x.t.flags & transfer_flags::closing_debit) != 0) reopen_side(x.t.debit_account_id);
      if ((x.t.flags & transfer_flags::closing_credit) != 0) reopen_side(x.t.credit_account_id);
      s.last = std::max(at, s.last + 1);
      ++s.size;
    }
  }

  void snapshot() {
    if (s_.size == 0) return;
    auto& at = history_[s_.size - 1];
    for (const auto& [id, a] : s_.accounts) at[id] = a.b;
  }
  bool closed(u128 id) { return (s_.accounts[id].a.flags & account_flags::closed) != 0; }
  void set_closed(u128 id, bool on) {
    auto& flags = s_.accounts[id].a.flags;
    flags = static_cast<std::uint16_t>(on ? flags | account_flags::closed : flags & ~account_flags::closed);
  }
  void reopen(const transfer& closing) {
    if ((closing.flags & transfer_flags::closing_debit) != 0) set_closed(closing.debit_account_id, false);
    if ((closing.flags & transfer_flags::closing_credit) != 0) set_closed(closing.credit_account_id, false);
  }
  static bool fits(u128 a, u128 b) { return a <= u128_max - b; }

  static transfer_result compare(const transfer& in, const transfer& e) {
    using r = transfer_result;
    const std::uint16_t not_linked = static_cast<std::uint16_t>(~transfer_flags::linked);
    if ((e.flags & not_linked) != (in.flags & not_linked)) return r::exists_with_different_flags;
    if (e.pending_id != in.pending_id) return r::exists_with_different_pending_id;
    if (e.timeout != in.timeout) return r::exists_with_different_timeout;
    if ((in.flags & (transfer_flags::post_pending | transfer_flags::void_pending)) != 0) {
      if (in.amount != 0 && e.amount != in.amount) return r::exists_with_different_amount;
      if (in.user_data != 0 && e.user_data != in.user_data) return r::exists_with_different_user_data;
      return r::exists;
    }
    if (e.debit_account_id != in.debit_account_id) return r::exists_with_different_debit_account_id;
    if (e.credit_account_id != in.credit_account_id) return r::exists_with_different_credit_account_id;
    const bool balancing =
        (in.flags & (transfer_flags::balancing_debit | transfer_flags::balancing_credit)) != 0;
    if (balancing ? in.amount < e.amount : in.amount != e.amount) return r::exists_with_different_amount;
    if (e.user_data != in.user_data) return r::exists_with_different_user_data;
    if (e.ledger != in.ledger) return r::exists_with_different_ledger;
    if (e.code != in.code) return r::exists_with_different_code;
    return r::exists;
  }

  transfer_result apply(const transfer& t, std::uint64_t now) {
    using r = transfer_result;
    const bool post = (t.flags & transfer_flags::post_pending) != 0;
    const bool void_ = (t.flags & transfer_flags::void_pending) != 0;
    const bool pending = (t.flags & transfer_flags::pending) != 0;
    const std::uint64_t ts = std::max(now, s_.last + 1);
    const bool closing = (t.flags & (transfer_flags::closing_debit | transfer_flags::closing_credit)) != 0;
    if (closing && !pending) return r::closing_transfer_must_be_pending;
    if (post || void_) {
      if (t.pending_id == 0) return r::pending_id_must_not_be_zero;
      if (t.pending_id == t.id) return r::pending_id_must_be_different;
      if (s_.transfers.count(t.id) != 0) return compare(t, s_.transfers[t.id].t);
      if (s_.transfers.count(t.pending_id) == 0) return r::pending_transfer_not_found;
      auto& p = s_.transfers[t.pending_id];
      if ((p.t.flags & transfer_flags::pending) == 0) return r::pending_transfer_not_pending;
      if (post && t.amount > p.t.amount) return r::exceeds_pending_transfer_amount;
      if (void_ && t.amount != 0 && t.amount != p.t.amount) return r::pending_transfer_has_different_amount;
      if (p.state == pending_state::posted) return r::pending_transfer_already_posted;
      if (p.state == pending_state::voided) return r::pending_transfer_already_voided;
      if (p.state == pending_state::expired) return r::pending_transfer_expired;
      if (p.expires_at != 0 && p.expires_at <= ts) return r::pending_transfer_expired;
      if (post && closed(p.t.debit_account_id)) return r::debit_account_already_closed;
      if (post && closed(p.t.credit_account_id)) return r::credit_account_already_closed;
      if (void_) reopen(p.t);
      auto& dr = s_.accounts[p.t.debit_account_id].b;
      auto& cr = s_.accounts[p.t.credit_account_id].b;
      const u128 amount = post ? (t.amount == 0 ? p.t.amount : t.amount) : 0;
      dr.debits_pending -= p.t.amount;
      cr.credits_pending -= p.t.amount;
      dr.debits_posted += amount;
      cr.credits_posted += amount;
      p.state = post ? pending_state::posted : pending_state::voided;
      transfer stored = t;
      stored.debit_account_id = p.t.debit_account_id;
      stored.credit_account_id = p.t.credit_account_id;
      stored.amount = post ? amount : p.t.amount;
      stored.user_data = t.user_data != 0 ? t.user_data : p.t.user_data;
      stored.ledger = p.t.ledger;
      stored.code = p.t.code;
      stored.timestamp = tick(now);
      s_.transfers[t.id] = {stored, pending_state::none, 0};
      ++s_.size;
      return r::ok;
    }
    if (t.debit_account_id == t.credit_account_id) return r::accounts_must_be_different;
    if (!pending && t.timeout != 0) return r::timeout_reserved_for_pending_transfer;
    if (t.amount == 0 && !closing) return r::amount_must_not_be_zero;
    if (s_.accounts.count(t.debit_account_id) == 0) return r::debit_account_not_found;
    if (s_.accounts.count(t.credit_account_id) == 0) return r::credit_account_not_found;
    auto& da = s_.accounts[t.debit_account_id];
    auto& ca = s_.accounts[t.credit_account_id];
    if (da.a.ledger != ca.a.ledger) return r::accounts_must_have_the_same_ledger;
    if (t.ledger != da.a.ledger) return r::transfer_must_have_the_same_ledger_as_accounts;
    if (s_.transfers.count(t.id) != 0) return compare(t, s_.transfers[t.id].t);
    if (closed(t.debit_account_id)) return r::debit_account_already_closed;
    if (closed(t.credit_account_id)) return r::credit_account_already_closed;
    auto& dr = da.b;
    auto& cr = ca.b;
    u128 amount = t.amount;
    if ((t.flags & transfer_flags::balancing_debit) != 0) {
      const u128 used = dr.debits_posted + dr.debits_pending;
      const u128 room = dr.credits_posted > used ? dr.credits_posted - used : 0;
      amount = std::min(amount, room);
      if (amount == 0) return r::exceeds_credits;
    }
    if ((t.flags & transfer_flags::balancing_credit) != 0) {
      const u128 used = cr.credits_posted + cr.credits_pending;
      const u128 room = cr.debits_posted > used ? cr.debits_posted - used : 0;
      amount = std::min(amount, room);
      if (amount == 0) return r::exceeds_debits;
    }
    if (!fits(dr.debits_pending + dr.debits_posted, amount)) return r::overflows_debits;
    if (!fits(cr.credits_pending + cr.credits_posted, amount)) return r::overflows_credits;
    if ((da.a.flags & account_flags::debits_must_not_exceed_credits) != 0 &&
        dr.debits_pending + dr.debits_posted + amount > dr.credits_posted)
      return r::exceeds_credits;
    if ((ca.a.flags & account_flags::credits_must_not_exceed_debits) != 0 &&
        cr.credits_pending + cr.credits_posted + amount > cr.debits_posted)
      return r::exceeds_debits;
    (pending ? dr.debits_pending : dr.debits_posted) += amount;
    (pending ? cr.credits_pending : cr.credits_posted) += amount;
    if ((t.flags & transfer_flags::closing_debit) != 0) set_closed(t.debit_account_id, true);
    if ((t.flags & transfer_flags::closing_credit) != 0) set_closed(t.credit_account_id, true);
    transfer stored = t;
    stored.amount = amount;
    stored.timestamp = tick(now);
    const std::uint64_t expires =
        pending && t.timeout != 0 ? stored.timestamp + t.timeout * 1'000'000'000ULL : 0;
    s_.transfers[t.id] = {stored, pending ? pending_state::pending : pending_state::none, expires};
    ++s_.size;
    return r::ok;
  }

  state s_;
  std::map<std::uint64_t, std::map<u128, balance>> history_;
};

/// Random accounts (two ledgers, some with limits) and transfers (plain, pending with and
/// without timeouts, full and partial posts, voids, balancing, linked chains, unknown accounts,
/// zero amounts, resubmissions with the same and with a different amount).
class scenario {
 public:
  explicit scenario(std::mt19937_64& rng) : rng_(rng) {}

  std::uint64_t now(const keel::clock& c) const {
    return static_cast<std::uint64_t>(c.now().time_since_epoch().count());
  }

  std::vector<account> accounts() {
    std::vector<account> out;
    for (u128 id = 1; id <= account_count; ++id) {
      account a;
      a.id = id;
      a.ledger = id <= account_count - 2 ? 1 : 2;
      a.code = 1;
      const auto pick = pick_int(0, 5);
      a.flags = pick == 0   ? account_flags::debits_must_not_exceed_credits
                : pick == 1 ? account_flags::credits_must_not_exceed_debits
                            : std::uint16_t{0};
      out.push_back(a);
    }
    return out;
  }

  std::vector<transfer> transfers(std::size_t n) {
    std::vector<transfer> out;
    for (std::size_t i = 0; i < n; ++i) {
      transfer t;
      const auto kind = pick_int(0, 99);
      if (kind < 8 && !sent_.empty()) {
        t = sent_[static_cast<std::size_t>(pick_int(0, static_cast<int>(sent_.size()) - 1))];
        if (pick_int(0, 2) == 0) t.amount += 1;  // same id, different amount
        t.flags &= static_cast<std::uint16_t>(~transfer_flags::linked);
      } else if (kind < 30 && !pendings_.empty()) {
        t.id = next_id_++;
        t.pending_id =
            pendings_[static_cast<std::size_t>(pick_int(0, static_cast<int>(pendings_.size()) - 1))];
        const bool post = pick_int(0, 2) != 0;
        t.flags = post ? transfer_flags::post_pending : transfer_flags::void_pending;
        t.amount = post ? static_cast<u128>(pick_int(0, 60)) : 0;
      } else {
        t.id = next_id_++;
        t.debit_account_id = static_cast<u128>(pick_int(1, account_count + 1));  // +1: unknown
        t.credit_account_id = static_cast<u128>(pick_int(1, account_count));
        t.amount = static_cast<u128>(pick_int(0, 50));  // 0: rejected
        t.ledger = t.debit_account_id > account_count - 2 ? 2 : 1;
        t.code = 1;
        const auto f = pick_int(0, 9);
        if (f <= 2) {
          t.flags = transfer_flags::pending;
          if (pick_int(0, 1) == 0) t.timeout = static_cast<std::uint32_t>(pick_int(1, 4));
          pendings_.push_back(t.id);
        } else if (f == 3) {
          t.flags = transfer_flags::balancing_debit;
        } else if (f == 4) {
          t.flags = transfer_flags::balancing_credit;
        } else if (f == 5 && pick_int(0, 3) == 0) {
          // Closing transfers, now and then without `pending` (rejected): voids reopen.
          t.flags = pick_int(0, 1) == 0 ? transfer_flags::closing_debit : transfer_flags::closing_credit;
          if (pick_int(0, 5) != 0) {
            t.flags |= transfer_flags::pending;
            pendings_.push_back(t.id);
          }
        }
      }
      if (pick_int(0, 4) == 0) t.flags |= transfer_flags::linked;
      sent_.push_back(t);
      out.push_back(t);
    }
    return out;
  }

 private:
  static constexpr int account_count = 10;
  int pick_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  std::mt19937_64& rng_;
  u128 next_id_ = 1;
  std::vector<transfer> sent_;
  std::vector<u128> pendings_;
};

/// After a batch of the property tests: now and then the expirer's pass, then reads a while
/// later (before anything records the expiries that fell due meanwhile) checked against the model.
inline void expire_now_and_then_and_read(engine& e, reference_model& model, scenario& gen,
                                         keel::manual_clock& clock) {
  if (keel::test::uniform<int>(0, 3) == 0) {
    clock.advance(std::chrono::milliseconds(keel::test::uniform<int>(0, 1500)));
    CHECK(e.expire_pending().value() == model.expire_pending(gen.now(clock)));
  }
  clock.advance(std::chrono::milliseconds(keel::test::uniform<int>(0, 1500)));
  const auto read_at = gen.now(clock);
  for (const auto& [id, expected] : model.balances(read_at)) {
    CHECK(e.lookup_account(id).value()->balances == expected);
    CHECK(e.balance_as_of(id, as_of::now()).value() == expected);
  }
  for (const auto& [id, expected] : model.flags(read_at))
    CHECK(e.lookup_account(id).value()->flags == expected);
  CHECK(e.journal_size().value() == model.journal_size());
}

/// Polls `done` until it holds or 20 s have passed. @returns whether it held.
template <class Condition>
bool eventually(Condition done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // between looks at the state
  }
  return true;
}

/// An idle ledger (no writes after a hold): reads right after its timeout show it released as of
/// its expiry, before anything is recorded; then `record_expiries()` (which makes the engine's
/// expirer run and waits for it) appends the expiry as the next batch would, and the journal and
/// reads before the expiry still show the hold pending. The same checks for every engine.
template <class RecordExpiries>
void check_idle_expiry(engine& e, keel::manual_clock& clock, RecordExpiries record_expiries) {
  const auto make_account = [](u128 id) {
    return account{
        .id = id, .user_data = 0, .ledger = 1, .code = 1, .flags = 0, .timestamp = 0, .balances = {}};
  };
  const std::vector<account> accounts{make_account(1), make_account(2), make_account(3)};
  REQUIRE(e.create_accounts(accounts).value() == std::vector<account_result>(3, account_result::ok));
  transfer hold;
  hold.id = 10;
  hold.debit_account_id = 1;
  hold.credit_account_id = 2;
  hold.amount = 30;
  hold.ledger = 1;
  hold.code = 1;
  hold.flags = transfer_flags::pending | transfer_flags::closing_debit;
  hold.timeout = 5;
  transfer untimed = hold;  // never expires: stays pending throughout
  untimed.id = 11;
  untimed.debit_account_id = 3;
  untimed.flags = transfer_flags::pending;
  untimed.timeout = 0;
  const std::vector<transfer> batch{hold, untimed};
  REQUIRE(e.create_transfers(batch).value() == std::vector<transfer_result>(2, transfer_result::ok));
  const auto hold_at = e.lookup_transfer(hold.id).value().value().timestamp;
  const auto expires_at = hold_at + 5'000'000'000ULL;
  const auto recorded = e.journal_size().value();
  REQUIRE(recorded == 5);
  CHECK((e.lookup_account(1).value()->flags & account_flags::closed) != 0);

  const balance held{.debits_pending = 30, .debits_posted = 0, .credits_pending = 0, .credits_posted = 0};
  const balance released{};
  const balance credit_side{
      .debits_pending = 0, .debits_posted = 0, .credits_pending = 30, .credits_posted = 0};
  clock.advance(std::chrono::seconds(4));
  CHECK(e.lookup_account(1).value()->balances == held);  // not due yet
  clock.advance(std::chrono::seconds(2));

  // Right after the timeout, with no write since the hold: released on every read.
  CHECK(e.lookup_account(1).value()->balances == released);
  CHECK(e.lookup_account(2).value()->balances == credit_side);               // the untimed hold only
  CHECK((e.lookup_account(1).value()->flags & account_flags::closed) == 0);  // reopened
  CHECK(e.balance_as_of(1, as_of::now()).value() == released);
  CHECK(e.balance_as_of(1, as_of::at_time(expires_at)).value() == released);
  CHECK(e.balance_as_of(1, as_of::at_time(expires_at - 1)).value() == held);
  const auto totals = e.trial_balance_as_of(1, as_of::now()).value().totals;
  CHECK(totals.debits_pending == 30);  // the untimed hold
  CHECK(totals.credits_pending == 30);
  const auto before = e.statement(1, {}).value();
  REQUIRE(before.lines.size() == 2);
  const statement_line expiry_line{recorded, expires_at, hold.id, released};
  CHECK(before.lines[1] == expiry_line);
  CHECK(e.journal_size().value() == recorded);  // reads record nothing

  record_expiries();
  REQUIRE(e.journal_size().value() == recorded + 1);
  const auto entry = decode(e.entry(recorded).value()).value();
  CHECK(entry.kind == entry_kind::pending_expired);
  CHECK(entry.transfer.pending_id == hold.id);
  CHECK(entry.transfer.amount == 30);
  CHECK(entry.timestamp() == expires_at);  // as of the expiry, not of when it was recorded
  // What was read before the record is what the journal now says.
  CHECK(e.statement(1, {}).value().lines == before.lines);
  CHECK(e.balance_as_of(1, as_of::at_sequence(recorded)).value() == released);
  CHECK(e.balance_as_of(1, as_of::at_sequence(recorded - 1)).value() == held);
  CHECK(e.balance_as_of(1, as_of::at_time(expires_at - 1)).value() == held);
  CHECK(e.balance_as_of(1, as_of::at_time(expires_at)).value() == released);
  CHECK(e.lookup_account(1).value()->balances == released);
  CHECK(e.lookup_account(3).value()->balances == held);
  // Recording again finds nothing new.
  record_expiries();
  CHECK(e.journal_size().value() == recorded + 1);
}

}  // namespace keel::ledger::test
