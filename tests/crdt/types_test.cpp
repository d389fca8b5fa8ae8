// keel::crdt's counter, registers, set and maps: each type's local behaviour and semantics under
// concurrency, then for every type the same seeded properties — convergence under random
// schedules (deltas late, out of order, twice, misdirected or dropped, then a resync), the join
// being commutative, associative and idempotent, and malformed deltas refused with nothing
// changed.
#include <keel/crdt.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace crdt = keel::crdt;
using set_map = crdt::or_map<crdt::or_set>;
using nested_map = crdt::or_map<crdt::or_map<crdt::mv_register>>;

// Brings `to` up to date with `from`.
template <class T>
void sync(const T& from, T& to) {
  REQUIRE(to.apply(from.delta_since(to.version())));
}

template <class T>
void sync_both(T& a, T& b) {
  sync(a, b);
  sync(b, a);
}

std::string pick(std::mt19937_64& rng, std::initializer_list<const char*> choices) {
  return *(choices.begin() + static_cast<std::ptrdiff_t>(rng() % choices.size()));
}

// A random local change of each type; stamps are drawn small so that ties happen.
void random_change(crdt::pn_counter& c, std::mt19937_64& rng) {
  if (rng() % 3 == 0) {
    REQUIRE(c.decrement(rng() % 5));
  } else {
    REQUIRE(c.increment(rng() % 7));
  }
}
void random_change(crdt::lww_register& r, std::mt19937_64& rng) {
  r.set(pick(rng, {"a", "b", "", "longer value", "\x00\xff"}), rng() % 40);
}
void random_change(crdt::mv_register& r, std::mt19937_64& rng) {
  if (rng() % 6 == 0) {
    r.clear();
  } else {
    r.set(pick(rng, {"a", "b", "c", "", "d"}));
  }
}
void random_change(crdt::or_set& s, std::mt19937_64& rng) {
  const auto element = pick(rng, {"a", "b", "c", "d", "", "e"});
  if (rng() % 5 < 3) {
    s.add(element);
  } else {
    s.remove(element);
  }
}
void random_change(crdt::lww_map& m, std::mt19937_64& rng) {
  const auto key = pick(rng, {"x", "y", "z", ""});
  if (rng() % 3 == 0) {
    m.erase(key, rng() % 40);
  } else {
    m.set(key, pick(rng, {"1", "2", "3"}), rng() % 40);
  }
}
void random_change(set_map& m, std::mt19937_64& rng) {
  const auto key = pick(rng, {"k", "l", "m"});
  const auto action = rng() % 6;
  if (action == 0) {
    m.erase(key);
  } else {
    const auto element = pick(rng, {"a", "b", "c"});
    m.update(key, [&](crdt::or_set& s) {
      if (action < 4) {
        s.add(element);
      } else {
        s.remove(element);
      }
    });
  }
}
void random_change(nested_map& m, std::mt19937_64& rng) {
  const auto outer = pick(rng, {"p", "q"});
  const auto inner = pick(rng, {"i", "j"});
  const auto action = rng() % 6;
  if (action == 0) {
    m.erase(outer);
  } else if (action == 1) {
    m.update(outer, [&](crdt::or_map<crdt::mv_register>& n) { n.erase(inner); });
  } else {
    const auto value = pick(rng, {"v", "w"});
    m.update(outer, [&](crdt::or_map<crdt::mv_register>& n) {
      n.update(inner, [&](crdt::mv_register& r) { r.set(value); });
    });
  }
}

// What a user reads from each type, as one string.
std::string observe(const crdt::pn_counter& c) {
  return std::to_string(c.value());
}
std::string observe(const crdt::lww_register& r) {
  return r.get().value_or("<none>") + "@" + std::to_string(r.timestamp());
}
std::string observe(const crdt::mv_register& r) {
  std::string out;
  for (const auto& v : r.values()) out += v + "|";
  return out;
}
std::string observe(const crdt::or_set& s) {
  std::string out;
  for (const auto& e : s.elements()) out += e + "|";
  return out;
}
std::string observe(const crdt::lww_map& m) {
  std::string out;
  for (const auto& k : m.keys()) out += k + "=" + m.get(k).value() + "|";
  return out;
}
std::string observe(const set_map& m) {
  std::string out;
  for (const auto& k : m.keys()) out += k + "{" + observe(*m.get(k)) + "}";
  return out;
}
std::string observe(const nested_map& m) {
  std::string out;
  for (const auto& k : m.keys()) {
    out += k + "{";
    const auto inner = *m.get(k);
    for (const auto& j : inner.keys()) out += j + "=" + observe(*inner.get(j));
    out += "}";
  }
  return out;
}

// A few replicas changed at random and partly synced: states to join in the algebra checks.
template <class T>
std::vector<T> random_states(std::mt19937_64& rng, std::size_t count) {
  std::vector<T> replicas;
  for (std::size_t r = 0; r < count; ++r) replicas.emplace_back(10 + r);
  for (int step = 0; step < 40; ++step) {
    auto& one = replicas[rng() % count];
    if (rng() % 4 == 0) {
      const auto& other = replicas[rng() % count];
      if (&other != &one) REQUIRE(one.apply(other.delta_since(one.version())));
    } else {
      random_change(one, rng);
    }
  }
  return replicas;
}

// `base` after applying `deltas` in order.
template <class T>
keel::bytes joined(const T& base, std::initializer_list<const keel::bytes*> deltas) {
  T out = base;
  for (const auto* d : deltas) REQUIRE(out.apply(*d));
  return out.save();
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("the examples of the headers and docs/crdt.md do what they say") {
    {
      crdt::pn_counter alice(1), bob(2);
      alice.increment(5).value();
      bob.decrement(2).value();
      alice.apply(bob.delta_since(alice.version())).value();
      bob.apply(alice.delta_since(bob.version())).value();
      CHECK(alice.value() == 3);
      CHECK(bob.value() == 3);
    }
    {
      crdt::lww_register alice(1), bob(2);
      alice.set("red", 1000);
      bob.set("blue", 1001);
      alice.apply(bob.delta_since(alice.version())).value();
      bob.apply(alice.delta_since(bob.version())).value();
      CHECK(alice.get() == "blue");
      CHECK(bob.get() == "blue");
    }
    {
      crdt::mv_register alice(1), bob(2);
      alice.set("red");
      bob.set("blue");
      alice.apply(bob.delta_since(alice.version())).value();
      CHECK(alice.values() == std::vector<std::string>{"blue", "red"});
      alice.set("purple");
      bob.apply(alice.delta_since(bob.version())).value();
      CHECK(bob.values() == std::vector<std::string>{"purple"});
    }
    {
      crdt::or_set alice(1), bob(2);
      alice.add("milk");
      bob.apply(alice.delta_since(bob.version())).value();
      bob.remove("milk");
      alice.add("milk");
      alice.apply(bob.delta_since(alice.version())).value();
      bob.apply(alice.delta_since(bob.version())).value();
      CHECK(alice.contains("milk"));
      CHECK(bob.contains("milk"));
    }
    {
      crdt::lww_map alice(1), bob(2);
      alice.set("colour", "red", 1000);
      bob.apply(alice.delta_since(bob.version())).value();
      bob.erase("colour", 1005);
      alice.set("colour", "green", 1002);
      alice.apply(bob.delta_since(alice.version())).value();
      CHECK_FALSE(alice.get("colour").has_value());
    }
    {
      crdt::or_map<crdt::or_set> shop(1), home(2);
      shop.update("fruit", [](crdt::or_set& s) { s.add("apple"); });
      home.apply(shop.delta_since(home.version())).value();
      shop.erase("fruit");
      home.update("fruit", [](crdt::or_set& s) { s.add("pear"); });
      shop.apply(home.delta_since(shop.version())).value();
      CHECK(shop.get("fruit")->elements() == std::vector<std::string>{"pear"});
    }
  }

  TEST_CASE("pn_counter: increments and decrements from every replica add up") {
    crdt::pn_counter a(1), b(2), c(3);
    REQUIRE(a.increment(5));
    REQUIRE(b.decrement(2));
    REQUIRE(c.increment());
    REQUIRE(c.increment(0));  // no change, and not counted as one
    CHECK(c.version() == crdt::version_vector{{3, 1}});
    sync(a, b);
    sync(c, b);
    sync(b, a);
    CHECK(a.value() == 4);
    CHECK(b.value() == 4);
    CHECK(a.version() == crdt::version_vector{{1, 1}, {2, 1}, {3, 1}});
    // Nothing new: a delta with no tallies.
    CHECK(a.delta_since(b.version()).size() == 6);
    // Past 2^63 - 1 of one replica's own increments: refused, nothing changed.
    crdt::pn_counter big(4);
    REQUIRE(big.increment(INT64_MAX));
    CHECK(big.increment().error() == crdt::errc::counter_overflow);
    CHECK(big.value() == INT64_MAX);
    REQUIRE(big.decrement(INT64_MAX));
    CHECK(big.value() == 0);
    auto loaded = crdt::pn_counter::load(b.save(), 2).value();
    CHECK(loaded.value() == 4);
    REQUIRE(loaded.decrement(10));  // replica 2 goes on from its saved totals
    REQUIRE(a.apply(loaded.delta_since(a.version())));
    CHECK(a.value() == -6);
  }

  TEST_CASE("lww_register: the later stamp wins, ties go to the higher replica, a write beats what it saw") {
    crdt::lww_register a(1), b(2);
    CHECK_FALSE(a.get().has_value());
    a.set("early", 100);
    b.set("late", 200);
    sync_both(a, b);
    CHECK(a.get() == "late");
    CHECK(b.get() == "late");
    CHECK(a.timestamp() == 200);
    // a's clock is behind, but a write after seeing stamp 200 is stamped 201 and wins.
    a.set("after", 50);
    CHECK(a.timestamp() == 201);
    sync_both(a, b);
    CHECK(b.get() == "after");
    // Concurrent writes with equal stamps: replica 2 beats replica 1 everywhere.
    a.set("from a", 500);
    b.set("from b", 500);
    sync_both(a, b);
    CHECK(a.get() == "from b");
    CHECK(b.get() == "from b");
    CHECK(a.save() == b.save());
    // Saved and loaded: the same value, and the clock goes on past it.
    auto loaded = crdt::lww_register::load(a.save(), 1).value();
    CHECK(loaded.get() == "from b");
    loaded.set("resumed", 0);
    CHECK(loaded.timestamp() == 501);
  }

  TEST_CASE("mv_register: concurrent writes are kept; a later write replaces the values it saw") {
    crdt::mv_register a(1), b(2), c(3);
    a.set("red");
    b.set("blue");
    sync_both(a, b);
    CHECK(a.values() == std::vector<std::string>{"blue", "red"});
    CHECK(b.values() == a.values());
    c.set("green");   // concurrent with both, unseen
    a.set("purple");  // replaces red and blue
    sync(a, c);
    CHECK(c.values() == std::vector<std::string>{"green", "purple"});
    sync(c, b);
    CHECK(b.values() == std::vector<std::string>{"green", "purple"});
    b.set("final");
    sync(b, a);
    sync(b, c);
    CHECK(a.values() == std::vector<std::string>{"final"});
    CHECK(c.values() == std::vector<std::string>{"final"});
    // clear() forgets what it saw; a concurrent write survives it.
    a.clear();
    c.set("still here");
    sync_both(a, c);
    CHECK(a.values() == std::vector<std::string>{"still here"});
  }

  TEST_CASE("or_set: add-wins — a concurrent add survives a remove; a remove takes what it saw") {
    crdt::or_set a(1), b(2);
    a.add("milk");
    a.add("eggs");
    sync(a, b);
    b.remove("milk");
    a.add("milk");  // concurrently: a new addition b did not see
    b.remove("eggs");
    sync_both(a, b);
    CHECK(a.contains("milk"));
    CHECK(b.contains("milk"));
    CHECK_FALSE(a.contains("eggs"));
    CHECK_FALSE(b.contains("eggs"));
    CHECK(a.elements() == std::vector<std::string>{"milk"});
    // Removed after seeing it: gone everywhere; added again later: back.
    b.remove("milk");
    sync_both(a, b);
    CHECK(a.size() == 0);
    a.add("milk");
    sync(a, b);
    CHECK(b.contains("milk"));
    CHECK(a.save() == b.save());
    // Loaded as the same replica, it goes on after its own dots: nothing it sent is named again.
    auto reloaded = crdt::or_set::load(a.save(), 1).value();
    reloaded.add("bread");
    reloaded.remove("milk");
    REQUIRE(b.apply(reloaded.delta_since(b.version())));
    CHECK(b.elements() == std::vector<std::string>{"bread"});
    CHECK(b.version() == reloaded.version());
    // Adding an element again folds its dots into one: the state does not grow per addition.
    crdt::or_set many(3);
    for (int k = 0; k < 100; ++k) many.add("same");
    CHECK(many.save().size() < 32);
    // A delta since the receiver's version holds no elements it already has.
    crdt::or_set big(4), copy(5);
    for (int k = 0; k < 100; ++k) big.add("element " + std::to_string(k));
    sync(big, copy);
    big.add("one more");
    CHECK(big.delta_since(copy.version()).size() < 40);  // one element, no context for the rest
    sync(big, copy);
    CHECK(copy.size() == 101);
    // Removals cost a range per run of them, not a dot per element kept.
    for (int k = 10; k < 60; ++k) big.remove("element " + std::to_string(k));
    const auto removals = big.delta_since(copy.version());
    CHECK(removals.size() < 40);
    REQUIRE(copy.apply(removals));
    CHECK(copy.size() == 51);
    CHECK_FALSE(copy.contains("element 10"));
    CHECK(copy.contains("element 60"));
    CHECK(copy.save() == big.save());
  }

  TEST_CASE("lww_map: per key the latest write or removal wins, removals included") {
    crdt::lww_map a(1), b(2);
    a.set("colour", "red", 1000);
    a.set("size", "L", 1000);
    sync(a, b);
    b.erase("colour", 1005);
    a.set("colour", "green", 1002);  // concurrent, earlier: the removal wins
    b.set("size", "M", 999);         // stamped 1001: after the 1000 it saw
    a.set("shape", "round", 7);      // stamped past a's clock (1002)
    sync_both(a, b);
    CHECK_FALSE(a.get("colour").has_value());
    CHECK_FALSE(b.contains("colour"));
    CHECK(a.get("size") == "M");
    CHECK(b.get("shape") == "round");
    CHECK(a.keys() == std::vector<std::string>{"shape", "size"});
    CHECK(a.save() == b.save());
    // A later write brings a removed key back.
    a.set("colour", "blue", 2000);
    sync(a, b);
    CHECK(b.get("colour") == "blue");
    CHECK(b.size() == 3);
    auto loaded = crdt::lww_map::load(b.save(), 2).value();
    loaded.set("colour", "black", 0);  // the loaded clock is past 2000 already
    sync(loaded, a);
    CHECK(a.get("colour") == "black");
  }

  TEST_CASE("or_map: nested values merge as their type; a remove loses to a concurrent update") {
    set_map a(1), b(2);
    a.update("fruit", [](crdt::or_set& s) {
      s.add("apple");
      s.add("plum");
    });
    a.update("veg", [](crdt::or_set& s) { s.add("leek"); });
    sync(a, b);
    CHECK(b.get("fruit")->elements() == std::vector<std::string>{"apple", "plum"});
    // Remove vs concurrent update: the key stays, with only what the update added.
    a.erase("fruit");
    b.update("fruit", [](crdt::or_set& s) { s.add("pear"); });
    // Remove vs no concurrent change: gone.
    b.erase("veg");
    sync_both(a, b);
    CHECK(a.get("fruit")->elements() == std::vector<std::string>{"pear"});
    CHECK(b.get("fruit")->elements() == std::vector<std::string>{"pear"});
    CHECK_FALSE(a.contains("veg"));
    CHECK(a.keys() == std::vector<std::string>{"fruit"});
    // Removed and then updated: a fresh value, not the old one back.
    a.erase("fruit");
    a.update("fruit", [](crdt::or_set& s) { s.add("fig"); });
    sync(a, b);
    CHECK(b.get("fruit")->elements() == std::vector<std::string>{"fig"});
    // An emptied value is an absent key.
    b.update("fruit", [](crdt::or_set& s) { s.remove("fig"); });
    CHECK_FALSE(b.contains("fruit"));
    CHECK(b.size() == 0);
    // Keys that are prefixes of one another stay apart.
    a.update("a", [](crdt::or_set& s) { s.add("1"); });
    a.update("ab", [](crdt::or_set& s) { s.add("2"); });
    a.erase("a");
    CHECK(a.contains("ab"));
    CHECK_FALSE(a.contains("a"));
    // Keys of any length, listed in byte order.
    const std::string long_key(300, 'z');
    a.update(long_key, [](crdt::or_set& s) { s.add("4"); });
    a.update("b", [](crdt::or_set& s) { s.add("5"); });
    CHECK(a.keys() == std::vector<std::string>{"ab", "b", "fruit", long_key});
    CHECK(a.get(long_key)->elements() == std::vector<std::string>{"4"});
    // An exception inside update leaves the map as it was.
    const auto before = a.save();
    CHECK_THROWS(a.update("ab", [](crdt::or_set& s) {
      s.add("3");
      throw std::runtime_error("abandoned");
    }));
    CHECK(a.save() == before);
  }

  TEST_CASE("or_map nests: maps of maps of registers, and registers under keys") {
    nested_map a(1), b(2);
    a.update("user:1", [](crdt::or_map<crdt::mv_register>& profile) {
      profile.update("name", [](crdt::mv_register& r) { r.set("Ann"); });
      profile.update("city", [](crdt::mv_register& r) { r.set("Oslo"); });
    });
    sync(a, b);
    a.update("user:1", [](crdt::or_map<crdt::mv_register>& p) {
      p.update("name", [](crdt::mv_register& r) { r.set("Anna"); });
    });
    b.update("user:1", [](crdt::or_map<crdt::mv_register>& p) {
      p.update("name", [](crdt::mv_register& r) { r.set("Annie"); });
    });
    b.update("user:1", [](crdt::or_map<crdt::mv_register>& p) { p.erase("city"); });
    sync_both(a, b);
    const auto profile = a.get("user:1").value();
    CHECK(profile.get("name")->values() == std::vector<std::string>{"Anna", "Annie"});
    CHECK_FALSE(profile.contains("city"));
    CHECK(a.save() == b.save());

    crdt::or_map<crdt::lww_register> c(1), d(2);
    c.update("x", [](crdt::lww_register& r) { r.set("one", 10); });
    d.update("x", [](crdt::lww_register& r) { r.set("two", 20); });
    sync_both(c, d);
    CHECK(c.get("x")->get() == "two");
    CHECK(d.get("x")->get() == "two");
    // Tags name the nesting: one type's bytes are refused by another.
    CHECK(a.apply(c.save()).error() == crdt::errc::malformed_delta);
    CHECK(crdt::or_set(3).apply(c.save()).error() == crdt::errc::malformed_delta);
  }

  TEST_CASE("a hostile count or length is refused before anything is allocated for it") {
    // A count of 2^40 context replicas, entries or tallies in a few bytes.
    const keel::bytes huge_context = {'K', 'O', 'R', 'S', 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20};
    CHECK(crdt::or_set(1).apply(huge_context).error() == crdt::errc::malformed_delta);
    const keel::bytes huge_entries = {'K', 'O', 'R', 'S', 1, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20};
    CHECK(crdt::or_set(1).apply(huge_entries).error() == crdt::errc::malformed_delta);
    const keel::bytes huge_tallies = {'K', 'P', 'N', 'C', 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20};
    CHECK(crdt::pn_counter(1).apply(huge_tallies).error() == crdt::errc::malformed_delta);
    // A range of dots up to the counter limit, and an entry outside its context.
    const keel::bytes beyond_limit = {'K',  'O',  'R',  'S',  1,    1,    7,    1,    0, 0x80,
                                      0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0};
    CHECK(crdt::or_set(1).apply(beyond_limit).error() == crdt::errc::malformed_delta);
    const keel::bytes outside = {'K', 'O', 'R', 'S', 1, 1, 7, 1, 0, 2, 1, 7, 3, 1, 'x', 0};
    CHECK(crdt::or_set(1).apply(outside).error() == crdt::errc::malformed_delta);
    const keel::bytes inside = {'K', 'O', 'R', 'S', 1, 1, 7, 1, 0, 2, 1, 7, 2, 1, 'x', 0};
    crdt::or_set accepts(1);
    REQUIRE(accepts.apply(inside));
    CHECK(accepts.elements() == std::vector<std::string>{"x"});
    // Trailing bytes and other format versions.
    auto trailing = inside;
    trailing.push_back(0);
    CHECK(crdt::or_set(1).apply(trailing).error() == crdt::errc::malformed_delta);
    auto version_two = inside;
    version_two[4] = 2;
    CHECK(crdt::or_set(1).apply(version_two).error() == crdt::errc::malformed_delta);
  }

  TEST_CASE_TEMPLATE("convergence under random schedules: late, twice, misdirected, dropped, then a resync",
                     T, crdt::pn_counter, crdt::lww_register, crdt::mv_register, crdt::or_set, crdt::lww_map,
                     set_map, nested_map) {
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
      CAPTURE(seed);
      std::mt19937_64 rng(seed);
      const std::size_t n = 2 + seed % 3;
      std::vector<T> replicas;
      for (std::size_t r = 0; r < n; ++r) replicas.emplace_back(100 + (r * 7919 + seed) % 1000);
      std::vector<std::pair<std::size_t, keel::bytes>> in_flight;  // to whom, what
      for (int step = 0; step < 200; ++step) {
        const auto from = rng() % n;
        if (rng() % 3 != 0) {
          random_change(replicas[from], rng);
        } else {
          // Against what the sender thinks the receiver has (maybe stale); sometimes delivered
          // to a replica it was not made for.
          const auto to = rng() % n;
          const auto deliver_to = rng() % 8 == 0 ? rng() % n : to;
          in_flight.emplace_back(deliver_to, replicas[from].delta_since(replicas[to].version()));
        }
        if (!in_flight.empty() && rng() % 2 == 0) {
          const auto k = rng() % in_flight.size();
          REQUIRE(replicas[in_flight[k].first].apply(in_flight[k].second));
          if (rng() % 4 != 0) in_flight.erase(in_flight.begin() + static_cast<std::ptrdiff_t>(k));
        }
        if (rng() % 50 == 0) in_flight.clear();  // the network loses everything
      }
      // Resync: everyone talks to everyone until no more is learnt.
      for (int round = 0; round < 2; ++round) {
        for (std::size_t from = 0; from < n; ++from) {
          for (std::size_t to = 0; to < n; ++to) {
            if (from != to) sync(replicas[from], replicas[to]);
          }
        }
      }
      for (std::size_t r = 1; r < n; ++r) {
        CHECK(replicas[r].save() == replicas[0].save());
        CHECK(observe(replicas[r]) == observe(replicas[0]));
        CHECK(replicas[r].version() == replicas[0].version());
      }
      const auto loaded = T::load(replicas[n - 1].save(), 1).value();
      CHECK(loaded.save() == replicas[0].save());
      CHECK(observe(loaded) == observe(replicas[0]));
      // In sync, a delta since the other's version changes nothing.
      T probe = replicas[0];
      REQUIRE(probe.apply(replicas[1].delta_since(replicas[0].version())));
      CHECK(probe.save() == replicas[0].save());
    }
  }

  TEST_CASE_TEMPLATE("without concurrency, replicas read as one replica doing the same changes", T,
                     crdt::pn_counter, crdt::lww_register, crdt::mv_register, crdt::or_set, crdt::lww_map,
                     set_map, nested_map) {
    // Each change is delivered to everyone before the next: then a distributed run must read
    // exactly as the same changes made in order on a single replica (the reference).
    for (std::uint64_t seed = 1; seed <= 30; ++seed) {
      CAPTURE(seed);
      std::mt19937_64 rng(seed + 77);
      const std::size_t n = 2 + seed % 3;
      std::vector<T> replicas;
      for (std::size_t r = 0; r < n; ++r) replicas.emplace_back(1 + r);
      T reference(50);
      for (int step = 0; step < 60; ++step) {
        auto& changer = replicas[rng() % n];
        auto same = rng;  // the same draw, for the reference
        random_change(changer, rng);
        random_change(reference, same);
        for (auto& other : replicas) {
          if (&other != &changer) sync(changer, other);
        }
        for (const auto& r : replicas) REQUIRE(observe(r) == observe(reference));
      }
    }
  }

  TEST_CASE_TEMPLATE("the join is commutative, associative and idempotent on random states and deltas", T,
                     crdt::pn_counter, crdt::lww_register, crdt::mv_register, crdt::or_set, crdt::lww_map,
                     set_map, nested_map) {
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
      CAPTURE(seed);
      std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL);
      const auto states = random_states<T>(rng, 4);
      // Whole states and deltas between them, as the things joined.
      std::vector<keel::bytes> parts;
      parts.reserve(states.size() + 4);
      for (const auto& s : states) parts.push_back(s.save());
      for (int k = 0; k < 4; ++k) {
        const auto& from = states[rng() % states.size()];
        const auto& since = states[rng() % states.size()];
        parts.push_back(from.delta_since(since.version()));
      }
      for (int trial = 0; trial < 10; ++trial) {
        const auto& a = parts[rng() % parts.size()];
        const auto& b = parts[rng() % parts.size()];
        const auto& c = parts[rng() % parts.size()];
        // On a fresh replica and on one that has a state of its own.
        for (const T& base : {T(999), states[rng() % states.size()]}) {
          CHECK(joined(base, {&a, &b}) == joined(base, {&b, &a}));
          T ab(999), bc(999);
          REQUIRE(ab.apply(a));
          REQUIRE(ab.apply(b));
          REQUIRE(bc.apply(b));
          REQUIRE(bc.apply(c));
          const auto ab_saved = ab.save();
          const auto bc_saved = bc.save();
          CHECK(joined(base, {&ab_saved, &c}) == joined(base, {&a, &bc_saved}));
          CHECK(joined(base, {&a, &a}) == joined(base, {&a}));
          CHECK(joined(base, {&a, &b, &a}) == joined(base, {&a, &b}));
        }
      }
      // A state joined with itself, or with what it was made from, is itself.
      for (const auto& s : states) {
        const auto own = s.save();
        CHECK(joined(s, {&own}) == own);
        CHECK(joined(s, {&own, &own}) == own);
      }
    }
  }

  TEST_CASE_TEMPLATE(
      "malformed deltas: truncations and changed bytes are refused with nothing changed, or decode to a "
      "consistent state",
      T, crdt::pn_counter, crdt::lww_register, crdt::mv_register, crdt::or_set, crdt::lww_map, set_map,
      nested_map) {
    for (std::uint64_t seed = 1; seed <= 6; ++seed) {
      CAPTURE(seed);
      std::mt19937_64 rng(seed + 1000);
      auto states = random_states<T>(rng, 3);
      auto& target = states[0];
      const auto delta = states[1].delta_since(target.version());
      const auto before = target.save();
      for (std::size_t cut = 0; cut < delta.size(); ++cut) {
        CAPTURE(cut);
        CHECK(target.apply(keel::bytes_view(delta).first(cut)).error() == crdt::errc::malformed_delta);
      }
      CHECK(target.save() == before);
      auto trailing = delta;
      trailing.push_back(0);
      CHECK(target.apply(trailing).error() == crdt::errc::malformed_delta);
      CHECK(target.save() == before);
      for (std::size_t at = 0; at < delta.size(); ++at) {
        for (const std::uint8_t change :
             {std::uint8_t{0x41}, std::uint8_t{0x01}, static_cast<std::uint8_t>(rng())}) {
          auto changed = delta;
          changed[at] ^= change;
          T probe = target;
          if (probe.apply(changed)) {
            // Taken as some other change: then a consistent state that saves and loads the same.
            const auto saved = probe.save();
            const auto loaded = T::load(saved, 5);
            REQUIRE(loaded.has_value());
            CHECK(loaded->save() == saved);
            CHECK(observe(*loaded) == observe(probe));
          } else {
            CHECK(probe.save() == before);
          }
        }
      }
      CHECK(T::load(keel::bytes{'n', 'o'}, 4).error() == crdt::errc::malformed_delta);
    }
  }
}
