// keel::crdt::text: local editing, convergence of replicas under random schedules (seeded), the
// encoding, cursors, and the two real editing traces replayed to their final text.
#include <keel/core/utf8.hpp>
#include <keel/crdt.hpp>

#include "support/subprocess.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

namespace crdt = keel::crdt;

// The JSON of a gzipped trace in tests/data/crdt (gzip is part of every Debian system).
boost::json::value read_trace(const std::string& name) {
  const auto path = std::string(KEEL_TEST_DATA_DIR) + "/crdt/" + name;
  const auto unpacked = keel::test::run_command("gzip -dc '" + path + "'");
  REQUIRE_MESSAGE(unpacked.status == 0, "cannot read " << path);
  return boost::json::parse(unpacked.output);
}

// Code points in UTF-8 text (trace positions count them).
std::size_t code_points(std::string_view utf8) {
  std::size_t n = 0;
  for (; !utf8.empty(); ++n) {
    const auto length = keel::utf8_sequence_length(utf8);
    REQUIRE(length > 0);
    utf8.remove_prefix(length);
  }
  return n;
}

// Applies one trace patch [position, deleted, inserted].
void apply_patch(crdt::text& doc, const boost::json::array& patch) {
  const auto pos = static_cast<std::size_t>(patch[0].to_number<std::int64_t>());
  const auto deleted = static_cast<std::size_t>(patch[1].to_number<std::int64_t>());
  const auto& inserted = patch[2].as_string();
  if (deleted > 0) REQUIRE(doc.erase(pos, deleted));
  if (!inserted.empty()) REQUIRE(doc.insert(pos, std::string_view(inserted.data(), inserted.size())));
}

// Brings `to` up to date with `from`.
void sync(const crdt::text& from, crdt::text& to) {
  REQUIRE(to.apply(from.delta_since(to.version())));
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("local editing: insert, erase, UTF-8, and bad input changes nothing") {
    crdt::text doc(1);
    REQUIRE(doc.insert(0, "hello"));
    REQUIRE(doc.insert(5, " world"));
    REQUIRE(doc.insert(0, "¡"));
    CHECK(doc.str() == "¡hello world");
    CHECK(doc.size() == 12);
    REQUIRE(doc.erase(1, 5));
    CHECK(doc.str() == "¡ world");
    REQUIRE(doc.insert(2, "wide 世界 "));
    CHECK(doc.str() == "¡ wide 世界 world");
    CHECK(doc.insert(99, "x").error() == crdt::errc::out_of_range);
    CHECK(doc.erase(3, 100).error() == crdt::errc::out_of_range);
    CHECK(doc.insert(0, "\xC3").error() == crdt::errc::invalid_utf8);          // cut short
    CHECK(doc.insert(0, "\xED\xA0\x80").error() == crdt::errc::invalid_utf8);  // a surrogate
    CHECK(doc.insert(0, "\xC0\xAF").error() == crdt::errc::invalid_utf8);      // overlong
    CHECK(doc.str() == "¡ wide 世界 world");
    // Typing on is one run: the items stay few.
    crdt::text typed(7);
    for (int k = 0; k < 1000; ++k) REQUIRE(typed.insert(typed.size(), "a"));
    CHECK(typed.item_count() == 1);
  }

  TEST_CASE("concurrent inserts at one place order as Yjs orders them: the lower replica id first") {
    crdt::text a(1), b(2);
    REQUIRE(a.insert(0, "a"));
    REQUIRE(b.insert(0, "b"));
    sync(a, b);
    sync(b, a);
    CHECK(a.str() == "ab");
    CHECK(b.str() == "ab");
    // Runs typed concurrently after a common prefix do not interleave.
    crdt::text c(5), d(3);
    REQUIRE(c.insert(0, "start "));
    sync(c, d);
    for (const char ch : std::string("carol")) REQUIRE(c.insert(c.size(), std::string(1, ch)));
    for (const char ch : std::string("dave")) REQUIRE(d.insert(d.size(), std::string(1, ch)));
    sync(c, d);
    sync(d, c);
    CHECK(c.str() == d.str());
    CHECK(c.str() == "start davecarol");
  }

  TEST_CASE("deltas: idempotent, in any order, waiting for what they depend on") {
    crdt::text a(1), b(2), c(3);
    REQUIRE(a.insert(0, "one"));
    const auto first = a.delta_since({});
    REQUIRE(a.insert(3, " two"));
    const auto second = a.delta_since(c.version());  // everything, again
    const auto only_two = a.delta_since({{1, 3}});   // just " two": it needs "one"
    REQUIRE(c.apply(only_two));
    CHECK(c.str().empty());
    CHECK(c.pending() == 4);
    REQUIRE(c.apply(first));
    CHECK(c.str() == "one two");
    CHECK(c.pending() == 0);
    REQUIRE(c.apply(second));
    REQUIRE(c.apply(first));
    CHECK(c.str() == "one two");
    REQUIRE(b.apply(second));
    REQUIRE(b.erase(0, 4));
    REQUIRE(a.apply(b.delta_since(a.version())));
    REQUIRE(c.apply(b.delta_since({})));
    CHECK(a.str() == "two");
    CHECK(c.str() == "two");
    CHECK(a.version() == c.version());
  }

  TEST_CASE("malformed deltas are refused and change nothing") {
    crdt::text a(1);
    REQUIRE(a.insert(0, "hello"));
    REQUIRE(a.erase(1, 2));
    const auto delta = a.delta_since({});
    crdt::text b(2);
    REQUIRE(b.insert(0, "mine"));
    for (std::size_t cut = 0; cut < delta.size(); ++cut) {
      CAPTURE(cut);
      CHECK(b.apply(keel::bytes_view(delta).first(cut)).error() == crdt::errc::malformed_delta);
    }
    CHECK(b.str() == "mine");
    CHECK(b.pending() == 0);
    // Any single changed byte: refused, or a well-formed delta of some other edit; never a crash.
    for (std::size_t at = 0; at < delta.size(); ++at) {
      auto changed = delta;
      changed[at] ^= 0x41;
      crdt::text probe(3);
      if (probe.apply(changed)) {
        // Taken as some other edit: then a consistent document, its save reading back the same.
        auto again = crdt::text(4);
        REQUIRE(again.apply(probe.delta_since({})));
        CHECK(again.pending() == 0);
        CHECK(again.str() == probe.str());
        CHECK(again.size() == probe.size());
      }
    }
    CHECK(crdt::text::load(keel::bytes{'n', 'o'}, 4).error() == crdt::errc::malformed_delta);
  }

  TEST_CASE("save and load: the same text, versions and the editing goes on") {
    crdt::text a(1), b(2);
    REQUIRE(a.insert(0, "abc def"));
    sync(a, b);
    REQUIRE(b.insert(3, " and"));
    REQUIRE(a.erase(0, 1));
    sync(a, b);
    sync(b, a);
    auto loaded = crdt::text::load(a.save(), 9).value();
    CHECK(loaded.str() == a.str());
    CHECK(loaded.version() == a.version());
    REQUIRE(loaded.insert(0, "X"));
    sync(loaded, a);
    CHECK(a.str() == "Xbc and def");
  }

  TEST_CASE("a saved document: every truncation and changed byte refused; a delta since nothing loads too") {
    crdt::text a(1), b(2);
    REQUIRE(a.insert(0, "hello wörld"));
    sync(a, b);
    REQUIRE(b.insert(5, ","));
    REQUIRE(a.erase(0, 1));
    REQUIRE(a.insert(0, "H"));
    sync(b, a);
    const auto saved = a.save();
    for (std::size_t cut = 0; cut < saved.size(); ++cut) {
      CAPTURE(cut);
      CHECK(crdt::text::load(keel::bytes_view(saved).first(cut), 3).error() == crdt::errc::malformed_delta);
    }
    for (std::size_t at = 0; at < saved.size(); ++at) {
      CAPTURE(at);
      auto changed = saved;
      changed[at] ^= 0x10;
      CHECK(crdt::text::load(changed, 3).error() == crdt::errc::malformed_delta);
    }
    auto trailing = saved;
    trailing.push_back(0);
    CHECK(crdt::text::load(trailing, 3).error() == crdt::errc::malformed_delta);
    CHECK(crdt::text::load(a.delta_since({}), 3).value().str() == "Hello, wörld");
    auto loaded = crdt::text::load(saved, 3).value();
    CHECK(loaded.str() == "Hello, wörld");
    CHECK(loaded.save() == saved);
    // The loaded document goes on converging: it takes the others' edits and they take its own.
    REQUIRE(b.insert(b.size(), "!"));
    sync(b, loaded);
    REQUIRE(loaded.erase(5, 1));
    sync(loaded, a);
    sync(b, a);
    CHECK(a.str() == "Hello wörld!");
  }

  TEST_CASE("undo and redo: a replica's own edits, step by step, in groups, and a limit") {
    crdt::text doc(1);
    CHECK_FALSE(doc.undo());
    REQUIRE(doc.insert(0, "hello"));
    REQUIRE(doc.insert(5, " wörld"));
    REQUIRE(doc.erase(0, 1));
    CHECK(doc.str() == "ello wörld");
    CHECK(doc.undo());
    CHECK(doc.str() == "hello wörld");
    CHECK(doc.undo());
    CHECK(doc.str() == "hello");
    CHECK(doc.redo());
    CHECK(doc.str() == "hello wörld");
    CHECK(doc.redo());
    CHECK(doc.str() == "ello wörld");
    CHECK_FALSE(doc.redo());
    // A new edit ends what redo could bring back.
    CHECK(doc.undo());
    REQUIRE(doc.insert(0, ">"));
    CHECK_FALSE(doc.can_redo());
    CHECK(doc.str() == ">hello wörld");
    // A group is one step: typing, then deleting in it.
    doc.begin_undo_group();
    for (const char* c : {"a", "b", "c"}) REQUIRE(doc.insert(doc.size(), c));
    REQUIRE(doc.erase(1, 5));
    doc.end_undo_group();
    CHECK(doc.str() == "> wörldabc");
    CHECK(doc.undo());
    CHECK(doc.str() == ">hello wörld");
    CHECK(doc.redo());
    CHECK(doc.str() == "> wörldabc");
    // Backspacing char by char and undoing it all, one step at a time, in any place.
    crdt::text typed(2);
    REQUIRE(typed.insert(0, "abcdef"));
    for (int k = 0; k < 4; ++k) REQUIRE(typed.erase(typed.size() - 2, 1));  // e, d, c, b
    CHECK(typed.str() == "af");
    for (int k = 0; k < 4; ++k) CHECK(typed.undo());
    CHECK(typed.str() == "abcdef");
    CHECK(typed.undo());
    CHECK(typed.str().empty());
    CHECK_FALSE(typed.undo());
    // The limit: the oldest steps go.
    crdt::text limited(3);
    limited.set_undo_limit(2);
    for (const char* c : {"x", "y", "z"}) REQUIRE(limited.insert(limited.size(), c));
    CHECK(limited.undo());
    CHECK(limited.undo());
    CHECK_FALSE(limited.undo());
    CHECK(limited.str() == "x");
    limited.set_undo_limit(0);
    REQUIRE(limited.insert(0, "w"));
    CHECK_FALSE(limited.can_undo());
  }

  TEST_CASE("undo leaves the other replicas' edits, and replicas converge through it") {
    crdt::text alice(1), bob(2);
    REQUIRE(alice.insert(0, "abc"));
    sync(alice, bob);
    REQUIRE(bob.insert(1, "X"));  // aXbc
    sync(bob, alice);
    CHECK(alice.undo());  // alice's "abc" goes; bob's "X" stays
    sync(alice, bob);
    CHECK(alice.str() == "X");
    CHECK(bob.str() == "X");
    CHECK(alice.redo());
    sync(alice, bob);
    CHECK(bob.str() == "aXbc");
    // An erase undone while the other typed next to it: the text comes back where it was.
    REQUIRE(alice.erase(2, 1));  // "b"
    sync(alice, bob);
    REQUIRE(bob.insert(3, "Y"));  // aXcY
    sync(bob, alice);
    CHECK(alice.undo());
    sync(alice, bob);
    CHECK(alice.str() == "aXbcY");
    CHECK(bob.str() == "aXbcY");
    // Bob deleted what alice's undo would delete: nothing left to do, and no harm.
    crdt::text carol(3), dave(4);
    REQUIRE(carol.insert(0, "hi"));
    sync(carol, dave);
    REQUIRE(dave.erase(0, 2));
    sync(dave, carol);
    CHECK(carol.undo());
    CHECK(carol.str().empty());
    CHECK(carol.redo());  // brings back nothing: the characters were not carol's to delete
    CHECK(carol.str().empty());
  }

  TEST_CASE("undo under random schedules: replicas edit, undo and redo, deltas astray; all converge") {
    for (std::uint32_t seed = 1; seed <= 30; ++seed) {
      CAPTURE(seed);
      std::mt19937 rng(seed);
      const std::size_t n = 2 + seed % 2;
      std::vector<crdt::text> replicas;
      for (std::size_t r = 0; r < n; ++r) replicas.emplace_back(10 + r);
      std::vector<std::pair<std::size_t, keel::bytes>> in_flight;
      for (int step = 0; step < 200; ++step) {
        auto& doc = replicas[rng() % n];
        const auto action = rng() % 12;
        if (action < 4 || doc.size() == 0) {
          REQUIRE(doc.insert(rng() % (doc.size() + 1), action % 2 == 0 ? "ab" : "é"));
        } else if (action < 6) {
          const auto pos = rng() % doc.size();
          REQUIRE(doc.erase(pos, 1 + rng() % std::min<std::size_t>(3, doc.size() - pos)));
        } else if (action < 8) {
          (void)doc.undo();
        } else if (action < 9) {
          (void)doc.redo();
        } else {
          const auto to = rng() % n;
          in_flight.emplace_back(to, doc.delta_since(replicas[to].version()));
        }
        if (!in_flight.empty() && rng() % 3 == 0) {
          const auto k = rng() % in_flight.size();
          REQUIRE(replicas[in_flight[k].first].apply(in_flight[k].second));
          in_flight.erase(in_flight.begin() + static_cast<std::ptrdiff_t>(k));
        }
      }
      for (int round = 0; round < 2; ++round) {
        for (std::size_t from = 0; from < n; ++from) {
          for (std::size_t to = 0; to < n; ++to) {
            if (from != to) sync(replicas[from], replicas[to]);
          }
        }
      }
      for (std::size_t r = 1; r < n; ++r) CHECK(replicas[r].str() == replicas[0].str());
    }
    // One replica alone: undoing everything empties the text, redoing everything restores it.
    std::mt19937 rng(7);
    crdt::text solo(1);
    std::vector<std::string> states{""};
    for (int k = 0; k < 300; ++k) {
      if (rng() % 3 != 0 || solo.size() == 0) {
        REQUIRE(solo.insert(rng() % (solo.size() + 1), "xyz"));
      } else {
        const auto pos = rng() % solo.size();
        REQUIRE(solo.erase(pos, 1 + rng() % std::min<std::size_t>(5, solo.size() - pos)));
      }
      states.push_back(solo.str());
    }
    for (auto k = states.size() - 1; k-- > 0;) {
      REQUIRE(solo.undo());
      REQUIRE(solo.str() == states[k]);
    }
    CHECK_FALSE(solo.undo());
    for (std::size_t k = 1; k < states.size(); ++k) {
      REQUIRE(solo.redo());
      REQUIRE(solo.str() == states[k]);
    }
  }

  TEST_CASE("cursors keep their place through concurrent edits") {
    crdt::text a(1), b(2);
    REQUIRE(a.insert(0, "hello world"));
    sync(a, b);
    const auto at_world = a.cursor_at(6).value();  // before "w"
    const auto at_end = a.cursor_at(a.size()).value();
    REQUIRE(b.insert(0, ">> "));
    REQUIRE(b.erase(3 + 6, 2));  // "wo"
    REQUIRE(b.insert(3 + 6, "W"));
    sync(b, a);
    CHECK(a.str() == ">> hello Wrld");
    // "w" is gone: the cursor stays where it was, after the "W" typed in its place (as Yjs
    // places it: right after the last visible character, before what was deleted there).
    CHECK(a.position_of(at_world) == 10);
    CHECK(a.position_of(at_end) == a.size());
    CHECK(a.cursor_at(a.size() + 1).error() == crdt::errc::out_of_range);
  }

  TEST_CASE("convergence under random schedules: replicas edit, deltas go astray, come twice, late") {
    for (std::uint32_t seed = 1; seed <= 40; ++seed) {
      CAPTURE(seed);
      std::mt19937 rng(seed);
      const std::size_t n = 2 + seed % 3;
      std::vector<crdt::text> replicas;
      for (std::size_t r = 0; r < n; ++r) replicas.emplace_back(100 + (r * 7919 + seed) % 1000);
      std::vector<std::pair<std::size_t, keel::bytes>> in_flight;  // to whom, what
      const char* pieces[] = {"a", "b", "xyz", "é", "世界", " ", "12345"};
      for (int step = 0; step < 300; ++step) {
        auto& doc = replicas[rng() % n];
        const auto action = rng() % 10;
        if (action < 5 || doc.size() == 0) {
          REQUIRE(doc.insert(rng() % (doc.size() + 1), pieces[rng() % std::size(pieces)]));
        } else if (action < 8) {
          const auto pos = rng() % doc.size();
          REQUIRE(doc.erase(pos, 1 + rng() % std::min<std::size_t>(4, doc.size() - pos)));
        } else {
          // A delta to another replica, against what the sender thinks it has (maybe stale).
          const auto to = rng() % n;
          in_flight.emplace_back(to, doc.delta_since(replicas[to].version()));
        }
        // Now and then a replica restarts from its saved document (what waits is lost with
        // it, and comes again with the next deltas).
        if (rng() % 40 == 0) {
          auto& restarted = replicas[rng() % n];
          const auto text_before = restarted.str();
          restarted = crdt::text::load(restarted.save(), restarted.self()).value();
          REQUIRE(restarted.str() == text_before);
        }
        // Deliver one in flight, in random order, sometimes twice, sometimes dropped.
        if (!in_flight.empty() && rng() % 3 == 0) {
          const auto k = rng() % in_flight.size();
          REQUIRE(replicas[in_flight[k].first].apply(in_flight[k].second));
          if (rng() % 4 != 0) in_flight.erase(in_flight.begin() + static_cast<std::ptrdiff_t>(k));
        }
      }
      // Everyone talks to everyone until no more is learnt.
      for (int round = 0; round < 2; ++round) {
        for (std::size_t from = 0; from < n; ++from) {
          for (std::size_t to = 0; to < n; ++to) {
            if (from != to) sync(replicas[from], replicas[to]);
          }
        }
      }
      for (std::size_t r = 1; r < n; ++r) {
        CHECK(replicas[r].str() == replicas[0].str());
        CHECK(replicas[r].version() == replicas[0].version());
        CHECK(replicas[r].pending() == 0);
      }
      // The same document loaded from any replica's save.
      crdt::text probe(1);
      REQUIRE(probe.apply(replicas[n - 1].delta_since({})));
      CHECK(probe.pending() == 0);
      CHECK(probe.str() == replicas[0].str());
      CHECK(crdt::text::load(replicas[n - 1].save(), 1).value().str() == replicas[0].str());
    }
  }

  TEST_CASE("the sequential trace (seph-blog1) replays to its final text") {
    const auto trace = read_trace("seph-blog1.json.gz");
    crdt::text doc(1);
    std::size_t patches = 0;
    for (const auto& txn : trace.at("txns").as_array()) {
      for (const auto& patch : txn.at("patches").as_array()) {
        apply_patch(doc, patch.as_array());
        ++patches;
      }
    }
    CHECK(patches == 137'993);
    const auto& end = trace.at("endContent").as_string();
    CHECK(doc.str() == std::string_view(end.data(), end.size()));
    CHECK(doc.size() == code_points(std::string_view(end.data(), end.size())));
    auto loaded = crdt::text::load(doc.save(), 2).value();
    CHECK(loaded.str() == doc.str());
  }

  TEST_CASE("the concurrent trace (friendsforever): two writers' replicas merge to its final text") {
    const auto trace = read_trace("friendsforever.json.gz");
    const auto& txns = trace.at("txns").as_array();
    const auto agents = static_cast<std::size_t>(trace.at("numAgents").to_number<std::int64_t>());
    std::vector<crdt::text> replicas;
    for (std::size_t a = 0; a < agents; ++a) replicas.emplace_back(a + 1);
    std::vector<keel::bytes> produced(txns.size());
    // Each transaction's ancestors (everything it was made on top of), as bits; and the
    // transactions each replica holds.
    const std::size_t words = (txns.size() + 63) / 64;
    std::vector<std::vector<std::uint64_t>> ancestors(txns.size(), std::vector<std::uint64_t>(words));
    std::vector<std::vector<std::uint64_t>> holds(agents, std::vector<std::uint64_t>(words));
    auto has = [](const std::vector<std::uint64_t>& bits, std::size_t k) {
      return ((bits[k / 64] >> (k % 64)) & 1U) != 0;
    };
    auto set = [](std::vector<std::uint64_t>& bits, std::size_t k) {
      bits[k / 64] |= std::uint64_t{1} << (k % 64);
    };
    for (std::size_t t = 0; t < txns.size(); ++t) {
      const auto& txn = txns[t].as_object();
      const auto agent = static_cast<std::size_t>(txn.at("agent").to_number<std::int64_t>());
      for (const auto& p : txn.at("parents").as_array()) {
        const auto u = static_cast<std::size_t>(p.to_number<std::int64_t>());
        REQUIRE(u < t);
        set(ancestors[t], u);
        for (std::size_t w = 0; w < words; ++w) ancestors[t][w] |= ancestors[u][w];
      }
      auto& doc = replicas[agent];
      for (std::size_t u = 0; u < t; ++u) {
        if (has(ancestors[t], u) && !has(holds[agent], u)) {
          REQUIRE(doc.apply(produced[u]));
          set(holds[agent], u);
        }
      }
      REQUIRE_MESSAGE(holds[agent] == ancestors[t],
                      "transaction " << t << " is not on top of its replica's state");
      const auto before = doc.version();
      for (const auto& patch : txn.at("patches").as_array()) apply_patch(doc, patch.as_array());
      produced[t] = doc.delta_since(before);
      set(holds[agent], t);
    }
    for (std::size_t a = 0; a < agents; ++a) {
      for (std::size_t b = 0; b < agents; ++b) {
        if (a != b) sync(replicas[a], replicas[b]);
      }
    }
    const auto& end = trace.at("endContent").as_string();
    for (const auto& doc : replicas) CHECK(doc.str() == std::string_view(end.data(), end.size()));
    // Every transaction's delta into a new replica, the second half shuffled (seeded), so that
    // many wait for what they were made on: the same text.
    crdt::text late(99);
    std::vector<std::size_t> order(txns.size());
    for (std::size_t t = 0; t < order.size(); ++t) order[t] = t;
    std::mt19937 rng(7);
    std::shuffle(order.begin() + static_cast<std::ptrdiff_t>(order.size() / 2), order.end(), rng);
    for (const auto t : order) REQUIRE(late.apply(produced[t]));
    CHECK(late.pending() == 0);
    CHECK(late.str() == std::string_view(end.data(), end.size()));
  }
}
