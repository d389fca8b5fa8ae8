// keel::ledger's rules on the in-memory engine: result codes, idempotency, linked chains,
// two-phase transfers, limits, overflow, point-in-time queries, the journal and its proofs,
// and a property test against a simple reference model.
#include <keel/ledger.hpp>

#include "../../src/ledger/u128_numeric.hpp"
#include "ledger_test_support.hpp"

#include <doctest/doctest.h>

#include <map>

#include <support/random.hpp>
#include <support/result.hpp>

using namespace keel::ledger;
using keel::ledger::test::reference_model;

namespace {

constexpr std::uint64_t second = 1'000'000'000ULL;

account make_account(u128 id, std::uint16_t flags = 0, std::uint32_t ledger_id = 1) {
  return {.id = id,
          .user_data = 0,
          .ledger = ledger_id,
          .code = 10,
          .flags = flags,
          .timestamp = 0,
          .balances = {}};
}

transfer make_transfer(u128 id, u128 debit, u128 credit, u128 amount, std::uint16_t flags = 0) {
  transfer t;
  t.id = id;
  t.debit_account_id = debit;
  t.credit_account_id = credit;
  t.amount = amount;
  t.ledger = 1;
  t.code = 1;
  t.flags = flags;
  return t;
}

transfer_result one(memory_engine& e, const transfer& t) {
  auto r = e.create_transfers(std::span(&t, 1)).value();
  return r.at(0);
}

std::string name(transfer_result r) {
  return std::string(to_string(r));
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("u128 decimal text round trips and rejects anything else") {
    CHECK(to_string(u128_max) == "340282366920938463463374607431768211455");
    CHECK(parse_u128("340282366920938463463374607431768211455").value() == u128_max);
    CHECK_FALSE(parse_u128("340282366920938463463374607431768211456"));
    CHECK_FALSE(parse_u128(""));
    CHECK_FALSE(parse_u128("-1"));
    CHECK_FALSE(parse_u128("1.5"));
    CHECK_FALSE(parse_u128(" 1"));
    CHECK(parse_u128("0").value() == 0);
    CHECK(to_string(parse_u128("1234567890123456789012345").value()) == "1234567890123456789012345");
  }

  TEST_CASE("errors: keel.ledger's own category, apart from core's and pg's") {
    const keel::error_code ec = errc::unknown_account;
    CHECK(ec.category().name() == std::string("keel.ledger"));
    CHECK(&ec.category() == &ledger_category());
    CHECK(ec == errc::unknown_account);
    CHECK(ec != keel::error_code(ec.value(), keel::core_category()));  // the number alone is not the error
    CHECK(ec.message().find("no such account") != std::string::npos);
    const keel::result<u128> parsed = parse_u128("x");
    REQUIRE_FALSE(parsed);
    CHECK(parsed.error() == errc::invalid_amount);
  }

  TEST_CASE("accounts: validation, idempotency and result codes") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    std::vector<account> batch{make_account(1), make_account(0), make_account(u128_max), make_account(2)};
    batch.push_back(make_account(
        3, account_flags::debits_must_not_exceed_credits | account_flags::credits_must_not_exceed_debits));
    batch.push_back(make_account(4));
    batch.back().ledger = 0;
    batch.push_back(make_account(5));
    batch.back().code = 0;
    batch.push_back(make_account(6, 1U << 10));
    const auto r = e.create_accounts(batch).value();
    CHECK(r == std::vector<account_result>{
                   account_result::ok, account_result::id_must_not_be_zero,
                   account_result::id_must_not_be_int_max, account_result::ok,
                   account_result::flags_are_mutually_exclusive, account_result::ledger_must_not_be_zero,
                   account_result::code_must_not_be_zero, account_result::reserved_flag});
    auto again = make_account(1);
    CHECK(e.create_accounts(std::span(&again, 1)).value()[0] == account_result::exists);
    again.code = 11;
    CHECK(e.create_accounts(std::span(&again, 1)).value()[0] == account_result::exists_with_different_code);
    again = make_account(1, account_flags::history);
    CHECK(e.create_accounts(std::span(&again, 1)).value()[0] == account_result::exists_with_different_flags);
    CHECK(e.journal_size().value() == 2);
    std::vector<account> too_many(max_batch + 1, make_account(9));
    CHECK(e.create_accounts(too_many).error() == errc::batch_too_large);
  }

  TEST_CASE("transfers: single phase, validation codes, idempotency") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    std::vector<account> accounts{make_account(1), make_account(2), make_account(3, 0, 2)};
    REQUIRE(e.create_accounts(accounts).value() == std::vector<account_result>(3, account_result::ok));

    CHECK(name(one(e, make_transfer(1, 1, 2, 100))) == "ok");
    CHECK(name(one(e, make_transfer(1, 1, 2, 100))) == "exists");
    CHECK(name(one(e, make_transfer(1, 1, 2, 101))) == "exists_with_different_amount");
    auto t = make_transfer(1, 1, 2, 100);
    t.user_data = 7;
    CHECK(name(one(e, t)) == "exists_with_different_user_data");
    CHECK(name(one(e, make_transfer(1, 2, 1, 100))) == "exists_with_different_debit_account_id");
    CHECK(name(one(e, make_transfer(2, 1, 1, 5))) == "accounts_must_be_different");
    CHECK(name(one(e, make_transfer(2, 1, 2, 0))) == "amount_must_not_be_zero");
    CHECK(name(one(e, make_transfer(2, 1, 99, 5))) == "credit_account_not_found");
    CHECK(name(one(e, make_transfer(2, 99, 2, 5))) == "debit_account_not_found");
    CHECK(name(one(e, make_transfer(2, 1, 3, 5))) == "accounts_must_have_the_same_ledger");
    CHECK(name(one(e, make_transfer(0, 1, 2, 5))) == "id_must_not_be_zero");
    t = make_transfer(2, 1, 2, 5);
    t.timeout = 5;
    CHECK(name(one(e, t)) == "timeout_reserved_for_pending_transfer");
    t = make_transfer(2, 1, 2, 5);
    t.timestamp = 1;
    CHECK(name(one(e, t)) == "timestamp_must_be_zero");
    t = make_transfer(2, 1, 2, 5);
    t.ledger = 2;
    CHECK(name(one(e, t)) == "transfer_must_have_the_same_ledger_as_accounts");
    CHECK(name(one(e, make_transfer(2, 1, 2, 5, transfer_flags::pending | transfer_flags::void_pending))) ==
          "flags_are_mutually_exclusive");

    const auto a1 = e.lookup_account(1).value().value();
    const auto a2 = e.lookup_account(2).value().value();
    CHECK(a1.balances.debits_posted == 100);
    CHECK(a2.balances.credits_posted == 100);
    // Only the accounts and the one committed transfer are journaled.
    CHECK(e.journal_size().value() == 4);
    const auto stored = e.lookup_transfer(1).value().value();
    CHECK(stored.timestamp > a2.timestamp);
  }

  TEST_CASE("limits, balancing transfers and u128 overflow") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    std::vector<account> accounts{
        make_account(1, account_flags::debits_must_not_exceed_credits), make_account(2),
        make_account(3, account_flags::credits_must_not_exceed_debits), make_account(4)};
    REQUIRE(e.create_accounts(accounts).value()[3] == account_result::ok);
    CHECK(name(one(e, make_transfer(1, 1, 2, 1))) == "exceeds_credits");
    CHECK(name(one(e, make_transfer(1, 2, 1, 50))) == "ok");
    CHECK(name(one(e, make_transfer(2, 1, 2, 51))) == "exceeds_credits");
    CHECK(name(one(e, make_transfer(2, 1, 2, 80, transfer_flags::balancing_debit))) == "ok");
    CHECK(e.lookup_transfer(2).value()->amount == 50);
    CHECK(name(one(e, make_transfer(2, 1, 2, 60, transfer_flags::balancing_debit))) == "exists");
    CHECK(name(one(e, make_transfer(2, 1, 2, 40, transfer_flags::balancing_debit))) ==
          "exists_with_different_amount");
    CHECK(name(one(e, make_transfer(3, 1, 2, 1, transfer_flags::balancing_debit))) == "exceeds_credits");
    CHECK(name(one(e, make_transfer(4, 4, 3, 1))) == "exceeds_debits");
    CHECK(name(one(e, make_transfer(4, 3, 4, 30))) == "ok");
    CHECK(name(one(e, make_transfer(5, 4, 3, 100, transfer_flags::balancing_credit))) == "ok");
    CHECK(e.lookup_transfer(5).value()->amount == 30);

    // u128 overflow is detected, never wrapped.
    std::vector<account> big{make_account(10), make_account(11)};
    REQUIRE(e.create_accounts(big).value()[1] == account_result::ok);
    CHECK(name(one(e, make_transfer(10, 10, 11, u128_max - 5))) == "ok");
    CHECK(name(one(e, make_transfer(11, 10, 11, 6))) == "overflows_debits_posted");
    CHECK(name(one(e, make_transfer(11, 10, 11, 6, transfer_flags::pending))) == "overflows_debits");
    CHECK(name(one(e, make_transfer(11, 12, 11, 6))) == "debit_account_not_found");
    std::vector<account> more{make_account(12)};
    REQUIRE(e.create_accounts(more).value()[0] == account_result::ok);
    CHECK(name(one(e, make_transfer(11, 12, 11, 6))) == "overflows_credits_posted");
    CHECK(name(one(e, make_transfer(11, 12, 11, 6, transfer_flags::pending))) == "overflows_credits");
    CHECK(name(one(e, make_transfer(11, 12, 11, 5))) == "ok");
    const auto b10 = e.lookup_account(10).value()->balances;
    CHECK(b10.debits_posted == u128_max - 5);
    CHECK(b10.debits_pending == 0);
    CHECK(e.lookup_account(11).value()->balances.credits_posted == u128_max);
  }

  TEST_CASE("linked chains commit or fail as one") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    std::vector<account> accounts{make_account(1), make_account(2),
                                  make_account(3, account_flags::debits_must_not_exceed_credits)};
    REQUIRE(e.create_accounts(accounts).value()[2] == account_result::ok);
    const auto size = e.journal_size().value();
    std::vector<transfer> chain{make_transfer(1, 1, 2, 10, transfer_flags::linked),
                                make_transfer(2, 2, 1, 5, transfer_flags::linked), make_transfer(3, 3, 1, 1),
                                make_transfer(4, 1, 2, 7)};
    const auto r = e.create_transfers(chain).value();
    CHECK(r == std::vector<transfer_result>{transfer_result::linked_event_failed,
                                            transfer_result::linked_event_failed,
                                            transfer_result::exceeds_credits, transfer_result::ok});
    CHECK(e.lookup_transfer(1).value() == std::nullopt);
    CHECK(e.lookup_account(1).value()->balances.debits_posted == 7);
    CHECK(e.journal_size().value() == size + 1);

    std::vector<transfer> open{make_transfer(5, 1, 2, 1), make_transfer(6, 1, 2, 1, transfer_flags::linked),
                               make_transfer(7, 1, 2, 1, transfer_flags::linked)};
    CHECK(e.create_transfers(open).value() ==
          std::vector<transfer_result>{transfer_result::ok, transfer_result::linked_event_failed,
                                       transfer_result::linked_event_chain_open});
    std::vector<transfer> good{make_transfer(8, 1, 2, 1, transfer_flags::linked), make_transfer(9, 2, 1, 1)};
    CHECK(e.create_transfers(good).value() == std::vector<transfer_result>(2, transfer_result::ok));
    // A chain whose second event duplicates the first id fails whole: ids are unique.
    std::vector<transfer> dup{make_transfer(10, 1, 2, 1, transfer_flags::linked), make_transfer(10, 1, 2, 1)};
    CHECK(e.create_transfers(dup).value() ==
          std::vector<transfer_result>{transfer_result::linked_event_failed, transfer_result::exists});
    CHECK(e.lookup_transfer(10).value() == std::nullopt);
  }

  TEST_CASE("two-phase: pending, partial post, void, already posted, expiry") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    std::vector<account> accounts{make_account(1), make_account(2)};
    REQUIRE(e.create_accounts(accounts).value()[1] == account_result::ok);

    CHECK(name(one(e, make_transfer(1, 1, 2, 100, transfer_flags::pending))) == "ok");
    auto b1 = e.lookup_account(1).value()->balances;
    CHECK(b1.debits_pending == 100);
    auto post = make_transfer(2, 0, 0, 101, transfer_flags::post_pending);
    post.pending_id = 1;
    post.ledger = 0;
    post.code = 0;
    CHECK(name(one(e, post)) == "exceeds_pending_transfer_amount");
    post.amount = 60;
    CHECK(name(one(e, post)) == "ok");
    CHECK(name(one(e, post)) == "exists");
    b1 = e.lookup_account(1).value()->balances;
    CHECK(b1.debits_pending == 0);
    CHECK(b1.debits_posted == 60);
    auto again = post;
    again.id = 3;
    CHECK(name(one(e, again)) == "pending_transfer_already_posted");
    auto void_it = make_transfer(4, 0, 0, 0, transfer_flags::void_pending);
    void_it.pending_id = 1;
    CHECK(name(one(e, void_it)) == "pending_transfer_already_posted");
    void_it.pending_id = 99;
    CHECK(name(one(e, void_it)) == "pending_transfer_not_found");
    void_it.pending_id = 2;
    CHECK(name(one(e, void_it)) == "pending_transfer_not_pending");

    // Void a pending transfer.
    CHECK(name(one(e, make_transfer(5, 1, 2, 40, transfer_flags::pending))) == "ok");
    void_it.pending_id = 5;
    void_it.amount = 39;
    CHECK(name(one(e, void_it)) == "pending_transfer_has_different_amount");
    void_it.amount = 0;
    CHECK(name(one(e, void_it)) == "ok");
    CHECK(e.lookup_account(2).value()->balances.credits_pending == 0);
    void_it.id = 6;
    CHECK(name(one(e, void_it)) == "pending_transfer_already_voided");

    // A pending transfer with a timeout voids itself once the time has passed.
    auto timed = make_transfer(7, 1, 2, 30, transfer_flags::pending);
    timed.timeout = 10;
    CHECK(name(one(e, timed)) == "ok");
    CHECK(e.lookup_account(1).value()->balances.debits_pending == 30);
    clock.advance(std::chrono::seconds(11));
    auto late = make_transfer(8, 0, 0, 0, transfer_flags::post_pending);
    late.pending_id = 7;
    CHECK(name(one(e, late)) == "pending_transfer_expired");
    CHECK(e.lookup_account(1).value()->balances.debits_pending == 0);
    // The expiry is a journal entry of its own.
    const auto last = decode(e.entry(e.journal_size().value() - 1).value()).value();
    CHECK(last.kind == entry_kind::pending_expired);
    CHECK(last.transfer.pending_id == 7);
    auto huge = make_transfer(9, 1, 2, 1, transfer_flags::pending);
    huge.timeout = UINT32_MAX;
    clock.set(keel::timestamp{std::chrono::nanoseconds(UINT64_MAX - second)});
    CHECK(name(one(e, huge)) == "overflows_timeout");
  }

  TEST_CASE("memory engine: a hold past its timeout is released on reads at once; the expirer records it") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    keel::ledger::test::check_idle_expiry(e, clock, [&] { (void)e.expire_pending().value(); });
  }

  TEST_CASE("memory engine: expire_every records a due expiry on the engine's own thread") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock, .capacity = 0, .expire_every = std::chrono::milliseconds(1)});
    std::vector<account> accounts{make_account(1), make_account(2)};
    REQUIRE(e.create_accounts(accounts).value()[1] == account_result::ok);
    auto hold = make_transfer(1, 1, 2, 30, transfer_flags::pending);
    hold.timeout = 1;
    REQUIRE(name(one(e, hold)) == "ok");
    REQUIRE(e.journal_size().value() == 3);
    clock.advance(std::chrono::seconds(2));
    REQUIRE(keel::ledger::test::eventually([&] { return e.journal_size().value() == 4; }));
    CHECK(decode(e.entry(3).value()).value().kind == entry_kind::pending_expired);
    CHECK(e.lookup_account(1).value()->balances == balance{});
  }

  TEST_CASE("closing accounts: a pending closing transfer closes, its void or expiry reopens") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    std::vector<account> accounts{make_account(1), make_account(2), make_account(3)};
    REQUIRE(e.create_accounts(accounts).value()[2] == account_result::ok);
    CHECK(name(one(e, make_transfer(1, 1, 2, 50))) == "ok");
    const auto closed = [&](u128 id) {
      return (e.lookup_account(id).value()->flags & account_flags::closed) != 0;
    };

    // Closing needs a two-phase transfer (so it can be undone); its amount may be zero.
    CHECK(name(one(e, make_transfer(2, 1, 3, 0, transfer_flags::closing_debit))) ==
          "closing_transfer_must_be_pending");
    CHECK(name(one(e, make_transfer(2, 1, 3, 0, transfer_flags::pending))) == "amount_must_not_be_zero");
    CHECK_FALSE(closed(1));
    CHECK(name(one(e, make_transfer(3, 1, 3, 0, transfer_flags::pending | transfer_flags::closing_debit))) ==
          "ok");
    CHECK(closed(1));
    CHECK_FALSE(closed(3));

    // A closed account takes no new transfers on either side and no posts; voids still pass.
    CHECK(name(one(e, make_transfer(4, 1, 2, 5))) == "debit_account_already_closed");
    CHECK(name(one(e, make_transfer(4, 2, 1, 5))) == "credit_account_already_closed");
    CHECK(name(one(e, make_transfer(4, 1, 3, 1, transfer_flags::pending | transfer_flags::closing_debit))) ==
          "debit_account_already_closed");
    auto post = make_transfer(5, 0, 0, 0, transfer_flags::post_pending);
    post.pending_id = 3;
    CHECK(name(one(e, post)) == "debit_account_already_closed");
    CHECK(name(one(e, make_transfer(6, 2, 3, 5))) == "ok");  // other accounts are unaffected

    // Voiding the closing transfer reopens the account.
    auto reopen = make_transfer(7, 0, 0, 0, transfer_flags::void_pending);
    reopen.pending_id = 3;
    CHECK(name(one(e, reopen)) == "ok");
    CHECK_FALSE(closed(1));
    CHECK(name(one(e, make_transfer(8, 1, 2, 5))) == "ok");

    // A failed linked chain leaves the account open: its flag change is rolled back too.
    std::vector<transfer> chain{
        make_transfer(9, 3, 2, 1,
                      transfer_flags::pending | transfer_flags::closing_credit | transfer_flags::linked),
        make_transfer(10, 1, 99, 1)};
    const auto chain_results = e.create_transfers(chain).value();
    CHECK(name(chain_results[0]) == "linked_event_failed");
    CHECK(name(chain_results[1]) == "credit_account_not_found");
    CHECK_FALSE(closed(2));

    // A closing transfer with a timeout reopens the account when it expires.
    auto timed = make_transfer(11, 3, 2, 0, transfer_flags::pending | transfer_flags::closing_credit);
    timed.timeout = 5;
    CHECK(name(one(e, timed)) == "ok");
    CHECK(closed(2));
    CHECK(name(one(e, make_transfer(12, 1, 2, 1))) == "credit_account_already_closed");
    clock.advance(std::chrono::seconds(6));
    CHECK(name(one(e, make_transfer(12, 1, 2, 1))) == "ok");  // the expiry ran first
    CHECK_FALSE(closed(2));
    // An account created closed stays closed.
    const auto born_closed = make_account(4, account_flags::closed);
    REQUIRE(e.create_accounts(std::span(&born_closed, 1)).value()[0] == account_result::ok);
    CHECK(name(one(e, make_transfer(13, 4, 2, 1))) == "debit_account_already_closed");
  }

  TEST_CASE("memory engine: a preallocated capacity changes nothing but speed, and is not a limit") {
    keel::manual_clock clock;
    memory_engine sized({.clock = &clock, .capacity = 100});
    memory_engine plain({.clock = &clock});
    std::vector<account> accounts{make_account(1), make_account(2)};
    REQUIRE(sized.create_accounts(accounts).value() == plain.create_accounts(accounts).value());
    for (u128 id = 1; id <= 300; ++id) {  // three times the capacity
      const auto t = make_transfer(id, 1 + id % 2, 2 - id % 2, id);
      REQUIRE(one(sized, t) == one(plain, t));
    }
    CHECK(sized.journal_size().value() == 302);
    CHECK(sized.root(302).value() == plain.root(302).value());
    CHECK(sized.lookup_account(1).value()->balances == plain.lookup_account(1).value()->balances);
    CHECK(sized.lookup_transfer(250).value()->amount == 250);
  }

  TEST_CASE("point in time: balance as of sequence and timestamp, statement pages, trial balance") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    std::vector<account> accounts{make_account(1), make_account(2, account_flags::history)};
    REQUIRE(e.create_accounts(accounts).value()[1] == account_result::ok);
    std::vector<std::uint64_t> times;
    for (int i = 1; i <= 5; ++i) {
      clock.advance(std::chrono::seconds(1));
      REQUIRE(name(one(e, make_transfer(static_cast<u128>(i), 1, 2, static_cast<u128>(i) * 10))) == "ok");
      times.push_back(e.lookup_transfer(static_cast<u128>(i)).value()->timestamp);
    }
    // Entries 0,1 are the accounts; transfer i is entry i+1.
    CHECK(e.balance_as_of(2, as_of::at_sequence(1)).value().credits_posted == 0);
    CHECK(e.balance_as_of(2, as_of::at_sequence(3)).value().credits_posted == 30);
    CHECK(e.balance_as_of(2, as_of::at_time(times[2])).value().credits_posted == 60);
    CHECK(e.balance_as_of(2, as_of::at_time(times[2] - 1)).value().credits_posted == 30);
    CHECK(e.balance_as_of(2, as_of::now()).value().credits_posted == 150);
    CHECK(e.balance_as_of(2, as_of::at_sequence(0)).error() == errc::unknown_account);
    CHECK(e.balance_as_of(99, as_of::now()).error() == errc::unknown_account);
    CHECK(e.balance_as_of(2, as_of::at_sequence(7)).error() == errc::sequence_out_of_range);

    auto page = e.statement(1, {.from_sequence = 0, .to_sequence = UINT64_MAX, .limit = 2}).value();
    REQUIRE(page.lines.size() == 2);
    CHECK(page.lines[0].transfer_id == 1);
    CHECK(page.lines[1].after.debits_posted == 30);
    REQUIRE(page.next_sequence);
    page =
        e.statement(1, {.from_sequence = *page.next_sequence, .to_sequence = UINT64_MAX, .limit = 2}).value();
    CHECK(page.lines[0].transfer_id == 3);
    page =
        e.statement(1, {.from_sequence = *page.next_sequence, .to_sequence = UINT64_MAX, .limit = 2}).value();
    CHECK(page.lines.size() == 1);
    CHECK(page.lines[0].after.debits_posted == 150);
    CHECK_FALSE(page.next_sequence);
    CHECK(e.statement(1, {.from_sequence = 0, .to_sequence = UINT64_MAX, .limit = 0}).error() ==
          errc::invalid_argument);

    for (std::uint64_t s = 0; s < e.journal_size().value(); ++s) {
      const auto tb = e.trial_balance_as_of(1, as_of::at_sequence(s)).value();
      CHECK(tb.balanced());
    }
    const auto tb = e.trial_balance_as_of(1, as_of::now()).value();
    CHECK(tb.accounts == 2);
    CHECK(tb.totals.debits_posted == 150);
  }

  TEST_CASE("journal: canonical entries rebuild the root; proofs and checkpoints verify") {
    keel::manual_clock clock;
    memory_engine e({.clock = &clock});
    std::vector<account> accounts{make_account(1), make_account(2)};
    REQUIRE(e.create_accounts(accounts).value()[1] == account_result::ok);
    for (int i = 1; i <= 20; ++i) REQUIRE(name(one(e, make_transfer(static_cast<u128>(i), 1, 2, 1))) == "ok");
    const auto size = e.journal_size().value();
    merkle_tree rebuilt;
    for (std::uint64_t s = 0; s < size; ++s) {
      const auto bytes = e.entry(s).value();
      const auto decoded = decode(bytes).value();
      CHECK(encode(decoded) == bytes);
      rebuilt.append(leaf_hash(bytes));
    }
    CHECK(rebuilt.root() == e.root(size).value());

    const auto key = keel::ed25519_private_key::generate();
    const auto old_cp = e.make_checkpoint(key).value();
    REQUIRE(name(one(e, make_transfer(100, 2, 1, 3))) == "ok");
    const auto new_cp = e.make_checkpoint(key).value();
    CHECK(old_cp.verify(key.public_key()));
    CHECK(new_cp.verify(key.public_key()));
    CHECK(new_cp.tree_size == old_cp.tree_size + 1);
    const auto consistency = to_bytes(e.consistency_proof(old_cp.tree_size, new_cp.tree_size).value());
    CHECK(verify_consistency(old_cp.tree_size, new_cp.tree_size, old_cp.root, new_cp.root, consistency));
    const auto bytes = e.entry(5).value();
    const auto proof = to_bytes(e.inclusion_proof(5, new_cp.tree_size).value());
    CHECK(verify_inclusion(5, new_cp.tree_size, leaf_hash(bytes), proof, new_cp.root));
    auto altered = bytes;
    altered[40] ^= 1;  // a changed amount no longer proves
    CHECK_FALSE(verify_inclusion(5, new_cp.tree_size, leaf_hash(altered), proof, new_cp.root));
    altered = bytes;
    altered[0] = 2;
    CHECK(decode(altered).error() == errc::corrupt_entry);
  }

  TEST_CASE(
      "journal: the encoding sits at the documented offsets; short or garbled bytes are corrupt_entry") {
    journal_entry t;
    t.kind = entry_kind::transfer;
    t.transfer = make_transfer(u128_max - 1, 3, 4, (static_cast<u128>(1) << 100U) + 7);
    t.transfer.pending_id = 9;
    t.transfer.user_data = 10;
    t.transfer.timeout = 0x01020304;
    t.transfer.code = 0x0506;
    t.transfer.flags = 0x0708;
    t.transfer.timestamp = 0x1112131415161718ULL;
    const auto bytes = encode(t);
    // Offsets from docs/ledger.md's table, written out here rather than taken from the code.
    CHECK(bytes[0] == 1);
    CHECK(bytes[1] == 2);
    CHECK(bytes[2] == 0x11);
    CHECK(bytes[9] == 0x18);
    CHECK(bytes[10] == 0xff);
    CHECK(bytes[25] == 0xfe);      // id, u128_max - 1
    CHECK(bytes[41] == 3);         // debit_account_id
    CHECK(bytes[57] == 4);         // credit_account_id
    CHECK(bytes[58 + 3] == 0x10);  // amount: bit 100 is in byte 3 of 16
    CHECK(bytes[73] == 7);
    CHECK(bytes[89] == 9);    // pending_id
    CHECK(bytes[105] == 10);  // user_data
    CHECK(bytes[106] == 1);   // timeout
    CHECK(bytes[109] == 4);
    CHECK(bytes[113] == 1);  // ledger
    CHECK(bytes[114] == 5);  // code
    CHECK(bytes[116] == 7);  // flags
    CHECK(bytes[117] == 8);
    CHECK(decode(bytes).value() == t);

    journal_entry a;
    a.kind = entry_kind::account_created;
    a.account = make_account(12, 0, 0x0a0b0c0d);
    a.account.user_data = 13;
    a.account.timestamp = 99;
    const auto account_bytes = encode(a);
    CHECK(account_bytes[25] == 12);
    CHECK(account_bytes[41] == 13);
    CHECK(account_bytes[42] == 0x0a);
    CHECK(account_bytes[45] == 0x0d);
    CHECK(account_bytes[47] == 10);  // code
    CHECK(decode(account_bytes).value() == a);

    for (const auto& whole : {bytes, account_bytes}) {
      for (std::size_t cut = 0; cut < whole.size(); ++cut) {
        INFO("cut at " << cut);
        CHECK(decode(keel::bytes_view(whole).first(cut)).error() == errc::corrupt_entry);
      }
      keel::bytes longer(whole.begin(), whole.end());
      longer.push_back(0);
      CHECK(decode(longer).error() == errc::corrupt_entry);
    }
    auto padded = account_bytes;
    padded[100] = 1;  // the padding of an account entry must be zero
    CHECK(decode(padded).error() == errc::corrupt_entry);
    auto unknown_kind = bytes;
    unknown_kind[1] = 4;
    CHECK(decode(unknown_kind).error() == errc::corrupt_entry);
  }

  TEST_CASE("u128 numeric codec: round trips, and rejects short, fractional, negative or oversized input") {
    using codec = keel::pg::codec<detail::u128_numeric>;
    for (const u128 v :
         {u128{0}, u128{1}, u128{9999}, u128{10000}, u128{100'000'000}, u128_max - 1, u128_max}) {
      keel::bytes raw;
      REQUIRE(codec::encode({v}, raw));
      INFO(to_string(v));
      CHECK(codec::decode(keel::pg::oids::numeric, raw).value().value == v);
      for (std::size_t cut = 0; cut < raw.size(); ++cut)
        CHECK(codec::decode(keel::pg::oids::numeric, keel::bytes_view(raw).first(cut)).error() ==
              keel::pg::errc::bad_value);
      raw.push_back(0);
      CHECK(codec::decode(keel::pg::oids::numeric, raw).error() == keel::pg::errc::bad_value);
    }
    const auto numeric = [](std::initializer_list<std::uint16_t> words) {
      keel::bytes raw;
      keel::byte_writer w(raw);
      for (const auto word : words) w.be(word);
      return codec::decode(keel::pg::oids::numeric, raw);
    };
    CHECK(numeric({1, 1, 0, 0, 7}).value().value == 70000);  // trailing zero groups left out
    CHECK(numeric({2, 0, 0, 4, 12, 5000}).error() == keel::pg::errc::bad_value);  // 12.5
    CHECK(numeric({2, 0, 0, 4, 12, 0}).value().value == 12);                      // 12.0000
    CHECK(numeric({1, 0, 0x4000, 0, 5}).error() == keel::pg::errc::bad_value);    // -5
    CHECK(numeric({1, 0, 0, 0, 10000}).error() == keel::pg::errc::bad_value);     // not a digit
    CHECK(numeric({1, 10, 0, 0, 1}).error() == keel::pg::errc::bad_value);        // 10^40 > 2^128
  }

  TEST_CASE("property: random batches match a reference model; invariants hold at every sequence") {
    std::map<std::string, int> seen;  // the generator must reach the interesting outcomes
    for (int run = 0; run < 6; ++run) {
      keel::manual_clock clock;
      memory_engine e({.clock = &clock});
      reference_model model;
      keel::ledger::test::scenario gen(keel::test::rng());
      const auto accounts = gen.accounts();
      const auto account_results = e.create_accounts(accounts).value();
      CHECK(account_results == model.create_accounts(accounts, gen.now(clock)));
      for (int batch = 0; batch < 40; ++batch) {
        clock.advance(std::chrono::milliseconds(keel::test::uniform<int>(0, 2500)));
        const auto transfers = gen.transfers(keel::test::uniform<std::size_t>(1, 40));
        const auto got = e.create_transfers(transfers).value();
        const auto want = model.create_transfers(transfers, gen.now(clock));
        REQUIRE(got.size() == want.size());
        for (std::size_t i = 0; i < got.size(); ++i) {
          INFO("batch " << batch << " event " << i << " id " << to_string(transfers[i].id));
          CHECK(name(got[i]) == name(want[i]));
          ++seen[name(got[i])];
        }
        test::expire_now_and_then_and_read(e, model, gen, clock);
      }
      // Invariants at every sequence: Σ debits = Σ credits per ledger, every limit held, and
      // timestamps strictly increasing (expiries stamped at their expiry time included).
      const auto size = e.journal_size().value();
      std::uint64_t previous_timestamp = 0;
      for (std::uint64_t s = 0; s < size; ++s) {
        const auto stamped = decode(e.entry(s).value()).value().timestamp();
        CHECK(stamped > previous_timestamp);
        previous_timestamp = stamped;
        for (const std::uint32_t ledger_id : {1U, 2U})
          CHECK(e.trial_balance_as_of(ledger_id, as_of::at_sequence(s))->balanced());
        for (const auto& a : accounts) {
          const auto b = e.balance_as_of(a.id, as_of::at_sequence(s));
          if (!b) continue;
          if ((a.flags & account_flags::debits_must_not_exceed_credits) != 0)
            CHECK(b->debits_pending + b->debits_posted <= b->credits_posted);
          if ((a.flags & account_flags::credits_must_not_exceed_debits) != 0)
            CHECK(b->credits_pending + b->credits_posted <= b->debits_posted);
        }
      }
      // The reference's balances as of each sequence agree with the engine's history.
      for (const auto& [sequence, snapshot] : model.history())
        for (const auto& [id, expected] : snapshot)
          CHECK(e.balance_as_of(id, as_of::at_sequence(sequence)).value() == expected);
    }
    for (const char* outcome :
         {"ok", "exists", "exists_with_different_amount", "linked_event_failed", "debit_account_not_found",
          "amount_must_not_be_zero", "exceeds_credits", "exceeds_debits", "pending_transfer_already_posted",
          "pending_transfer_already_voided", "pending_transfer_expired",
          "closing_transfer_must_be_pending"}) {
      INFO(outcome);
      CHECK(seen[outcome] > 0);
    }
    CHECK(seen["debit_account_already_closed"] + seen["credit_account_already_closed"] > 0);
  }
}
