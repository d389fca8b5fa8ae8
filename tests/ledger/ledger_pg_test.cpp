// keel::ledger on Postgres: the same rules as the reference model, append-only triggers,
// concurrent writers in several processes, tamper detection and the keel-ledger CLI.
#include <keel/ledger.hpp>
#include <keel/ledger/pg_engine.hpp>

#include "ledger_test_support.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <spawn.h>
#include <support/pg.hpp>
#include <support/random.hpp>
#include <support/result.hpp>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace keel::ledger;

namespace {

// A fresh file name in the system's temporary directory.
std::string temp_path(const std::string& stem) {
  return (std::filesystem::temp_directory_path() /
          (stem + "_" + std::to_string(::getpid()) + "_" + std::to_string(keel::test::rng()())))
      .string();
}

account plain_account(u128 id, std::uint16_t flags = 0) {
  return {.id = id, .user_data = 0, .ledger = 1, .code = 1, .flags = flags, .timestamp = 0, .balances = {}};
}

transfer plain_transfer(u128 id, u128 debit, u128 credit, u128 amount) {
  transfer t;
  t.id = id;
  t.debit_account_id = debit;
  t.credit_account_id = credit;
  t.amount = amount;
  t.ledger = 1;
  t.code = 1;
  return t;
}

// Runs a program and returns (exit status, stdout).
std::pair<int, std::string> run(const std::vector<std::string>& args,
                                const std::vector<std::string>& extra_env = {}) {
  const auto out_path = temp_path("keel_ledger_run");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  for (const auto& e : extra_env) env_storage.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data()) == 0);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  std::ifstream in(out_path);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(out_path.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text.str()};
}

constexpr int worker_threads = 4;
constexpr int worker_batches = 25;
constexpr int worker_batch_size = 40;
constexpr u128 worker_accounts = 8;

// One process's share of the concurrency test: 4 threads, each its own connection and engine,
// random transfers; returns per-account sums of what was accepted.
std::map<u128, std::pair<u128, u128>> run_writers(const std::string& conninfo, std::uint64_t tag,
                                                  std::uint64_t seed) {
  std::mutex m;
  std::map<u128, std::pair<u128, u128>> sums;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < worker_threads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed + static_cast<std::uint64_t>(t));
      auto c = keel::pg::connection::connect(conninfo);
      if (!c) {
        ++failures;
        return;
      }
      pg_engine engine(*c);
      std::uint64_t counter = 0;
      for (int b = 0; b < worker_batches; ++b) {
        std::vector<transfer> batch;
        for (int i = 0; i < worker_batch_size; ++i) {
          const auto debit = static_cast<u128>(std::uniform_int_distribution<int>(1, 8)(rng));
          auto credit = static_cast<u128>(std::uniform_int_distribution<int>(1, 7)(rng));
          if (credit >= debit) ++credit;
          const u128 id = (static_cast<u128>(tag) << 64U) | (static_cast<u128>(t) << 32U) | ++counter;
          batch.push_back(plain_transfer(id, debit, credit,
                                         static_cast<u128>(std::uniform_int_distribution<int>(1, 100)(rng))));
        }
        auto results = engine.create_transfers(batch);
        if (!results) {
          ++failures;
          return;
        }
        std::lock_guard lock(m);
        for (std::size_t i = 0; i < batch.size(); ++i) {
          if ((*results)[i] != transfer_result::ok) continue;
          sums[batch[i].debit_account_id].first += batch[i].amount;
          sums[batch[i].credit_account_id].second += batch[i].amount;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  if (failures != 0) sums.clear();
  return sums;
}

// Accounts 1..worker_accounts; 1 and 2 may not spend more than they received.
void create_worker_accounts(keel::pg::connection& c) {
  REQUIRE(migrate(c));
  pg_engine e(c);
  std::vector<account> accounts;
  for (u128 id = 1; id <= worker_accounts; ++id)
    accounts.push_back(
        plain_account(id, id <= 2 ? account_flags::debits_must_not_exceed_credits : std::uint16_t{0}));
  REQUIRE(e.create_accounts(accounts).value() ==
          std::vector<account_result>(worker_accounts, account_result::ok));
}

struct spawned_worker {
  pid_t pid = 0;
  std::string out_path;
};

// Starts this test binary again as a worker process (the "ledger pg worker" case in its child role).
spawned_worker spawn_worker(const std::string& conninfo, std::uint64_t tag, std::uint64_t seed) {
  spawned_worker w{0, temp_path("keel_ledger_worker")};
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  env_storage.push_back("KEEL_LEDGER_WORKER_CONNINFO=" + conninfo);
  env_storage.push_back("KEEL_LEDGER_WORKER_TAG=" + std::to_string(tag));
  env_storage.push_back("KEEL_LEDGER_WORKER_SEED=" + std::to_string(seed));
  env_storage.push_back("KEEL_LEDGER_WORKER_OUT=" + w.out_path);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args{"/proc/self/exe", "--test-case=ledger pg worker*", "--no-intro"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  REQUIRE(posix_spawn(&w.pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data()) == 0);
  return w;
}

// Waits for the workers, requires each to have succeeded, and adds up the sums they wrote.
std::map<u128, std::pair<u128, u128>> collect_workers(const std::vector<spawned_worker>& workers) {
  std::map<u128, std::pair<u128, u128>> sums;
  for (const auto& w : workers) {
    int status = 0;
    REQUIRE(waitpid(w.pid, &status, 0) == w.pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    std::ifstream in(w.out_path);
    std::string id, debits, credits;
    std::size_t lines = 0;
    while (in >> id >> debits >> credits) {
      auto& s = sums[parse_u128(id).value()];
      s.first += parse_u128(debits).value();
      s.second += parse_u128(credits).value();
      ++lines;
    }
    std::remove(w.out_path.c_str());
    // A child that ran no test (a renamed case) exits 0 too: it must have written its sums.
    CHECK_MESSAGE(lines > 0, "worker " << w.pid << " wrote no sums");
  }
  return sums;
}

keel::ed25519_private_key test_key() {
  return keel::ed25519_private_key::from_seed(keel::bytes(32, 7)).value();
}

// A small ledger: 2 accounts, 20 transfers: 22 entries.
checkpoint build_small_ledger(keel::pg::connection& c) {
  REQUIRE(migrate(c));
  keel::manual_clock clock;
  pg_engine e(c, {.clock = &clock});
  std::vector<account> accounts{plain_account(1), plain_account(2)};
  REQUIRE(e.create_accounts(accounts).value() == std::vector<account_result>(2, account_result::ok));
  for (u128 i = 1; i <= 20; ++i) {
    clock.advance(std::chrono::seconds(1));
    const auto t = plain_transfer(i, 1, 2, i);
    REQUIRE(e.create_transfers(std::span(&t, 1)).value()[0] == transfer_result::ok);
  }
  return e.make_checkpoint(test_key()).value();
}

verify_report verify(keel::pg::connection& c, const checkpoint& cp) {
  return verify_journal(c, cp, test_key().public_key()).value();
}

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("ledger pg worker: a spawned worker process accounts for every transfer it wrote") {
    // As a child (spawned by spawn_worker) this is the worker; run by itself it spawns one
    // worker and checks what it did, so the child's path is exercised here too.
    if (const char* conninfo = std::getenv("KEEL_LEDGER_WORKER_CONNINFO"); conninfo != nullptr) {
      const auto tag = std::strtoull(std::getenv("KEEL_LEDGER_WORKER_TAG"), nullptr, 10);
      const auto seed = std::strtoull(std::getenv("KEEL_LEDGER_WORKER_SEED"), nullptr, 10);
      const auto sums = run_writers(conninfo, tag, seed);
      REQUIRE_FALSE(sums.empty());
      std::ofstream out(std::getenv("KEEL_LEDGER_WORKER_OUT"));
      for (const auto& [id, s] : sums)
        out << to_string(id) << ' ' << to_string(s.first) << ' ' << to_string(s.second) << '\n';
      return;
    }
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    create_worker_accounts(c);
    const auto worker = spawn_worker(schema.conninfo, 1, keel::test::rng()());
    const auto expected = collect_workers({worker});
    REQUIRE_FALSE(expected.empty());
    pg_engine e(c);
    for (u128 id = 1; id <= worker_accounts; ++id) {
      const auto a = e.lookup_account(id).value().value();
      INFO("account " << to_string(id));
      CHECK(a.balances.debits_posted == expected.at(id).first);
      CHECK(a.balances.credits_posted == expected.at(id).second);
    }
  }

  TEST_CASE("pg engine: random batches match the reference model; invariants at every sequence") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(migrate(c));
    REQUIRE(migrate(c));  // idempotent
    keel::manual_clock clock;
    pg_engine e(c, {.clock = &clock});
    test::reference_model model;
    test::scenario gen(keel::test::rng());
    const auto accounts = gen.accounts();
    CHECK(e.create_accounts(accounts).value() == model.create_accounts(accounts, gen.now(clock)));
    for (int batch = 0; batch < 25; ++batch) {
      clock.advance(std::chrono::milliseconds(keel::test::uniform<int>(0, 2500)));
      const auto transfers = gen.transfers(keel::test::uniform<std::size_t>(1, 40));
      const auto got = e.create_transfers(transfers);
      REQUIRE_MESSAGE(got, c.last_error().to_string());
      const auto want = model.create_transfers(transfers, gen.now(clock));
      for (std::size_t i = 0; i < got->size(); ++i) {
        INFO("batch " << batch << " event " << i);
        CHECK(to_string((*got)[i]) == to_string(want[i]));
      }
      test::expire_now_and_then_and_read(e, model, gen, clock);
    }
    for (const auto& [sequence, snapshot] : model.history())
      for (const auto& [id, expected] : snapshot)
        CHECK(e.balance_as_of(id, as_of::at_sequence(sequence)).value() == expected);
    const auto size = e.journal_size().value();
    for (std::uint64_t s = 0; s < size; s += 7)
      for (const std::uint32_t ledger_id : {1U, 2U})
        CHECK(e.trial_balance_as_of(ledger_id, as_of::at_sequence(s))->balanced());
    // The stored tree is the tree of the stored entries; proofs verify.
    merkle_tree rebuilt;
    for (std::uint64_t s = 0; s < size; ++s) rebuilt.append(leaf_hash(e.entry(s).value()));
    CHECK(rebuilt.root() == e.root(size).value());
    const auto index = size / 2;
    CHECK(verify_inclusion(index, size, leaf_hash(e.entry(index).value()),
                           to_bytes(e.inclusion_proof(index, size).value()), e.root(size).value()));
    CHECK(verify_consistency(3, size, e.root(3).value(), e.root(size).value(),
                             to_bytes(e.consistency_proof(3, size).value())));
    const auto page = e.statement(1, {.from_sequence = 0, .to_sequence = UINT64_MAX, .limit = 3}).value();
    CHECK(page.lines.size() <= 3);
    CHECK(e.statement(999, {}).error() == errc::unknown_account);
    CHECK(verify(c, e.make_checkpoint(test_key()).value()).result == verify_report::verdict::ok);
  }

  TEST_CASE("pg engine: a hold past its timeout is released on reads at once; the expirer records it") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(migrate(c));
    keel::manual_clock clock;
    pg_engine e(c, {.clock = &clock});
    // Each record runs an elected expirer until it has made a pass as the leader.
    test::check_idle_expiry(e, clock, [&] {
      pg_expirer expirer(
          {.conninfo = schema.conninfo, .clock = &clock, .every = std::chrono::milliseconds(5)});
      REQUIRE(test::eventually([&] { return expirer.current().leading; }));
    });
    // The recorded expiry is an entry like any other: the tree and the stored balances verify.
    CHECK(verify(c, e.make_checkpoint(test_key()).value()).result == verify_report::verdict::ok);
  }

  TEST_CASE("pg expirer: one of several is elected per schema; another takes over when it stops") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(migrate(c));
    const pg_expirer_options options{
        .conninfo = schema.conninfo, .clock = nullptr, .every = std::chrono::milliseconds(5)};
    auto first = std::make_unique<pg_expirer>(options);
    REQUIRE(test::eventually([&] { return first->current().leading; }));
    pg_expirer second(options);
    REQUIRE(test::eventually([&] { return second.current().passes >= 3; }));
    CHECK_FALSE(second.current().leading);
    CHECK(first->current().leading);
    first.reset();  // gives up the lock
    CHECK(test::eventually([&] { return second.current().leading; }));
    // A ledger in another schema elects its own.
    keel::test::scratch_schema other;
    auto oc = other.connect();
    REQUIRE(migrate(oc));
    pg_expirer elsewhere(
        {.conninfo = other.conninfo, .clock = nullptr, .every = std::chrono::milliseconds(5)});
    CHECK(test::eventually([&] { return elsewhere.current().leading; }));
    CHECK(second.current().leading);
  }

  TEST_CASE("pg engine: the journal, nodes and balance history are append-only") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    (void)build_small_ledger(c);
    CHECK_FALSE(c.execute("UPDATE keel_ledger_journal SET timestamp = 0 WHERE sequence = 3"));
    CHECK(c.last_error().message.find("append-only") != std::string::npos);
    CHECK_FALSE(c.execute("DELETE FROM keel_ledger_journal WHERE sequence = 3"));
    CHECK_FALSE(c.execute("TRUNCATE keel_ledger_journal"));
    CHECK_FALSE(c.execute("DELETE FROM keel_ledger_nodes"));
    CHECK_FALSE(c.execute("UPDATE keel_ledger_balances SET debits_posted = 0"));
    pg_engine e(c);
    CHECK(e.journal_size().value() == 22);
    // A failed batch changes nothing: a transfer to an unknown account is a result, not a write.
    const auto bad = plain_transfer(99, 1, 77, 5);
    CHECK(e.create_transfers(std::span(&bad, 1)).value()[0] == transfer_result::credit_account_not_found);
    CHECK(e.journal_size().value() == 22);
  }

  TEST_CASE("pg engine: a lost connection is pg's connection_lost, not a storage failure") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    const auto cp = build_small_ledger(c);
    auto admin = schema.connect();
    // With a timeout, pg_terminate_backend returns once the backend is gone.
    REQUIRE(admin.query("SELECT pg_terminate_backend($1, 30000)", std::int32_t{c.backend_pid()})
                .value()
                .value<bool>()
                .value());
    pg_engine e(c);
    const auto t = plain_transfer(100, 1, 2, 5);
    const auto written = e.create_transfers(std::span(&t, 1));
    REQUIRE_FALSE(written);
    CHECK(written.error() == keel::pg::errc::connection_lost);
    CHECK(e.lookup_account(1).error() == keel::pg::errc::connection_lost);
    CHECK(e.journal_size().error() == keel::pg::errc::connection_lost);
    CHECK(e.statement(1, {}).error() == keel::pg::errc::connection_lost);
    CHECK(verify_journal(c, cp, test_key().public_key()).error() == keel::pg::errc::connection_lost);
    // After a reconnect the same engine works, and nothing of the failed batch was written.
    REQUIRE(c.reset());
    CHECK(e.journal_size().value() == 22);
    CHECK(e.create_transfers(std::span(&t, 1)).value()[0] == transfer_result::ok);
  }

  TEST_CASE("pg engine: a constraint the server enforces surfaces with its SQLSTATE and constraint") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    (void)build_small_ledger(c);
    pg_engine e(c);
    // A rule the operator added to the table, which the ledger's own checks know nothing of.
    REQUIRE(
        c.execute("ALTER TABLE keel_ledger_accounts ADD CONSTRAINT keel_test_no_code_7 CHECK (code <> 7)"));
    auto barred = plain_account(50);
    barred.code = 7;
    const auto created = e.create_accounts(std::span(&barred, 1));
    REQUIRE_FALSE(created);
    CHECK(created.error() == keel::pg::errc::check_violation);
    CHECK(c.last_error().sqlstate == "23514");
    CHECK(c.last_error().constraint == "keel_test_no_code_7");
    CHECK(e.journal_size().value() == 22);
    CHECK_FALSE(e.lookup_account(50).value());
    // A journal row written behind the head lock's back: the next batch's sequence is taken.
    REQUIRE(c.execute("INSERT INTO keel_ledger_journal VALUES (22, 0, '\\x00')"));
    const auto t = plain_transfer(100, 1, 2, 5);
    const auto written = e.create_transfers(std::span(&t, 1));
    REQUIRE_FALSE(written);
    CHECK(written.error() == keel::pg::errc::unique_violation);
    CHECK(c.last_error().sqlstate == "23505");
    CHECK_FALSE(e.lookup_transfer(100).value());
  }

  TEST_CASE("pg engine: a deadlock is pg's deadlock_detected, so a caller's retry succeeds") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    (void)build_small_ledger(c);
    pg_engine e(c);
    const int engine_pid = c.backend_pid();
    auto blocker = schema.connect();  // holds the transfers table while the others line up
    auto rival = schema.connect();    // holds account 1 and then asks for the journal head
    auto observer = schema.connect();
    // The engine's check finds the cycle (it closes it); the rival waits far longer than that.
    REQUIRE(rival.execute("SET deadlock_timeout = '10min'"));
    const auto waits_for_a_lock = [&](int pid) {
      for (int polls = 0; polls < 3000; ++polls) {
        auto waiting =
            observer.query("SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", std::int32_t{pid});
        if (waiting.value().value<std::int64_t>().value() > 0) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return false;
    };
    REQUIRE(blocker.execute("BEGIN; LOCK TABLE keel_ledger_transfers IN SHARE MODE"));
    REQUIRE(rival.execute("BEGIN"));
    REQUIRE(rival.query("SELECT 1 FROM keel_ledger_accounts WHERE id = $1::uuid FOR UPDATE",
                        std::string("00000000-0000-0000-0000-000000000001")));
    const auto t = plain_transfer(100, 1, 2, 5);
    keel::result<std::vector<transfer_result>> first = keel::ledger::errc::invalid_argument;
    std::thread writer([&] { first = e.create_transfers(std::span(&t, 1)); });
    // The engine holds the head and waits for the transfers table ...
    REQUIRE(waits_for_a_lock(engine_pid));
    keel::result<keel::pg::rows> rival_head = keel::ledger::errc::invalid_argument;
    std::thread rival_thread(
        [&] { rival_head = rival.query("SELECT size FROM keel_ledger_head WHERE id = 1 FOR UPDATE"); });
    // ... the rival waits for the head; once the table is free the engine waits for account 1.
    REQUIRE(waits_for_a_lock(rival.backend_pid()));
    REQUIRE(blocker.execute("COMMIT"));
    writer.join();
    rival_thread.join();
    REQUIRE_FALSE(first);
    CHECK(first.error() == keel::pg::errc::deadlock_detected);
    CHECK(keel::pg::is_retryable(first.error()));
    CHECK(c.last_error().sqlstate == "40P01");
    CHECK(rival_head);
    REQUIRE(rival.execute("COMMIT"));
    // What a caller that retries retryable errors does: the batch runs again and commits once.
    keel::result<std::vector<transfer_result>> again = keel::ledger::errc::invalid_argument;
    for (int attempt = 0; attempt < 3; ++attempt) {
      again = e.create_transfers(std::span(&t, 1));
      if (again || !keel::pg::is_retryable(again.error())) break;
    }
    REQUIRE(again);
    CHECK(again->at(0) == transfer_result::ok);
    CHECK(e.journal_size().value() == 23);
    CHECK(e.lookup_account(1).value()->balances.debits_posted == 210 + 5);
  }

  TEST_CASE("pg engine: 128-bit amounts and balances round trip through numeric exactly") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(migrate(c));
    pg_engine e(c);
    std::vector<account> accounts{plain_account(u128_max - 1), plain_account(2), plain_account(3)};
    REQUIRE(e.create_accounts(accounts).value() == std::vector<account_result>(3, account_result::ok));
    std::vector<transfer> batch{plain_transfer(u128_max - 1, u128_max - 1, 2, u128_max - 5),
                                plain_transfer(5, 3, 2, 5), plain_transfer(6, 3, 2, 1),
                                plain_transfer(7, 2, 3, 10'000)};
    CHECK(e.create_transfers(batch).value() ==
          std::vector<transfer_result>{transfer_result::ok, transfer_result::ok,
                                       transfer_result::overflows_credits_posted, transfer_result::ok});
    CHECK(e.lookup_account(2).value()->balances.credits_posted == u128_max);
    CHECK(e.lookup_account(u128_max - 1).value()->balances.debits_posted == u128_max - 5);
    CHECK(e.lookup_transfer(u128_max - 1).value()->amount == u128_max - 5);
    CHECK(e.balance_as_of(2, as_of::at_sequence(3)).value().credits_posted == u128_max - 5);
    CHECK(c.query("SELECT credits_posted::text FROM keel_ledger_accounts WHERE debits_posted = 10000")
              ->value<std::string>()
              .value() == to_string(u128_max));
  }

  TEST_CASE("pg engine: 4 threads x 2 processes of random transfers; exact balances and invariants") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(migrate(c));
    create_worker_accounts(c);
    const auto seed = keel::test::rng()();
    std::vector<spawned_worker> workers;
    for (std::uint64_t p = 0; p < 2; ++p)
      workers.push_back(spawn_worker(schema.conninfo, p + 1, seed + p * 100));
    auto expected = collect_workers(workers);
    REQUIRE_FALSE(expected.empty());
    pg_engine e(c);
    u128 total = 0;
    for (u128 id = 1; id <= worker_accounts; ++id) {
      const auto a = e.lookup_account(id).value().value();
      CHECK(a.balances.debits_posted == expected[id].first);
      CHECK(a.balances.credits_posted == expected[id].second);
      total += a.balances.debits_posted;
      if (id <= 2) CHECK(a.balances.debits_posted <= a.balances.credits_posted);
    }
    // Gap-free sequences; every history row of a limited account respects its limit.
    const auto size = e.journal_size().value();
    CHECK(c.query("SELECT count(*) FROM keel_ledger_journal")->value<std::int64_t>().value() ==
          static_cast<std::int64_t>(size));
    CHECK(c.query("SELECT coalesce(max(sequence), -1) FROM keel_ledger_journal")
              ->value<std::int64_t>()
              .value() == static_cast<std::int64_t>(size) - 1);
    CHECK(
        c.query(
             "SELECT count(*) FROM keel_ledger_balances b JOIN keel_ledger_accounts a ON a.id = b.account_id "
             "WHERE a.flags & 2 <> 0 AND b.debits_posted > b.credits_posted")
            ->value<std::int64_t>()
            .value() == 0);
    for (std::uint64_t s = 0; s < size; s += size / 50 + 1)
      CHECK(e.trial_balance_as_of(1, as_of::at_sequence(s))->balanced());
    const auto tb = e.trial_balance_as_of(1, as_of::now()).value();
    CHECK(tb.balanced());
    CHECK(tb.totals.debits_posted == total);
    CHECK(verify(c, e.make_checkpoint(test_key()).value()).result == verify_report::verdict::ok);
  }

  TEST_CASE("tamper: changed, deleted, renumbered, reordered and inserted entries are named") {
    using verdict = verify_report::verdict;
    const auto tampered = [](const std::string& sql) {
      keel::test::scratch_schema schema;
      auto c = schema.connect();
      const auto cp = build_small_ledger(c);
      REQUIRE(verify(c, cp).result == verdict::ok);
      REQUIRE_MESSAGE(c.execute("ALTER TABLE keel_ledger_journal DISABLE TRIGGER USER; " + sql +
                                "; ALTER TABLE keel_ledger_journal ENABLE TRIGGER USER"),
                      c.last_error().to_string());
      return verify(c, cp);
    };
    auto r = tampered(
        "UPDATE keel_ledger_journal SET entry = overlay(entry placing '\\xff'::bytea from 60 for 1) WHERE "
        "sequence = 7");
    CHECK(r.result == verdict::changed);
    CHECK(r.first_bad == 7);
    r = tampered("DELETE FROM keel_ledger_journal WHERE sequence = 7");
    CHECK(r.result == verdict::deleted);
    CHECK(r.first_bad == 7);
    r = tampered(
        "DELETE FROM keel_ledger_journal WHERE sequence = 7; "
        "UPDATE keel_ledger_journal SET sequence = -sequence WHERE sequence > 7; "
        "UPDATE keel_ledger_journal SET sequence = -sequence - 1 WHERE sequence < 0");
    CHECK(r.result == verdict::deleted);
    CHECK(r.first_bad == 7);
    r = tampered("DELETE FROM keel_ledger_journal WHERE sequence = 21");
    CHECK(r.result == verdict::deleted);
    CHECK(r.first_bad == 21);
    r = tampered(
        "UPDATE keel_ledger_journal SET sequence = -1 WHERE sequence = 5; "
        "UPDATE keel_ledger_journal SET sequence = 5 WHERE sequence = 9; "
        "UPDATE keel_ledger_journal SET sequence = 9 WHERE sequence = -1");
    CHECK(r.result == verdict::reordered);
    CHECK(r.first_bad == 5);
    CHECK(r.expected_at == 9);
    r = tampered(
        "UPDATE keel_ledger_journal SET sequence = -sequence WHERE sequence >= 6; "
        "UPDATE keel_ledger_journal SET sequence = -sequence + 1 WHERE sequence <= -6; "
        "INSERT INTO keel_ledger_journal SELECT 6, timestamp, overlay(entry placing '\\x01'::bytea from 60 "
        "for 1) "
        "FROM keel_ledger_journal WHERE sequence = 3");
    CHECK(r.result == verdict::inserted);
    CHECK(r.first_bad == 6);

    // Balances edited behind the journal's back are named by account.
    {
      keel::test::scratch_schema balances_schema;
      auto bc = balances_schema.connect();
      const auto bcp = build_small_ledger(bc);
      auto updated = bc.execute(
          "UPDATE keel_ledger_accounts SET credits_posted = credits_posted + 1 "
          "WHERE id = '00000000-0000-0000-0000-000000000002'");
      REQUIRE(updated);
      CHECK(updated->affected() == 1);
      const auto br = verify(bc, bcp);
      INFO(br.message);
      CHECK(br.result == verdict::balances_differ);
      CHECK(br.account_id == 2);
    }

    // Altering the Merkle nodes too is detected (the checkpoint's root no longer reproduces).
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    const auto cp = build_small_ledger(c);
    REQUIRE(
        c.execute("ALTER TABLE keel_ledger_nodes DISABLE TRIGGER USER; "
                  "UPDATE keel_ledger_nodes SET hash = sha256(hash) WHERE level = 0 AND idx = 4"));
    CHECK(verify(c, cp).result == verdict::tree_altered);
    auto forged = cp;
    forged.tree_size -= 1;
    CHECK(verify(c, forged).result == verdict::checkpoint_invalid);
  }

  TEST_CASE("keel-ledger verify: exit code and message name the tampered entry") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    const auto cp = build_small_ledger(c);
    const auto cp_path = temp_path("keel_ledger_checkpoint");
    const auto seed_path = temp_path("keel_ledger_seed");
    std::ofstream(cp_path) << cp.to_json();
    std::ofstream(seed_path) << keel::to_hex(test_key().seed());
    const auto key_hex = keel::to_hex(test_key().public_key().bytes);
    auto [code, out] =
        run({KEEL_LEDGER_CLI, "verify", "--db", schema.conninfo, "--checkpoint", cp_path, "--key", key_hex});
    CHECK(code == 0);
    CHECK(out.starts_with("ok "));
    auto [cp_code, cp_out] =
        run({KEEL_LEDGER_CLI, "checkpoint", "--db", schema.conninfo, "--seed-file", seed_path});
    CHECK(cp_code == 0);
    const auto fresh = checkpoint::from_json(cp_out);
    REQUIRE(fresh);
    CHECK(fresh->verify(test_key().public_key()));
    CHECK(fresh->tree_size == 22);
    REQUIRE(c.execute(
        "ALTER TABLE keel_ledger_journal DISABLE TRIGGER USER; "
        "UPDATE keel_ledger_journal SET entry = overlay(entry placing '\\xff'::bytea from 70 for 1) "
        "WHERE sequence = 12"));
    std::tie(code, out) =
        run({KEEL_LEDGER_CLI, "verify", "--db", schema.conninfo, "--checkpoint", cp_path, "--key", key_hex});
    CHECK(code == 1);
    CHECK(out.find("changed first_bad=12") != std::string::npos);
    std::tie(code, out) =
        run({KEEL_LEDGER_CLI, "verify", "--db", schema.conninfo, "--checkpoint", cp_path, "--key", "zz"});
    CHECK(code == 2);
    std::remove(cp_path.c_str());
    std::remove(seed_path.c_str());
  }
}
