#pragma once
// Seeded randomness for property tests: the seed is printed, and KEEL_TEST_SEED replays it.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

namespace keel::test {

/// A generator seeded from KEEL_TEST_SEED, or randomly; the seed is printed once per process
/// so a failing run can be replayed with `KEEL_TEST_SEED=<seed>`.
inline std::mt19937_64& rng() {
  static std::mt19937_64 engine = [] {
    std::uint64_t seed;
    if (const char* env = std::getenv("KEEL_TEST_SEED"); env != nullptr && *env != '\0') {
      seed = std::strtoull(env, nullptr, 10);
    } else {
      seed = std::random_device{}();
      seed = (seed << 32) ^ std::random_device{}();
    }
    MESSAGE("property tests seeded with KEEL_TEST_SEED=" << seed);
    return std::mt19937_64(seed);
  }();
  return engine;
}

/// A uniformly random integer in [low, high].
template <class T>
T uniform(T low, T high) {
  return std::uniform_int_distribution<T>(low, high)(rng());
}

}  // namespace keel::test
