// The memory engine's containers, against the standard library as a reference model.
#include <keel/ledger/detail/segmented_vector.hpp>

#include "../../src/ledger/u128_map.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <unordered_map>

#include <support/random.hpp>

namespace ledger = keel::ledger;
using keel::test::uniform;

TEST_SUITE("unit") {
  TEST_CASE("u128_map matches std::unordered_map under random inserts, erases and lookups") {
    // Few distinct keys, many operations: long probe runs, wrap-around at the table's end and
    // backward-shift deletion inside runs all happen.
    for (int round = 0; round < 20; ++round) {
      ledger::detail::u128_map<std::uint64_t> map;
      std::unordered_map<std::uint64_t, std::uint64_t> model;
      const auto key_space = uniform<std::uint64_t>(8, 3000);
      for (int step = 0; step < 20'000; ++step) {
        // Keys spread over both halves of the 128 bits.
        const auto small = uniform<std::uint64_t>(1, key_space);
        const ledger::u128 key = (ledger::u128{small % 7} << 64U) | small;
        const auto op = uniform(0, 9);
        if (op < 5) {
          const auto value = uniform<std::uint64_t>(0, 1'000'000);
          const auto [stored, inserted] = map.emplace(key, value);
          const auto [expected, model_inserted] = model.emplace(small, value);
          REQUIRE(inserted == model_inserted);
          REQUIRE(*stored == expected->second);
        } else if (op < 8) {
          REQUIRE(map.erase(key) == (model.erase(small) == 1));
        } else {
          const auto* found = map.find(key);
          const auto expected = model.find(small);
          REQUIRE((found != nullptr) == (expected != model.end()));
          if (found != nullptr) REQUIRE(*found == expected->second);
        }
        REQUIRE(map.size() == model.size());
      }
      std::size_t visited = 0;
      map.for_each([&](ledger::u128 key, std::uint64_t value) {
        ++visited;
        const auto expected = model.find(static_cast<std::uint64_t>(key));
        REQUIRE(expected != model.end());
        CHECK(value == expected->second);
      });
      CHECK(visited == model.size());
      for (const auto& [small, value] : model) {
        const auto* found = map.find((ledger::u128{small % 7} << 64U) | small);
        REQUIRE(found != nullptr);
        CHECK(*found == value);
      }
    }
  }

  TEST_CASE("u128_map: id 0 is never found and cannot be stored") {
    ledger::detail::u128_map<int> map;
    CHECK(map.find(0) == nullptr);
    map.emplace(1, 1);
    CHECK(map.find(0) == nullptr);
    CHECK_FALSE(map.erase(0));
    CHECK_THROWS_AS(map.emplace(0, 2), std::invalid_argument);
    CHECK_THROWS_AS((void)map.at(2), std::out_of_range);
    CHECK(map.size() == 1);
  }

  TEST_CASE("segmented_vector keeps every element in place across segments and huge allocations") {
    ledger::detail::segmented_vector<std::uint64_t> v;
    // Past 2 MiB segments (16·2^k elements of 8 bytes: segment 14 is 2 MiB).
    constexpr std::uint64_t count = 600'000;
    const std::uint64_t* first = nullptr;
    for (std::uint64_t i = 0; i < count; ++i) {
      auto& slot = v.push_back(i * 3 + 1);
      if (i == 0) first = &slot;
    }
    CHECK(&v[0] == first);
    REQUIRE(v.size() == count);
    for (std::uint64_t i = 0; i < count; i += 997) CHECK(v[i] == i * 3 + 1);
    CHECK(v.back() == (count - 1) * 3 + 1);
    v.pop_back();
    CHECK(v.size() == count - 1);
    v.push_back(7);
    CHECK(v.back() == 7);
  }
}
