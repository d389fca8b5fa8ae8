// keel::events: names and positions (unit); appends, reads and the global order on a real
// Postgres (pg), including the commit-order race that makes position-ordered readers skip events.
#include <keel/events.hpp>
#include <keel/pg/transaction.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <spawn.h>
#include <support/pg.hpp>
#include <support/random.hpp>
#include <support/result.hpp>
#include <support/subprocess.hpp>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

namespace ev = keel::events;
using keel::pg::connection;

ev::new_event event(std::string type, std::string data = "{}") {
  return ev::new_event{.type = std::move(type), .data = std::move(data)};
}

keel::pg::uuid uuid_of(int n) {
  keel::pg::uuid u;
  u.bytes[15] = static_cast<std::uint8_t>(n);
  u.bytes[14] = static_cast<std::uint8_t>(n >> 8);
  u.bytes[6] = 0x40;  // version 4 layout, so it reads like a real one
  return u;
}

// A migrated scratch schema and a store.
struct fixture {
  keel::test::scratch_schema schema;
  ev::store store;
  connection c = schema.connect();
  fixture() { REQUIRE(ev::migrate(c)); }
  std::int64_t count_events() {
    return c.query("SELECT count(*) FROM keel_events").value().value<std::int64_t>().value();
  }
};

// Reads $all from `after` to the horizon, page by page.
std::vector<ev::recorded_event> read_to_horizon(const ev::store& store, connection& c,
                                                ev::all_position& after, std::size_t page = 1000,
                                                std::string category = {}) {
  std::vector<ev::recorded_event> out;
  for (;;) {
    auto got = store.read_all(c, {.after = after, .max_count = page, .category = category}).value();
    after = got.next;
    for (auto& e : got.events) out.push_back(std::move(e));
    if (got.caught_up) return out;
  }
}

// for_each over `read` hands the handler `expected` (what read_all paged out), event by event,
// ends at `end`, and leaves nothing in flight.
void check_for_each_gives(const ev::store& store, connection& c, const ev::all_read& read,
                          const std::vector<ev::recorded_event>& expected, ev::all_position end) {
  std::vector<ev::recorded_event> got;
  auto stopped = store.for_each(c, read, [&](const ev::recorded_event& e) {
    got.push_back(e);
    return true;
  });
  REQUIRE(stopped);
  CHECK(*stopped == end);
  REQUIRE(got.size() == expected.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    CHECK(got[k].id == expected[k].id);
    CHECK(got[k].position == expected[k].position);
    CHECK(got[k].data == expected[k].data);
    CHECK(got[k].stream == expected[k].stream);
  }
  CHECK(!c.awaiting_answer());
}

// Waits until `ready()` holds, looking again every millisecond, up to `timeout`.
template <class Predicate>
bool eventually(Predicate ready, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// What a subscription handed over, safe to read from the test's thread.
struct collected {
  std::mutex mutex;
  std::vector<ev::recorded_event> events;
  ev::subscription::handler_type handler() {
    return [this](const ev::recorded_event& e) -> keel::result<void> {
      const std::lock_guard lock(mutex);
      events.push_back(e);
      return {};
    };
  }
  std::vector<ev::recorded_event> copy() {
    const std::lock_guard lock(mutex);
    return events;
  }
};

// A child process running tests/events/test_process.cpp.
struct child : keel::test::child_process {
  explicit child(std::vector<std::string> args) : child_process(KEEL_EVENTS_TEST_PROCESS, std::move(args)) {}
};

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("stream names: category-id, and what is refused") {
    CHECK(ev::category_of("order-42") == "order");
    CHECK(ev::category_of("order-42-line-3") == "order");
    CHECK(ev::category_of("settings") == "settings");
    CHECK(ev::validate_stream_name("order-42"));
    CHECK(ev::validate_stream_name("naïve-1"));
    for (const std::string& bad :
         std::vector<std::string>{"", "$all", "has space", "tab\there", std::string("nul\0x", 5),
                                  std::string(ev::max_stream_name_bytes + 1, 'a')}) {
      CAPTURE(bad);
      CHECK(ev::validate_stream_name(bad).error() == ev::errc::invalid_stream_name);
    }
    CHECK(ev::validate_stream_name(std::string(ev::max_stream_name_bytes, 'a')));
    // Checkpoint, projection, group and member names: spaces allowed, control bytes not.
    CHECK(ev::validate_checkpoint_name("email receipts"));
    for (const std::string& bad : std::vector<std::string>{"", "a\nb", "del\x7f", std::string(201, 'a')}) {
      CAPTURE(bad);
      CHECK(ev::validate_checkpoint_name(bad).error() == ev::errc::invalid_checkpoint_name);
    }
  }

  TEST_CASE("$all positions order by transaction, then position, and round-trip as text") {
    const ev::all_position a{7, 100}, b{8, 3};
    CHECK(a < b);  // a later transaction sorts after, whatever its position
    CHECK(ev::all_position::start() < a);
    CHECK(b < ev::all_position::end());
    CHECK(ev::all_position::parse(a.to_string()).value() == a);
    CHECK(a.to_string() == "7/100");
    for (const char* bad : {"", "7", "7/", "/3", "a/b", "7/3x", "-1/3", "7 /3"}) {
      CAPTURE(bad);
      CHECK(ev::all_position::parse(bad).error() == ev::errc::invalid_position);
    }
  }

  TEST_CASE("expected versions: exact(-1) is no_stream, and they print as people read them") {
    CHECK(ev::expected_version::exact(-1) == ev::expected_version::no_stream());
    CHECK(ev::to_string(ev::expected_version::exact(4)) == "4");
    CHECK(ev::to_string(ev::expected_version::any()) == "any");
    CHECK(ev::to_string(ev::expected_version::stream_exists()) == "stream_exists");
  }

  TEST_CASE("partition_of: stable, in range, and spreads streams evenly") {
    CHECK(ev::partition_of("order-42", 16) == ev::partition_of("order-42", 16));
    std::vector<int> counts(16);
    for (int k = 0; k < 16'000; ++k) {
      const auto p = ev::partition_of("order-" + std::to_string(k), 16);
      REQUIRE(p < 16);
      ++counts[p];
    }
    for (const int n : counts) CHECK((n > 800 && n < 1200));
    CHECK(ev::partition_of("x", 0) == 0);
  }

  TEST_CASE("errors say what to do") {
    const keel::error_code ec = ev::errc::stream_deleted;
    CHECK(ec.category().name() == std::string("keel.events"));
    CHECK(ec.message().find("new stream") != std::string::npos);
  }
}

TEST_SUITE("pg") {
  TEST_CASE("append and read back a stream; versions count from 0; metadata and ids are kept") {
    fixture f;
    const auto id = uuid_of(1);
    auto first = f.store
                     .append(f.c, "order-1", ev::expected_version::no_stream(),
                             {{.id = id,
                               .type = "placed",
                               .data = R"({"total": 1250, "items": [1, 2]})",
                               .metadata = R"({"correlation_id": "c-1"})"},
                              event("paid")})
                     .value();
    REQUIRE(first);
    CHECK(first.status == ev::append_status::appended);
    CHECK(first.version == 1);
    CHECK(first.versions == std::vector<std::int64_t>{0, 1});
    REQUIRE(first.positions.size() == 2);
    CHECK(first.positions[0] < first.positions[1]);

    auto second = f.store.append(f.c, "order-1", ev::expected_version::exact(1), {event("shipped")}).value();
    CHECK(second.version == 2);

    auto page = f.store.read_stream(f.c, "order-1").value();
    CHECK(page.status == ev::stream_status::active);
    CHECK(page.last_version == 2);
    CHECK(page.end_of_stream);
    REQUIRE(page.events.size() == 3);
    CHECK(page.events[0].id == id);
    CHECK(page.events[0].type == "placed");
    CHECK(page.events[0].stream == "order-1");
    CHECK(page.events[0].data == R"({"total": 1250, "items": [1, 2]})");  // as written
    CHECK(page.events[0].metadata == R"({"correlation_id": "c-1"})");
    CHECK(page.events[0].position == first.positions[0]);
    CHECK(page.events[2].type == "shipped");
    for (std::size_t k = 0; k < 3; ++k) CHECK(page.events[k].version == static_cast<std::int64_t>(k));
    CHECK(page.events[1].id != page.events[2].id);  // generated ids differ

    auto none = f.store.read_stream(f.c, "order-2").value();
    CHECK(none.status == ev::stream_status::not_found);
    CHECK(none.events.empty());
  }

  TEST_CASE(
      "expected versions: each kind holds or is reported as the actual version, and nothing is written") {
    fixture f;
    using ev::expected_version;
    auto conflict = f.store.append(f.c, "cart-1", expected_version::stream_exists(), {event("a")}).value();
    CHECK(conflict.status == ev::append_status::wrong_expected_version);
    CHECK(conflict.version == -1);
    CHECK(!conflict);
    CHECK(f.store.append(f.c, "cart-1", expected_version::exact(0), {event("a")}).value().version == -1);
    CHECK(f.store.append(f.c, "cart-1", expected_version::no_stream(), {event("a")}).value());
    conflict = f.store.append(f.c, "cart-1", expected_version::no_stream(), {event("b")}).value();
    CHECK(conflict.status == ev::append_status::wrong_expected_version);
    CHECK(conflict.version == 0);
    conflict = f.store.append(f.c, "cart-1", expected_version::exact(5), {event("b")}).value();
    CHECK(conflict.version == 0);
    CHECK(f.store.append(f.c, "cart-1", expected_version::stream_exists(), {event("b")}).value().version ==
          1);
    CHECK(f.store.append(f.c, "cart-1", expected_version::any(), {event("c"), event("d")}).value().version ==
          3);
    CHECK(f.store.append(f.c, "cart-2", expected_version::any(), {event("c")}).value().version == 0);
    CHECK(f.count_events() == 5);
    CHECK(f.store.append(f.c, "cart-1", expected_version{expected_version::kind::exact, -2}, {event("x")})
              .error() == ev::errc::invalid_expected_version);
  }

  TEST_CASE("idempotent appends: the same ids again return the original result; other content is refused") {
    fixture f;
    std::vector<ev::new_event> batch = {{.id = uuid_of(1), .type = "placed", .data = R"({"n": 1})"},
                                        {.id = uuid_of(2), .type = "paid", .data = R"({"n": 2})"}};
    auto original = f.store.append(f.c, "order-9", ev::expected_version::no_stream(), batch).value();
    REQUIRE(original.status == ev::append_status::appended);
    // A retry after a lost reply: same ids, same content (key order and spacing may differ).
    batch[0].data = R"({ "n" : 1 })";
    auto again = f.store.append(f.c, "order-9", ev::expected_version::no_stream(), batch).value();
    CHECK(again.status == ev::append_status::already_appended);
    CHECK(again.versions == original.versions);
    CHECK(again.positions == original.positions);
    CHECK(again.version == 1);
    CHECK(f.count_events() == 2);

    // The same id with other data, in another stream, or as part of a bigger batch: refused.
    auto changed = batch;
    changed[1].data = R"({"n": 3})";
    CHECK(f.store.append(f.c, "order-9", ev::expected_version::any(), changed).error() ==
          ev::errc::duplicate_event_id);
    CHECK(f.store.append(f.c, "order-10", ev::expected_version::any(), batch).error() ==
          ev::errc::duplicate_event_id);
    auto bigger = batch;
    bigger.push_back({.id = uuid_of(3), .type = "shipped"});
    CHECK(f.store.append(f.c, "order-9", ev::expected_version::any(), bigger).error() ==
          ev::errc::duplicate_event_id);
    std::vector<ev::new_event> twice = {{.id = uuid_of(4), .type = "a"}, {.id = uuid_of(4), .type = "a"}};
    CHECK(f.store.append(f.c, "order-9", ev::expected_version::any(), twice).error() ==
          ev::errc::duplicate_event_id);
    CHECK(f.count_events() == 2);
    CHECK(f.store.stream(f.c, "order-9").value().last_version == 1);
  }

  TEST_CASE("bad input: a clear error and nothing of the batch stored") {
    fixture f;
    REQUIRE(f.store.append(f.c, "doc-1", ev::expected_version::any(), {event("kept")}));
    const ev::store small(ev::store_options{.max_event_bytes = 64, .max_batch_events = 3});
    struct bad_case {
      const char* what;
      std::string stream;
      std::vector<ev::new_event> events;
      ev::errc expected;
    };
    const std::vector<bad_case> cases = {
        {"invalid JSON data", "doc-1", {event("a"), event("b", "{not json")}, ev::errc::invalid_json},
        {"metadata not an object", "doc-1", {{.type = "a", .metadata = "[1]"}}, ev::errc::invalid_json},
        {"event over the size limit",
         "doc-1",
         {event("a"), event("b", "\"" + std::string(80, 'x') + "\"")},
         ev::errc::event_too_large},
        {"bad stream name", "$doc", {event("a")}, ev::errc::invalid_stream_name},
        {"empty type in a batch", "doc-1", {event("a"), event(""), event("c")}, ev::errc::invalid_event_type},
        {"control byte in a type", "doc-1", {event("a\nb")}, ev::errc::invalid_event_type},
        {"too many events",
         "doc-1",
         {event("a"), event("b"), event("c"), event("d")},
         ev::errc::batch_too_large},
        {"no events", "doc-1", {}, ev::errc::empty_batch},
    };
    for (const auto& bad : cases) {
      CAPTURE(bad.what);
      CHECK(small.append(f.c, bad.stream, ev::expected_version::any(), bad.events).error() == bad.expected);
      std::vector<ev::stream_append> multi = {{.stream = "doc-2", .events = {event("fine")}},
                                              {.stream = bad.stream, .events = bad.events}};
      CHECK(small.append_many(f.c, multi).error() == bad.expected);
    }
    CHECK(f.count_events() == 1);
    CHECK(f.store.stream(f.c, "doc-2").value().status == ev::stream_status::not_found);
    CHECK(f.store.read_stream(f.c, "doc-1").value().events.size() == 1);
  }

  TEST_CASE("atomic multi-stream appends: all or none, also inside the caller's transaction") {
    fixture f;
    REQUIRE(f.store.append(f.c, "account-2", ev::expected_version::any(), {event("opened")}));
    // A transfer touches both accounts; one expectation fails, so neither is written.
    std::vector<ev::stream_append> transfer = {
        {.stream = "account-2", .expected = ev::expected_version::exact(3), .events = {event("credited")}},
        {.stream = "account-1", .expected = ev::expected_version::any(), .events = {event("debited")}}};
    auto failed = f.store.append_many(f.c, transfer).value();
    CHECK(!failed);
    CHECK(failed.streams[0].status == ev::append_status::wrong_expected_version);
    CHECK(failed.streams[0].version == 0);
    CHECK(failed.streams[1].status == ev::append_status::not_written);
    CHECK(f.count_events() == 1);
    CHECK(!f.c.in_transaction());

    transfer[0].expected = ev::expected_version::exact(0);
    auto done = f.store.append_many(f.c, transfer).value();
    REQUIRE(done);
    CHECK(done.streams[0].version == 1);
    CHECK(done.streams[1].version == 0);
    CHECK(f.count_events() == 3);

    // In the caller's transaction: the events exist exactly when it commits, and a conflict
    // inside it undoes only the multi-append, not the caller's own work.
    {
      auto tx = keel::pg::transaction::begin(f.c).value();
      REQUIRE(tx.execute("CREATE TABLE orders (id int)"));
      REQUIRE(f.store.append(f.c, "order-1", ev::expected_version::no_stream(), {event("placed")}).value());
      auto conflict = f.store.append_many(f.c, transfer).value();  // account-2 is at 1 now
      CHECK(!conflict);
      REQUIRE(tx.execute("INSERT INTO orders VALUES (1)"));
      REQUIRE(tx.rollback());
    }
    CHECK(f.store.stream(f.c, "order-1").value().status == ev::stream_status::not_found);
    {
      auto tx = keel::pg::transaction::begin(f.c).value();
      REQUIRE(f.store.append(f.c, "order-1", ev::expected_version::no_stream(), {event("placed")}).value());
      REQUIRE(tx.commit());
    }
    CHECK(f.store.stream(f.c, "order-1").value().last_version == 0);
  }

  TEST_CASE("8 threads append to one stream with exact expected versions: every version taken once") {
    fixture f;
    constexpr int threads = 8;
    constexpr int per_thread = 40;
    std::atomic<int> losers_told_wrong{0}, losers_told_right{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        auto c = f.schema.connect();
        int written = 0;
        std::int64_t expected = -1;
        while (written < per_thread) {
          auto got = f.store
                         .append(c, "counter-1", ev::expected_version::exact(expected),
                                 {event("incremented", R"({"by": )" + std::to_string(t) + "}")})
                         .value();
          if (got) {
            ++written;
            expected = got.version;
          } else {
            // The loser learns where the stream is, and goes on from there.
            (got.version != expected ? losers_told_right : losers_told_wrong)++;
            expected = got.version;
          }
        }
      });
    }
    for (auto& t : pool) t.join();
    CHECK(losers_told_wrong.load() == 0);
    auto versions = f.c.query("SELECT array_agg(version ORDER BY version) FROM keel_events").value();
    const auto got = versions.value<std::vector<std::int64_t>>().value();
    REQUIRE(got.size() == threads * per_thread);
    for (std::size_t k = 0; k < got.size(); ++k) CHECK(got[k] == static_cast<std::int64_t>(k));
    CHECK(f.store.stream(f.c, "counter-1").value().last_version == threads * per_thread - 1);
    MESSAGE("conflicts reported: " << losers_told_right.load());
  }

  TEST_CASE("the race: the lower position commits last; $all readers see both, in order, and skip neither") {
    fixture f;
    auto early = f.schema.connect();
    auto late = f.schema.connect();
    ev::all_position cursor;
    CHECK(read_to_horizon(f.store, f.c, cursor).empty());

    // `early` draws the lower position but commits last.
    auto tx = keel::pg::transaction::begin(early).value();
    auto low = f.store.append(early, "order-1", ev::expected_version::any(), {event("placed")}).value();
    auto high = f.store.append(late, "order-2", ev::expected_version::any(), {event("placed")}).value();
    REQUIRE(low.positions[0].position < high.positions[0].position);

    // A reader that trusted positions alone would now see only order-2 and move past order-1's
    // position, skipping it for ever:
    auto naive = f.c.query("SELECT max(position) FROM keel_events").value().value<std::int64_t>().value();
    CHECK(naive == high.positions[0].position);
    // keel's reader waits at the horizon instead: nothing yet.
    auto page = f.store.read_all(f.c, {.after = cursor}).value();
    CHECK(page.events.empty());
    CHECK(page.caught_up);
    CHECK(page.horizon <= low.positions[0].transaction);
    auto held = f.store.horizon(f.c).value();
    CHECK(held.events_waiting == 1);  // order-2 is committed and waits behind the open transaction
    CHECK(held.oldest_transaction_pid == early.backend_pid());
    cursor = page.next;

    REQUIRE(tx.commit());
    auto both = read_to_horizon(f.store, f.c, cursor);
    REQUIRE(both.size() == 2);
    CHECK(both[0].stream == "order-1");
    CHECK(both[1].stream == "order-2");
    CHECK(both[0].position < both[1].position);
    CHECK(f.store.horizon(f.c).value().events_waiting == 0);

    // A category reader sees the same order.
    ev::all_position from_start;
    auto orders = read_to_horizon(f.store, f.c, from_start, 1, "order");
    REQUIRE(orders.size() == 2);
    CHECK(orders[0].stream == "order-1");
  }

  TEST_CASE("$all keeps each stream in version order when an older transaction appends after a newer one") {
    fixture f;
    // `older` takes its transaction id first (writing something of its own, as a caller's
    // transaction does), `newer` appends version 0 and commits, then `older` appends version 1.
    auto older = f.schema.connect();
    auto tx = keel::pg::transaction::begin(older).value();
    REQUIRE(f.store.append(older, "audit-1", ev::expected_version::any(), {event("first write of older")}));
    auto newer = f.schema.connect();
    REQUIRE(f.store.append(newer, "account-7", ev::expected_version::no_stream(), {event("opened")}));
    REQUIRE(f.store.append(older, "account-7", ev::expected_version::exact(0), {event("credited")}));
    REQUIRE(tx.commit());
    ev::all_position cursor;
    const auto all = read_to_horizon(f.store, f.c, cursor);
    std::vector<std::int64_t> versions;
    for (const auto& e : all) {
      if (e.stream == "account-7") versions.push_back(e.version);
    }
    CHECK(versions == std::vector<std::int64_t>{0, 1});
    ev::all_position in_category;
    const auto accounts = read_to_horizon(f.store, f.c, in_category, 1000, "account");
    REQUIRE(accounts.size() == 2);
    CHECK(accounts[0].version == 0);
    CHECK(accounts[1].version == 1);
  }

  TEST_CASE(
      "a rolled-back append leaves no stall; a long transaction shows as lag and readers resume when it "
      "ends") {
    fixture f;
    auto other = f.schema.connect();
    {
      auto tx = keel::pg::transaction::begin(other).value();
      REQUIRE(f.store.append(other, "job-1", ev::expected_version::any(), {event("never")}));
      REQUIRE(tx.rollback());
    }
    REQUIRE(f.store.append(f.c, "job-2", ev::expected_version::any(), {event("after")}));
    ev::all_position cursor;
    auto seen = read_to_horizon(f.store, f.c, cursor);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].stream == "job-2");

    // Any transaction holding an id holds readers back, even one that writes nothing of ours.
    auto blocker = f.schema.connect();
    REQUIRE(blocker.execute("BEGIN; CREATE TEMP TABLE t (x int); SELECT pg_current_xact_id()"));
    REQUIRE(f.store.append(f.c, "job-3", ev::expected_version::any(), {event("waits")}));
    CHECK(read_to_horizon(f.store, f.c, cursor).empty());
    auto lag = f.store.horizon(f.c).value();
    CHECK(lag.events_waiting == 1);
    CHECK(lag.oldest_transaction_pid == blocker.backend_pid());
    CHECK(lag.oldest_transaction_seconds > 0);
    REQUIRE(blocker.execute("COMMIT"));
    seen = read_to_horizon(f.store, f.c, cursor);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].stream == "job-3");
  }

  TEST_CASE(
      "concurrent writers and a reader that follows $all: every committed event once, in one order "
      "(seeded)") {
    fixture f;
    auto& rng = keel::test::rng();
    constexpr int writers = 3;
    constexpr int per_writer = 150;
    std::atomic<int> finished{0};
    std::vector<std::thread> pool;
    for (int w = 0; w < writers; ++w) {
      pool.emplace_back([&, w, seed = rng()] {
        std::mt19937_64 local(seed);
        auto c = f.schema.connect();
        for (int k = 0; k < per_writer; ++k) {
          // Transactions of random length, some rolled back, several streams per writer.
          auto tx = keel::pg::transaction::begin(c).value();
          const auto stream = "item-" + std::to_string(w) + "_" + std::to_string(local() % 4);
          const bool keep = local() % 5 != 0;
          const auto n = 1 + local() % 3;
          std::vector<ev::new_event> batch;
          for (std::size_t e = 0; e < n; ++e) {
            batch.push_back(event(keep ? "kept" : "dropped", R"({"w": )" + std::to_string(w) + "}"));
          }
          CHECK(f.store.append(c, stream, ev::expected_version::any(), batch).value());
          if (local() % 3 == 0) CHECK(c.execute("SELECT pg_sleep(0.001)"));
          if (keep) {
            CHECK(tx.commit());
          } else {
            CHECK(tx.rollback());
          }
        }
        ++finished;
      });
    }
    std::vector<ev::recorded_event> seen;
    ev::all_position cursor;
    auto reader = f.schema.connect();
    while (finished.load() < writers) {
      for (auto& e : read_to_horizon(f.store, reader, cursor, 7)) seen.push_back(std::move(e));
    }
    for (auto& t : pool) t.join();
    for (auto& e : read_to_horizon(f.store, reader, cursor, 7)) seen.push_back(std::move(e));

    // Exactly the committed events, each once, in the order a fresh full read gives.
    ev::all_position from_start;
    const auto all = read_to_horizon(f.store, f.c, from_start, 100'000);
    REQUIRE(seen.size() == all.size());
    CHECK(static_cast<std::int64_t>(all.size()) == f.count_events());
    for (std::size_t k = 0; k < all.size(); ++k) {
      CHECK(seen[k].id == all[k].id);
      CHECK(seen[k].type == "kept");
    }
    // Per stream, versions are dense and in order within the global order.
    std::map<std::string, std::int64_t> next_version;
    for (const auto& e : all) {
      CHECK(e.version == next_version[e.stream]);
      next_version[e.stream] = e.version + 1;
    }
  }

  TEST_CASE("reads: backward, paged, by type, and $all backward from the end") {
    fixture f;
    for (int k = 0; k < 10; ++k) {
      REQUIRE(f.store.append(f.c, "log-1", ev::expected_version::any(),
                             {event(k % 2 == 0 ? "even" : "odd", std::to_string(k))}));
    }
    auto page = f.store.read_stream(f.c, "log-1", {.from_version = 2, .max_count = 3}).value();
    REQUIRE(page.events.size() == 3);
    CHECK(page.events[0].version == 2);
    CHECK(!page.end_of_stream);
    CHECK(page.next_version == 5);
    page = f.store.read_stream(f.c, "log-1", {.from_version = 8, .max_count = 3}).value();
    CHECK(page.events.size() == 2);
    CHECK(page.end_of_stream);

    page =
        f.store
            .read_stream(f.c, "log-1", {.from_version = -1, .dir = ev::direction::backward, .max_count = 4})
            .value();
    REQUIRE(page.events.size() == 4);
    CHECK(page.events[0].version == 9);
    CHECK(page.events[3].version == 6);
    CHECK(page.next_version == 5);

    page = f.store.read_stream(f.c, "log-1", {.types = {"odd"}}).value();
    REQUIRE(page.events.size() == 5);
    CHECK(page.events[0].data == "1");

    auto back =
        f.store
            .read_all(f.c, {.after = ev::all_position::end(), .dir = ev::direction::backward, .max_count = 2})
            .value();
    REQUIRE(back.events.size() == 2);
    CHECK(back.events[0].version == 9);
    CHECK(back.events[1].version == 8);
    auto odd_all = f.store.read_all(f.c, {.types = {"odd"}}).value();
    CHECK(odd_all.events.size() == 5);
    CHECK(odd_all.caught_up);

    CHECK(f.store.read_stream(f.c, "log-1", {.max_count = 0}).error() == ev::errc::invalid_read);
    CHECK(f.store.read_all(f.c, {.category = "log-1"}).error() == ev::errc::invalid_stream_name);
  }

  TEST_CASE("for_each reads ahead and gives what read_all gives; it stops where the handler says") {
    fixture f;
    for (int k = 0; k < 25; ++k) {
      REQUIRE(f.store.append(f.c, "shop-" + std::to_string(k % 4), ev::expected_version::any(),
                             {event(k % 3 == 0 ? "sold" : "restocked", std::to_string(k))}));
    }
    REQUIRE(f.store.append(f.c, "other-1", ev::expected_version::any(), {event("sold")}));
    ev::all_position paged;
    const auto expected = read_to_horizon(f.store, f.c, paged, 1000, "shop");
    REQUIRE(expected.size() == 25);
    for (const std::size_t page : {1UL, 4UL, 5UL, 25UL, 100UL}) {
      CAPTURE(page);
      check_for_each_gives(f.store, f.c, {.max_count = page, .category = "shop"}, expected, paged);
    }
    // Stop after 7 with a page ahead in flight: the position is the 7th event, the connection usable.
    int handled = 0;
    auto stopped =
        f.store.for_each(f.c, {.max_count = 5, .types = {"restocked"}}, [&](const ev::recorded_event& e) {
          CHECK(e.type == "restocked");
          return ++handled < 7;
        });
    REQUIRE(stopped);
    CHECK(handled == 7);
    CHECK(!f.c.awaiting_answer());
    auto rest = f.store.read_all(f.c, {.after = *stopped, .types = {"restocked"}}).value();
    CHECK(rest.events.size() == 16 - 7);
    CHECK(f.store
              .for_each(f.c, {.dir = ev::direction::backward}, [](const ev::recorded_event&) { return true; })
              .error() == ev::errc::invalid_read);
  }

  TEST_CASE("for_each with pages larger than its read-ahead step: every event once, in order") {
    fixture f;
    // 1,500 events: pages of 600 take the next page from the socket while handling this one.
    for (int batch = 0; batch < 3; ++batch) {
      std::vector<ev::new_event> events;
      for (int k = 0; k < 500; ++k) events.push_back(event("tick", std::to_string(batch * 500 + k)));
      REQUIRE(f.store.append(f.c, "clock-" + std::to_string(batch), ev::expected_version::any(), events));
    }
    ev::all_position paged;
    const auto expected = read_to_horizon(f.store, f.c, paged, 1000, "");
    REQUIRE(expected.size() == 1500);
    check_for_each_gives(f.store, f.c, {.max_count = 600}, expected, paged);
  }

  TEST_CASE("deletion: soft delete hides the past and the stream goes on; a tombstone refuses appends") {
    fixture f;
    REQUIRE(f.store.append(f.c, "user-1", ev::expected_version::any(), {event("a"), event("b")}));
    auto wrong =
        f.store.delete_stream(f.c, "user-1", ev::expected_version::exact(0), ev::delete_mode::soft).value();
    CHECK(!wrong);
    CHECK(wrong.version == 1);
    REQUIRE(
        f.store.delete_stream(f.c, "user-1", ev::expected_version::exact(1), ev::delete_mode::soft).value());
    CHECK(f.store.stream(f.c, "user-1").value().status == ev::stream_status::deleted);
    CHECK(f.store.read_stream(f.c, "user-1").value().events.empty());
    // Recreated: versions go on, the old events stay hidden.
    auto back = f.store.append(f.c, "user-1", ev::expected_version::no_stream(), {event("c")}).value();
    REQUIRE(back);
    CHECK(back.version == 2);
    auto page = f.store.read_stream(f.c, "user-1").value();
    CHECK(page.status == ev::stream_status::active);
    REQUIRE(page.events.size() == 1);
    CHECK(page.events[0].type == "c");

    REQUIRE(f.store.delete_stream(f.c, "user-1", ev::expected_version::any(), ev::delete_mode::tombstone)
                .value());
    CHECK(f.store.append(f.c, "user-1", ev::expected_version::any(), {event("d")}).error() ==
          ev::errc::stream_deleted);
    CHECK(f.store.delete_stream(f.c, "user-1", ev::expected_version::any(), ev::delete_mode::soft).error() ==
          ev::errc::stream_deleted);
    CHECK(f.store.read_stream(f.c, "user-1").value().status == ev::stream_status::tombstoned);
    // A tombstone on a stream that never existed reserves the name.
    REQUIRE(
        f.store.delete_stream(f.c, "user-2", ev::expected_version::no_stream(), ev::delete_mode::tombstone)
            .value());
    CHECK(f.store.append(f.c, "user-2", ev::expected_version::any(), {event("d")}).error() ==
          ev::errc::stream_deleted);
    CHECK(f.count_events() == 3);

    // Scavenging reclaims what deletion hid; reads do not change.
    auto swept = f.store.scavenge(f.c).value();
    CHECK(swept.events_removed == 3);
    CHECK(!swept.more);
    CHECK(f.count_events() == 0);
  }

  TEST_CASE("retention: max_count and truncate_before hide old events; scavenge reclaims them in rounds") {
    fixture f;
    ev::stream_settings keep_three{.max_count = 3, .custom = R"({"owner": "billing"})"};
    REQUIRE(f.store.set_stream_settings(f.c, "metric-1", keep_three));
    CHECK(f.store.stream(f.c, "metric-1").value().status == ev::stream_status::not_found);
    for (int k = 0; k < 8; ++k)
      REQUIRE(f.store.append(f.c, "metric-1", ev::expected_version::any(), {event("tick")}));
    REQUIRE(f.store.append(f.c, "metric-2", ev::expected_version::any(), {event("tick"), event("tick")}));
    auto page = f.store.read_stream(f.c, "metric-1").value();
    REQUIRE(page.events.size() == 3);
    CHECK(page.events[0].version == 5);
    auto info = f.store.stream(f.c, "metric-1").value();
    CHECK(info.settings == keep_three);
    CHECK(info.last_version == 7);

    auto first = f.store.scavenge(f.c, 3).value();
    CHECK(first.events_removed == 3);
    CHECK(first.more);
    CHECK(f.store.scavenge(f.c, 3).value().events_removed == 2);
    CHECK(f.count_events() == 5);
    CHECK(f.store.read_stream(f.c, "metric-1").value().events.size() == 3);

    REQUIRE(f.store.set_stream_settings(f.c, "metric-2", {.truncate_before = 1}));
    page = f.store.read_stream(f.c, "metric-2").value();
    REQUIRE(page.events.size() == 1);
    CHECK(page.events[0].version == 1);
    CHECK(f.store.set_stream_settings(f.c, "metric-2", {.max_count = -1}).error() ==
          ev::errc::invalid_metadata);
    CHECK(f.store.set_stream_settings(f.c, "metric-2", {.custom = "[]"}).error() ==
          ev::errc::invalid_metadata);
  }

  TEST_CASE("checkpoints: saved in the caller's transaction, so they go with what was built") {
    fixture f;
    CHECK(!f.store.checkpoint(f.c, "projector").value());
    REQUIRE(f.store.save_checkpoint(f.c, "projector", {5, 9}));
    {
      auto tx = keel::pg::transaction::begin(f.c).value();
      REQUIRE(f.store.save_checkpoint(f.c, "projector", {6, 1}));
      REQUIRE(tx.rollback());
    }
    CHECK(f.store.checkpoint(f.c, "projector").value() == ev::all_position{5, 9});
    CHECK(f.store.save_checkpoint(f.c, "", {1, 1}).error() == ev::errc::invalid_checkpoint_name);
  }

  TEST_CASE("subscription: catch up from the start, then live; a restart resumes from the checkpoint") {
    fixture f;
    for (int k = 0; k < 30; ++k) {
      const auto stream = k % 10 == 9 ? std::string("other-1") : "order-" + std::to_string(k % 3);
      REQUIRE(f.store.append(f.c, stream, ev::expected_version::any(), {event("e", std::to_string(k))}));
    }
    collected got;
    {
      ev::subscription sub({.conninfo = f.schema.conninfo,
                            .name = "orders",
                            .category = "order",
                            .page_size = 7,
                            .checkpoint_every = 10},
                           got.handler());
      REQUIRE(sub.start());
      CHECK(sub.start().error() == ev::errc::subscription_running);
      REQUIRE(sub.wait_for_count(27, std::chrono::seconds(20)));
      // Live: woken by the append's notification.
      for (int k = 0; k < 5; ++k) {
        REQUIRE(
            f.store.append(f.c, "order-9", ev::expected_version::any(), {event("live", std::to_string(k))}));
      }
      REQUIRE(f.store.append(f.c, "other-2", ev::expected_version::any(), {event("not mine")}));
      REQUIRE(sub.wait_for_count(32, std::chrono::seconds(20)));
      sub.stop();
      CHECK(!sub.stats().running);
    }
    ev::all_position from_start;
    const auto expected = read_to_horizon(f.store, f.c, from_start, 1000, "order");
    auto delivered = got.copy();
    REQUIRE(delivered.size() == expected.size());
    for (std::size_t k = 0; k < expected.size(); ++k) CHECK(delivered[k].id == expected[k].id);
    const auto checkpoint = f.store.checkpoint(f.c, "orders").value();
    REQUIRE(checkpoint);
    CHECK(*checkpoint >= expected.back().position);

    // Started again under the same name: only what came after.
    REQUIRE(f.store.append(f.c, "order-1", ev::expected_version::any(), {event("after restart")}));
    collected again;
    ev::subscription second({.conninfo = f.schema.conninfo, .name = "orders", .category = "order"},
                            again.handler());
    REQUIRE(second.start());
    REQUIRE(second.wait_for_count(1, std::chrono::seconds(20)));
    second.stop();
    const auto after = again.copy();
    REQUIRE(after.size() == 1);
    CHECK(after[0].type == "after restart");
  }

  TEST_CASE(
      "subscription: live, the lower position commits last; it waits at the horizon and skips nothing") {
    fixture f;
    collected got;
    ev::subscription sub({.conninfo = f.schema.conninfo}, got.handler());
    REQUIRE(sub.start());
    REQUIRE(eventually([&] { return sub.stats().caught_up && sub.stats().wakeups >= 1; }));  // listening

    auto early = f.schema.connect();
    auto tx = keel::pg::transaction::begin(early).value();
    auto low = f.store.append(early, "order-1", ev::expected_version::any(), {event("first drawn")}).value();
    const auto wakeups = sub.stats().wakeups;
    auto high =
        f.store.append(f.c, "order-2", ev::expected_version::any(), {event("first committed")}).value();
    REQUIRE(low.positions[0].position < high.positions[0].position);
    // The notification of order-2 woke it; it read, and found nothing below the horizon.
    REQUIRE(eventually([&] { return sub.stats().wakeups > wakeups; }));
    REQUIRE(eventually([&] { return f.store.horizon(f.c).value().events_waiting == 1; }));
    CHECK(sub.stats().delivered == 0);
    REQUIRE(tx.commit());
    REQUIRE(sub.wait_for_count(2, std::chrono::seconds(20)));
    const auto delivered = got.copy();
    REQUIRE(delivered.size() == 2);
    CHECK(delivered[0].type == "first drawn");
    CHECK(delivered[1].type == "first committed");
  }

  TEST_CASE("subscription to one stream: its events in version order, from a checkpoint, live") {
    fixture f;
    for (int k = 0; k < 12; ++k) {
      REQUIRE(f.store.append(f.c, k % 3 == 0 ? "cart-1" : "cart-x" + std::to_string(k),
                             ev::expected_version::any(), {event("step", std::to_string(k))}));
    }
    // read_all on one stream: by version, paged, resumable from any position of the global order.
    ev::all_position cursor;
    std::vector<std::int64_t> versions;
    for (;;) {
      auto page = f.store.read_all(f.c, {.after = cursor, .max_count = 2, .stream = "cart-1"}).value();
      for (const auto& e : page.events) versions.push_back(e.version);
      cursor = page.next;
      if (page.caught_up) break;
    }
    CHECK(versions == std::vector<std::int64_t>{0, 1, 2, 3});
    CHECK(f.store.read_all(f.c, {.dir = ev::direction::backward, .stream = "cart-1"}).error() ==
          ev::errc::invalid_read);
    CHECK(f.store.read_all(f.c, {.category = "cart", .stream = "cart-1"}).error() == ev::errc::invalid_read);

    collected got;
    ev::subscription sub({.conninfo = f.schema.conninfo, .name = "cart-1-watcher", .stream = "cart-1"},
                         got.handler());
    REQUIRE(sub.start());
    REQUIRE(sub.wait_for_count(4, std::chrono::seconds(20)));
    REQUIRE(f.store.append(f.c, "cart-2", ev::expected_version::any(), {event("not mine")}));
    REQUIRE(f.store.append(f.c, "cart-1", ev::expected_version::exact(3), {event("live")}));
    REQUIRE(sub.wait_for_count(5, std::chrono::seconds(20)));
    sub.stop();
    const auto delivered = got.copy();
    REQUIRE(delivered.size() == 5);
    for (std::size_t k = 0; k < delivered.size(); ++k) {
      CHECK(delivered[k].stream == "cart-1");
      CHECK(delivered[k].version == static_cast<std::int64_t>(k));
    }
    // Started again: nothing twice.
    collected again;
    ev::subscription second({.conninfo = f.schema.conninfo, .name = "cart-1-watcher", .stream = "cart-1"},
                            again.handler());
    REQUIRE(f.store.append(f.c, "cart-1", ev::expected_version::exact(4), {event("after")}));
    REQUIRE(second.start());
    REQUIRE(second.wait_for_count(1, std::chrono::seconds(20)));
    second.stop();
    REQUIRE(again.copy().size() == 1);
    CHECK(again.copy()[0].version == 5);
  }

  TEST_CASE("subscription: a failing handler gets the same event again; nothing is skipped or repeated") {
    fixture f;
    for (int k = 0; k < 6; ++k)
      REQUIRE(f.store.append(f.c, "task-1", ev::expected_version::any(), {event("t")}));
    std::mutex mutex;
    std::vector<std::int64_t> handled;
    int failures_left = 2;
    ev::subscription sub(
        {.conninfo = f.schema.conninfo, .page_size = 2, .min_retry_delay = std::chrono::milliseconds(1)},
        [&](const ev::recorded_event& e) -> keel::result<void> {
          const std::lock_guard lock(mutex);
          if (e.version == 3 && failures_left > 0) {
            --failures_left;
            if (failures_left == 0) throw std::runtime_error("a handler that throws");
            return keel::pg::errc::connection_lost;  // e.g. its own database was away
          }
          handled.push_back(e.version);
          return {};
        });
    REQUIRE(sub.start());
    const bool all = sub.wait_for_count(6, std::chrono::seconds(20));
    MESSAGE("delivered " << sub.stats().delivered << " failures " << sub.stats().handler_failures << " error "
                         << sub.stats().last_error.message());
    REQUIRE(all);
    sub.stop();
    CHECK(handled == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5});
    CHECK(sub.stats().handler_failures == 2);
  }

  TEST_CASE("subscription: Postgres restarts under it; it reconnects and delivers what came meanwhile") {
    auto* cluster = keel::test::cluster();
    if (cluster == nullptr) {
      MESSAGE("KEEL_DATABASE_URL names the server: not restarting it");
      return;
    }
    fixture f;
    collected got;
    ev::subscription sub({.conninfo = f.schema.conninfo,
                          .name = "survivor",
                          .poll_interval = std::chrono::milliseconds(200),
                          .min_retry_delay = std::chrono::milliseconds(20),
                          .max_retry_delay = std::chrono::milliseconds(500)},
                         got.handler());
    REQUIRE(sub.start());
    for (int k = 0; k < 5; ++k)
      REQUIRE(f.store.append(f.c, "pay-1", ev::expected_version::any(), {event("before")}));
    REQUIRE(sub.wait_for_count(5, std::chrono::seconds(20)));
    REQUIRE(cluster->restart());
    auto c = f.schema.connect();
    for (int k = 0; k < 5; ++k)
      REQUIRE(f.store.append(c, "pay-1", ev::expected_version::any(), {event("after")}));
    REQUIRE(sub.wait_for_count(10, std::chrono::seconds(30)));
    sub.stop();
    const auto delivered = got.copy();
    REQUIRE(delivered.size() == 10);
    for (std::size_t k = 0; k < delivered.size(); ++k)
      CHECK(delivered[k].version == static_cast<std::int64_t>(k));
    CHECK(sub.stats().reconnects >= 1);
    CHECK(f.store.checkpoint(c, "survivor").value().value() >= delivered.back().position);
  }

  TEST_CASE(
      "projection: batches commit with their checkpoint; a failing batch rolls back whole; rebuild replays") {
    fixture f;
    REQUIRE(f.c.execute("CREATE TABLE counts (stream text PRIMARY KEY, n bigint NOT NULL)"));
    for (int k = 0; k < 40; ++k) {
      REQUIRE(f.store.append(f.c, "cart-" + std::to_string(k % 4), ev::expected_version::any(),
                             {event("added")}));
    }
    std::atomic<int> fail_batches{1};
    ev::projection counts(
        {.conninfo = f.schema.conninfo,
         .name = "counts",
         .batch_size = 7,
         .min_retry_delay = std::chrono::milliseconds(1)},
        [&](keel::pg::connection& c, std::span<const ev::recorded_event> batch) -> keel::result<void> {
          for (const auto& e : batch) {
            auto done = c.query(
                "INSERT INTO counts AS t VALUES ($1, 1) ON CONFLICT (stream) DO UPDATE SET n = t.n + 1",
                e.stream);
            if (!done) return done.error();
          }
          // The first batch fails after writing: its rows must go with it.
          if (fail_batches.fetch_sub(1) > 0) return keel::pg::errc::serialization_failure;
          return {};
        });
    REQUIRE(counts.start());
    ev::all_position from_start;
    const auto all = read_to_horizon(f.store, f.c, from_start);
    REQUIRE(counts.wait_for(all.back().position, std::chrono::seconds(20)));
    const auto total = [&] {
      return f.c.query("SELECT coalesce(sum(n), 0)::bigint FROM counts")
          .value()
          .value<std::int64_t>()
          .value();
    };
    CHECK(total() == 40);
    CHECK(counts.stats().failures == 1);
    CHECK(counts.stats().applied == 40);

    // Live, woken by the append.
    REQUIRE(f.store.append(f.c, "cart-9", ev::expected_version::any(), {event("added")}));
    ev::all_position cursor = all.back().position;
    const auto more = read_to_horizon(f.store, f.c, cursor);
    REQUIRE(more.size() == 1);
    REQUIRE(counts.wait_for(more[0].position, std::chrono::seconds(20)));
    CHECK(total() == 41);

    // Rebuild: reset and replay, under the projection's lock.
    REQUIRE(ev::projection::rebuild(f.c, "counts", [](keel::pg::connection& c) -> keel::result<void> {
      if (auto done = c.execute("TRUNCATE counts"); !done) return done.error();
      return {};
    }));
    REQUIRE(ev::projection::wait_for_checkpoint(f.c, "counts", more[0].position, std::chrono::seconds(20)));
    CHECK(total() == 41);
    counts.stop();
    CHECK(counts.stats().applied == 82);
  }

  TEST_CASE(
      "inline projections: the read model commits with the events; a failure or a throw undoes the append") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(ev::migrate(c));
    REQUIRE(c.execute(
        "CREATE TABLE order_totals (stream text PRIMARY KEY, total bigint NOT NULL, lines int NOT NULL)"));
    std::atomic<int> order_calls{0};
    std::atomic<int> other_calls{0};
    const std::vector<ev::inline_projection> projections{
        {.name = "order-totals",
         .category = "order",
         .types = {"line_added"},
         .apply = [&](connection& on, std::span<const ev::recorded_event> events) -> keel::result<void> {
           ++order_calls;
           for (const auto& e : events) {
             if (e.type != "line_added") return ev::errc::invalid_event_type;  // the filter let it through
             if (e.data.find("refuse") != std::string::npos) return keel::pg::errc::check_violation;
             if (e.data.find("throw") != std::string::npos) throw std::runtime_error("projection bug");
             auto done = on.query(
                 "INSERT INTO order_totals AS t VALUES ($1, ($2::json->>'amount')::bigint, 1) "
                 "ON CONFLICT (stream) DO UPDATE SET total = t.total + excluded.total, lines = t.lines + 1",
                 e.stream, e.data);
             if (!done) return done.error();
           }
           return {};
         }},
        {.name = "others",
         .category = "invoice",
         .apply = [&](connection&, std::span<const ev::recorded_event>) -> keel::result<void> {
           ++other_calls;
           return {};
         }},
    };
    const ev::store store({.inline_projections = projections});
    const auto total_of = [&](std::string_view stream) {
      auto rows = c.query("SELECT total FROM order_totals WHERE stream = $1", stream).value();
      return rows.empty() ? std::int64_t{-1} : rows[0].get<std::int64_t>(0).value();
    };
    const auto events_in = [&](std::string_view stream) {
      return c.query("SELECT count(*) FROM keel_events WHERE stream = $1", stream)
          .value()
          .value<std::int64_t>()
          .value();
    };

    // Written together: the filter passes line_added only; the other category's projection
    // does not run.
    const std::vector<ev::new_event> first{
        {.id = uuid_of(1), .type = "line_added", .data = R"({"amount": 300})"},
        {.id = uuid_of(2), .type = "noted", .data = R"({"text": "gift"})"},
        {.id = uuid_of(3), .type = "line_added", .data = R"({"amount": 450})"}};
    auto placed = store.append(c, "order-1", ev::expected_version::no_stream(), first).value();
    REQUIRE(placed.status == ev::append_status::appended);
    CHECK(total_of("order-1") == 750);
    CHECK(order_calls.load() == 1);
    CHECK(other_calls.load() == 0);
    // An idempotent retry writes nothing and projects nothing.
    auto again = store.append(c, "order-1", ev::expected_version::no_stream(), first).value();
    CHECK(again.status == ev::append_status::already_appended);
    CHECK(order_calls.load() == 1);
    CHECK(total_of("order-1") == 750);
    // A batch without a line_added is not shown to it.
    REQUIRE(store.append(c, "order-1", ev::expected_version::any(), {event("noted")}));
    CHECK(order_calls.load() == 1);

    // The projection refuses: the append is undone, the stream and read model as before.
    auto refused = store.append(
        c, "order-1", ev::expected_version::any(),
        {event("line_added", R"({"amount": 1})"), event("line_added", R"({"amount": 2, "refuse": true})")});
    REQUIRE(!refused);
    CHECK(refused.error() == keel::pg::errc::check_violation);
    CHECK(events_in("order-1") == 4);
    CHECK(total_of("order-1") == 750);
    CHECK(!c.in_transaction());
    // It throws: the exception reaches the caller, and nothing of the append stays.
    CHECK_THROWS_AS((void)store.append(c, "order-1", ev::expected_version::any(),
                                       {event("line_added", R"({"amount": 5, "throw": true})")}),
                    std::runtime_error);
    CHECK(!c.in_transaction());
    CHECK(events_in("order-1") == 4);
    CHECK(total_of("order-1") == 750);

    // Inside the caller's transaction: both exist iff it commits; a refusal undoes only the
    // append (a savepoint), and the caller's transaction goes on.
    REQUIRE(c.execute("BEGIN"));
    REQUIRE(store.append(c, "order-2", ev::expected_version::no_stream(),
                         {event("line_added", R"({"amount": 9})")}));
    REQUIRE(c.execute("ROLLBACK"));
    CHECK(events_in("order-2") == 0);
    CHECK(total_of("order-2") == -1);
    REQUIRE(c.execute("BEGIN"));
    REQUIRE(store.append(c, "order-2", ev::expected_version::no_stream(),
                         {event("line_added", R"({"amount": 9})")}));
    auto inside = store.append(c, "order-2", ev::expected_version::any(),
                               {event("line_added", R"({"amount": 1, "refuse": true})")});
    CHECK(!inside);
    CHECK(!c.in_failed_transaction());
    REQUIRE(c.execute("COMMIT"));
    CHECK(events_in("order-2") == 1);
    CHECK(total_of("order-2") == 9);

    // An atomic multi-stream append: each stream projected; one refusal undoes every stream.
    const std::vector<ev::stream_append> both{
        {.stream = "order-3", .events = {event("line_added", R"({"amount": 10})")}},
        {.stream = "invoice-3", .events = {event("issued")}}};
    REQUIRE(store.append_many(c, both).value());
    CHECK(total_of("order-3") == 10);
    CHECK(other_calls.load() == 1);
    const std::vector<ev::stream_append> spoiled{
        {.stream = "invoice-4", .events = {event("issued")}},
        {.stream = "order-4", .events = {event("line_added", R"({"amount": 1, "refuse": true})")}}};
    auto none = store.append_many(c, spoiled);
    REQUIRE(!none);
    CHECK(none.error() == keel::pg::errc::check_violation);
    CHECK(events_in("invoice-4") == 0);
    CHECK(events_in("order-4") == 0);
    CHECK(!c.in_transaction());
  }

  TEST_CASE(
      "a projection refreshing a materialized view: once its checkpoint is at a position, the view has it") {
    fixture f;
    REQUIRE(
        f.c.execute("CREATE MATERIALIZED VIEW tally_counts AS SELECT stream, count(*) AS n FROM keel_events "
                    "WHERE category = 'tally' GROUP BY stream"));
    REQUIRE(f.c.execute("CREATE UNIQUE INDEX ON tally_counts (stream)"));
    ev::projection refresher({.conninfo = f.schema.conninfo,
                              .name = "tally-view",
                              .category = "tally",
                              .batch_size = 10'000,
                              .min_batch_interval = std::chrono::milliseconds(20)},
                             ev::refresh_materialized_view("tally_counts", {.concurrently = true}));
    REQUIRE(refresher.start());
    ev::all_position last;
    for (int k = 0; k < 30; ++k) {
      last =
          f.store
              .append(f.c, "tally-" + std::to_string(k % 3), ev::expected_version::any(), {event("counted")})
              .value()
              .positions.back();
    }
    REQUIRE(refresher.wait_for(last, std::chrono::seconds(20)));
    auto rows = f.c.query("SELECT stream, n FROM tally_counts ORDER BY stream").value();
    REQUIRE(rows.size() == 3);
    for (const auto r : rows) CHECK(r.get<std::int64_t>(1).value() == 10);
    CHECK(refresher.stats().failures == 0);
    refresher.stop();

    // A view that is not there: batches roll back with Postgres's error, the checkpoint stays.
    ev::projection missing({.conninfo = f.schema.conninfo,
                            .name = "missing-view",
                            .category = "tally",
                            .min_retry_delay = std::chrono::milliseconds(1),
                            .max_retry_delay = std::chrono::milliseconds(5)},
                           ev::refresh_materialized_view("public.no_such_view"));
    REQUIRE(missing.start());
    REQUIRE(eventually([&] { return missing.stats().failures >= 2; }));
    CHECK(missing.stats().last_error == keel::pg::errc::undefined_table);
    missing.stop();
    CHECK(!f.store.checkpoint(f.c, "missing-view").value());
    CHECK_THROWS_AS((void)ev::refresh_materialized_view(""), std::invalid_argument);
  }

  TEST_CASE(
      "reliability: 2 writer processes x 100,000 events, 2 projectors, one SIGKILLed, Postgres restarted") {
    auto* cluster = keel::test::cluster();
    if (cluster == nullptr) {
      MESSAGE("KEEL_DATABASE_URL names the server: not restarting it");
      return;
    }
    fixture f;
    REQUIRE(f.c.execute(
        "CREATE TABLE test_totals (stream text PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL)"));
    constexpr int per_writer = 100'000;
    child projector_1({"project", f.schema.conninfo});
    child projector_2({"project", f.schema.conninfo});
    child writer_1({"write", f.schema.conninfo, "1", std::to_string(per_writer)});
    child writer_2({"write", f.schema.conninfo, "2", std::to_string(per_writer)});
    const auto stored = [&] {
      auto n = f.c.query("SELECT count(*) FROM keel_events");
      return n ? n->value<std::int64_t>().value() : std::int64_t{-1};
    };
    // Mid-run: a projector dies without warning once the projection is under way ...
    REQUIRE(ev::projection::wait_for_checkpoint(f.c, "totals", {0, 1}, std::chrono::seconds(60)));
    projector_1.kill(SIGKILL);
    projector_1.wait();
    // ... and Postgres restarts while both writers are still appending.
    REQUIRE(eventually([&] { return stored() >= 60'000; }, std::chrono::seconds(120)));
    const auto at_restart = stored();
    REQUIRE(cluster->restart());
    REQUIRE(f.c.reset());
    MESSAGE("Postgres restarted with " << at_restart << " events stored");
    CHECK(at_restart < 2 * per_writer);
    CHECK(writer_1.wait() == 0);
    CHECK(writer_2.wait() == 0);
    CHECK(stored() == 2 * per_writer);  // each event once, though batches were re-sent

    auto last =
        f.store
            .read_all(f.c, {.after = ev::all_position::end(), .dir = ev::direction::backward, .max_count = 1})
            .value();
    REQUIRE(last.events.size() == 1);
    REQUIRE(ev::projection::wait_for_checkpoint(f.c, "totals", last.events[0].position,
                                                std::chrono::seconds(120)));
    // The projection equals the fold of the events, each applied exactly once.
    auto mismatches = f.c.query(R"sql(
      SELECT count(*) FROM (
        SELECT stream, count(*) AS events, sum((data::jsonb ->> 'n')::bigint) AS total FROM keel_events GROUP BY stream
      ) e FULL JOIN test_totals t USING (stream)
      WHERE e.events IS DISTINCT FROM t.events OR e.total IS DISTINCT FROM t.total)sql");
    CHECK(mismatches.value().value<std::int64_t>().value() == 0);
    CHECK(f.c.query("SELECT sum(events)::bigint FROM test_totals").value().value<std::int64_t>().value() ==
          2 * per_writer);
    projector_2.kill(SIGTERM);
    CHECK(projector_2.wait() == 0);
  }

  TEST_CASE(
      "aggregates: decide on the loaded state, retry on conflict, never over-commit; snapshots shorten "
      "loads") {
    fixture f;
    struct seats {
      std::int64_t taken = 0;
    };
    const ev::aggregate_type<seats> flights{
        .apply = [](seats& s, const ev::recorded_event& e) { s.taken += e.type == "seat_booked" ? 1 : 0; },
        .to_json = [](const seats& s) { return R"({"taken": )" + std::to_string(s.taken) + "}"; },
        .from_json = [](std::string_view json) -> std::optional<seats> {
          const auto colon = json.find(':');
          if (colon == std::string_view::npos) return std::nullopt;
          return seats{std::stoll(std::string(json.substr(colon + 1)))};
        },
        .snapshot_every = 4};
    // 4 agents book as long as seats are left: 25 seats, 40 attempts; conflicts are decided again.
    constexpr std::int64_t capacity = 25;
    std::atomic<int> refused{0};
    std::vector<std::thread> agents;
    for (int t = 0; t < 4; ++t) {
      agents.emplace_back([&] {
        auto c = f.schema.connect();
        for (int k = 0; k < 10; ++k) {
          auto done = ev::execute(
              f.store, c, "flight-7", flights,
              [&](const seats& now) -> keel::result<std::vector<ev::new_event>> {
                if (now.taken >= capacity) {
                  ++refused;
                  return std::vector<ev::new_event>{};
                }
                return std::vector<ev::new_event>{event("seat_booked")};
              },
              50);
          CHECK(done);
          CHECK(done->status != ev::append_status::wrong_expected_version);
        }
      });
    }
    for (auto& a : agents) a.join();
    auto now = ev::load(f.store, f.c, "flight-7", flights).value();
    CHECK(now.state.taken == capacity);  // never over-booked
    CHECK(now.version == capacity - 1);
    CHECK(refused.load() == 40 - capacity);
    CHECK(now.from_snapshot);
    CHECK(now.events_read < 4);  // only the events after the last snapshot
    const auto snap = f.store.load_snapshot(f.c, "flight-7").value().value();
    CHECK(snap.version >= 20);
    CHECK(snap.schema_version == 1);

    // A new shape of the state ignores old snapshots and replays the stream.
    auto reshaped = flights;
    reshaped.schema_version = 2;
    auto replayed = ev::load(f.store, f.c, "flight-7", reshaped).value();
    CHECK(!replayed.from_snapshot);
    CHECK(replayed.events_read == capacity);
    CHECK(replayed.state.taken == capacity);
    // An older snapshot never replaces a newer one.
    REQUIRE(f.store.save_snapshot(f.c, "flight-7", {.version = 1, .state = R"({"taken": 2})"}));
    CHECK(f.store.load_snapshot(f.c, "flight-7").value().value().version == snap.version);
  }

  TEST_CASE("upcasting: stored events stay as written; every read sees the newest shape") {
    fixture f;
    REQUIRE(f.store.append(f.c, "order-1", ev::expected_version::any(),
                           {event("order_placed.v1", R"({"total": 12.5})"), event("order_paid")}));
    ev::upcasters chain;
    REQUIRE(chain.add("order_placed.v1", [](ev::recorded_event& e) -> keel::result<void> {
      e.type = "order_placed.v2";  // v2: {"total_cents": n}
      e.data = R"({"total_cents": 1250})";
      return {};
    }));
    REQUIRE(chain.add("order_placed.v2", [](ev::recorded_event& e) -> keel::result<void> {
      e.type = "order_placed.v3";  // v3 adds the currency
      e.data.insert(1, R"("currency": "EUR", )");
      return {};
    }));
    CHECK(
        chain.add("order_placed.v2", [](ev::recorded_event&) -> keel::result<void> { return {}; }).error() ==
        ev::errc::invalid_event_type);
    const ev::store upcasting(ev::store_options{.upcast = &chain});
    auto page = upcasting.read_stream(f.c, "order-1").value();
    REQUIRE(page.events.size() == 2);
    CHECK(page.events[0].type == "order_placed.v3");
    CHECK(page.events[0].data == R"({"currency": "EUR", "total_cents": 1250})");
    CHECK(page.events[1].type == "order_paid");
    CHECK(upcasting.read_all(f.c).value().events[0].type == "order_placed.v3");
    std::string seen;
    REQUIRE(upcasting.for_each(f.c, {}, [&](const ev::recorded_event& e) {
      seen += e.type + ";";
      return true;
    }));
    CHECK(seen == "order_placed.v3;order_paid;");
    CHECK(f.store.read_stream(f.c, "order-1").value().events[0].type ==
          "order_placed.v1");  // stored as written

    collected got;
    ev::subscription sub({.conninfo = f.schema.conninfo, .upcast = &chain}, got.handler());
    REQUIRE(sub.start());
    REQUIRE(sub.wait_for_count(2, std::chrono::seconds(20)));
    sub.stop();
    CHECK(got.copy()[0].type == "order_placed.v3");

    ev::upcasters loop;
    REQUIRE(loop.add("a", [](ev::recorded_event& e) -> keel::result<void> {
      e.type = "b";
      return {};
    }));
    REQUIRE(loop.add("b", [](ev::recorded_event& e) -> keel::result<void> {
      e.type = "a";
      return {};
    }));
    REQUIRE(f.store.append(f.c, "loop-1", ev::expected_version::any(), {event("a")}));
    CHECK(ev::store(ev::store_options{.upcast = &loop}).read_stream(f.c, "loop-1").error() ==
          ev::errc::upcast_cycle);
    ev::upcasters failing;
    REQUIRE(
        failing.add("a", [](ev::recorded_event&) -> keel::result<void> { return ev::errc::invalid_json; }));
    CHECK(ev::store(ev::store_options{.upcast = &failing}).read_stream(f.c, "loop-1").error() ==
          ev::errc::upcast_failed);
  }

  TEST_CASE(
      "consumer groups: members share partitions, every event once, each stream in order; leaving hands "
      "over") {
    fixture f;
    const auto append_round = [&](int round, int per_stream) {
      for (int k = 0; k < per_stream; ++k) {
        for (int s = 0; s < 8; ++s) {
          REQUIRE(f.store.append(f.c, "shard-" + std::to_string(s), ev::expected_version::any(),
                                 {event("tick", std::to_string(round))}));
        }
      }
    };
    append_round(0, 20);
    struct handled_event {
      std::string member, stream;
      std::int64_t version;
      keel::pg::uuid id;
    };
    std::mutex mutex;
    std::vector<handled_event> handled;
    const auto handler_for = [&](std::string member) {
      return [&, member](const ev::recorded_event& e) -> keel::result<void> {
        const std::lock_guard lock(mutex);
        handled.push_back({member, e.stream, e.version, e.id});
        return {};
      };
    };
    const ev::consumer_group_options options{.conninfo = f.schema.conninfo,
                                             .group = "billing",
                                             .partitions = 8,
                                             .session_timeout = std::chrono::milliseconds(3000),
                                             .heartbeat_interval = std::chrono::milliseconds(30),
                                             .page_size = 16,
                                             .poll_interval = std::chrono::milliseconds(50)};
    auto a_options = options;
    a_options.member = "a";
    auto b_options = options;
    b_options.member = "b";
    ev::consumer a(a_options, handler_for("a"));
    ev::consumer b(b_options, handler_for("b"));
    REQUIRE(a.start());
    REQUIRE(a.wait_for_owned(8, std::chrono::seconds(20)));
    REQUIRE(a.wait_for_count(160, std::chrono::seconds(20)));
    REQUIRE(b.start());
    REQUIRE(b.wait_for_owned(4, std::chrono::seconds(20)));
    REQUIRE(a.wait_for_owned(4, std::chrono::seconds(20)));
    CHECK(a.stats().rebalances >= 2);
    append_round(1, 10);
    REQUIRE(eventually([&] { return a.stats().delivered + b.stats().delivered == 240; }));
    CHECK(b.stats().delivered > 0);

    // Members joining a new group at the same moment both get in (the second one's insert
    // waits for the first's and must then find the group).
    for (int round = 0; round < 5; ++round) {
      auto racing = options;
      racing.group = "race-" + std::to_string(round);
      auto left = racing;
      left.member = "left";
      auto right = racing;
      right.member = "right";
      const auto ignore = [](const ev::recorded_event&) -> keel::result<void> { return {}; };
      ev::consumer l(left, ignore);
      ev::consumer r(right, ignore);
      keel::result<void> l_started, r_started;
      std::thread lt([&] { l_started = l.start(); });
      std::thread rt([&] { r_started = r.start(); });
      lt.join();
      rt.join();
      CHECK(l_started);
      CHECK(r_started);
    }

    auto mismatched = options;
    mismatched.member = "c";
    mismatched.partitions = 4;
    ev::consumer c(mismatched, handler_for("c"));
    CHECK(c.start().error() == ev::errc::partitions_mismatch);

    a.stop();  // leaves: b takes over every partition
    REQUIRE(b.wait_for_owned(8, std::chrono::seconds(20)));
    append_round(2, 5);
    REQUIRE(eventually([&] { return a.stats().delivered + b.stats().delivered == 280; }));
    b.stop();

    const std::lock_guard lock(mutex);
    REQUIRE(handled.size() == 280);
    std::set<std::string> ids;
    std::map<std::string, std::int64_t> next_version;
    std::map<std::string, std::set<std::string>> members_of_stream;
    for (const auto& h : handled) {
      CHECK(ids.insert(h.id.to_string()).second);  // once
      CHECK(h.version == next_version[h.stream]);  // in order, across the hand-overs
      next_version[h.stream] = h.version + 1;
      members_of_stream[h.stream].insert(h.member);
    }
    for (const auto& [stream, next] : next_version) CHECK(next == 35);
  }

  TEST_CASE("metrics: appends, conflicts and reads counted; lag gauges per reader; the horizon's hold") {
    fixture f;
    keel::metrics::registry registry;
    ev::events_metrics metrics(registry);
    const ev::store counted(ev::store_options{.metrics = &metrics});
    REQUIRE(counted.append(f.c, "order-1", ev::expected_version::no_stream(), {event("a"), event("b")}));
    REQUIRE(!counted.append(f.c, "order-1", ev::expected_version::no_stream(), {event("c")}).value());
    REQUIRE(counted.read_stream(f.c, "order-1"));
    CHECK(counted.last_position(f.c).value() >= 2);
    collected got;
    ev::subscription sub({.conninfo = f.schema.conninfo, .name = "mailer", .metrics = &metrics},
                         got.handler());
    REQUIRE(sub.start());
    REQUIRE(sub.wait_for_count(2, std::chrono::seconds(20)));
    REQUIRE(eventually([&] { return sub.stats().caught_up; }));
    sub.stop();
    metrics.observe_horizon(counted.horizon(f.c).value());
    const auto text = registry.expose();
    CAPTURE(text);
    CHECK(text.find("keel_events_appended_total 2") != std::string::npos);
    CHECK(text.find("keel_events_append_conflicts_total 1") != std::string::npos);
    CHECK(text.find("keel_events_read_total 4") !=
          std::string::npos);  // 2 by read_stream, 2 by the subscription
    CHECK(text.find("keel_events_lag_events{reader=\"mailer\"} 0") != std::string::npos);
    CHECK(text.find("keel_events_horizon_waiting_events 0") != std::string::npos);
  }

  TEST_CASE(
      "strict mode: dense sequence numbers without gaps, in global order, under concurrent writers "
      "(seeded)") {
    fixture f;
    auto& rng = keel::test::rng();
    // The race first: the lower position commits last; nothing is numbered past it meanwhile.
    auto early = f.schema.connect();
    auto tx = keel::pg::transaction::begin(early).value();
    REQUIRE(f.store.append(early, "order-1", ev::expected_version::any(), {event("first drawn")}));
    REQUIRE(f.store.append(f.c, "order-2", ev::expected_version::any(), {event("first committed")}));
    CHECK(f.store.assign_sequence(f.c).value().assigned == 0);
    REQUIRE(tx.commit());
    auto numbered = f.store.assign_sequence(f.c).value();
    CHECK(numbered.assigned == 2);
    CHECK(numbered.last_sequence == 2);
    auto page = f.store.read_sequenced(f.c, 0).value();
    REQUIRE(page.events.size() == 2);
    CHECK(page.events[0].sequence == 1);
    CHECK(page.events[0].event.type == "first drawn");
    CHECK(page.events[1].sequence == 2);

    // Writers with rollbacks (which leave position gaps) while a sequencer numbers as it goes.
    std::atomic<bool> writing{true};
    std::vector<std::thread> writers;
    for (int w = 0; w < 3; ++w) {
      writers.emplace_back([&, w, seed = rng()] {
        std::mt19937_64 local(seed);
        auto c = f.schema.connect();
        for (int k = 0; k < 100; ++k) {
          auto t = keel::pg::transaction::begin(c).value();
          CHECK(f.store.append(c, "item-" + std::to_string(w), ev::expected_version::any(),
                               {event("e"), event("e")}));
          if (local() % 4 == 0) {
            CHECK(t.rollback());
          } else {
            CHECK(t.commit());
          }
        }
      });
    }
    std::thread sequencer([&] {
      auto c = f.schema.connect();
      while (writing.load()) CHECK(f.store.assign_sequence(c, 7));
    });
    for (auto& t : writers) t.join();
    writing = false;
    sequencer.join();
    while (f.store.assign_sequence(f.c, 1000).value().assigned > 0) {
    }
    ev::all_position from_start;
    const auto all = read_to_horizon(f.store, f.c, from_start, 100'000);
    std::vector<ev::sequenced_event> dense;
    std::int64_t after = 0;
    for (;;) {
      auto got = f.store.read_sequenced(f.c, after, 50).value();
      after = got.next;
      for (auto& e : got.events) dense.push_back(std::move(e));
      if (got.caught_up) break;
    }
    REQUIRE(dense.size() == all.size());
    CHECK(static_cast<std::int64_t>(dense.size()) == f.count_events());
    for (std::size_t k = 0; k < dense.size(); ++k) {
      CHECK(dense[k].sequence == static_cast<std::int64_t>(k + 1));  // 1, 2, 3 ... no gaps
      CHECK(dense[k].event.id == all[k].id);                         // in the global order
    }
  }

  TEST_CASE(
      "consumer groups: a member SIGKILLed; the other takes its partitions after the lease and misses "
      "nothing") {
    fixture f;
    REQUIRE(f.c.execute(
        "CREATE TABLE test_consumed (id bigserial PRIMARY KEY, member text, stream text, version bigint)"));
    const auto append_round = [&](int per_stream) {
      for (int k = 0; k < per_stream; ++k) {
        for (int s = 0; s < 8; ++s) {
          REQUIRE(
              f.store.append(f.c, "job-" + std::to_string(s), ev::expected_version::any(), {event("work")}));
        }
      }
    };
    append_round(50);
    child one({"consume", f.schema.conninfo, "one"});
    child two({"consume", f.schema.conninfo, "two"});
    const auto owners = [&] {
      return f.c
          .query(
              "SELECT count(DISTINCT owner) FROM keel_events_group_partitions WHERE group_name = 'workers' "
              "AND owner IS NOT NULL")
          .value()
          .value<std::int64_t>()
          .value();
    };
    REQUIRE(eventually([&] { return owners() == 2; }, std::chrono::seconds(30)));
    one.kill(SIGKILL);
    one.wait();
    append_round(20);
    const auto handled = [&] {
      return f.c.query("SELECT count(DISTINCT (stream, version)) FROM test_consumed")
          .value()
          .value<std::int64_t>()
          .value();
    };
    REQUIRE(eventually([&] { return handled() == 8 * 70; }, std::chrono::seconds(60)));
    REQUIRE(eventually(
        [&] {
          return f.c.query(
                        "SELECT count(*) FROM keel_events_group_partitions WHERE group_name = 'workers' "
                        "AND owner = 'two'")
                     .value()
                     .value<std::int64_t>()
                     .value() == 8;
        },
        std::chrono::seconds(30)));
    // Each stream in order: the first time each version was handled, versions rise.
    auto out_of_order = f.c.query(R"sql(
      SELECT count(*) FROM (
        SELECT stream, version, lag(version) OVER (PARTITION BY stream ORDER BY first_id) AS before
        FROM (SELECT stream, version, min(id) AS first_id FROM test_consumed GROUP BY stream, version) f
      ) x WHERE before IS NOT NULL AND before <> version - 1)sql");
    CHECK(out_of_order.value().value<std::int64_t>().value() == 0);
    auto again = f.c.query("SELECT count(*) - count(DISTINCT (stream, version)) FROM test_consumed");
    MESSAGE(
        "handled again after the SIGKILL (at least once): " << again.value().value<std::int64_t>().value());
    two.kill(SIGTERM);
    CHECK(two.wait() == 0);
  }

  TEST_CASE("migrations apply once; a second migrate finds them applied") {
    fixture f;
    auto again = ev::migrate(f.c).value();
    CHECK(again.applied.empty());
    CHECK(again.already_applied == ev::migrations().size());
  }
}
