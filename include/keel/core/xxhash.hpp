#pragma once
/// @file keel/core/xxhash.hpp
/// @brief xxHash3 (64 and 128 bit) through libxxhash: fast non-cryptographic hashing for
/// hash tables, sharding and checksums. Not for anything an attacker may choose to collide.
#include <keel/core/bytes.hpp>

#include <cstdint>
#include <memory>

namespace keel {

/// A 128-bit xxHash3 value.
struct xxh128_hash {
  std::uint64_t low = 0;
  std::uint64_t high = 0;
  friend bool operator==(const xxh128_hash&, const xxh128_hash&) = default;
};

/// XXH3_64bits of `data` with `seed`.
[[nodiscard]] std::uint64_t xxh3_64(bytes_view data, std::uint64_t seed = 0) noexcept;
/// XXH3_128bits of `data` with `seed`.
[[nodiscard]] xxh128_hash xxh3_128(bytes_view data, std::uint64_t seed = 0) noexcept;

/// Streaming XXH3 (64-bit): equal to xxh3_64 over the concatenated input.
class xxh3_64_hasher {
 public:
  explicit xxh3_64_hasher(std::uint64_t seed = 0);
  ~xxh3_64_hasher();
  xxh3_64_hasher(xxh3_64_hasher&&) noexcept;
  xxh3_64_hasher& operator=(xxh3_64_hasher&&) noexcept;
  xxh3_64_hasher(const xxh3_64_hasher&) = delete;
  xxh3_64_hasher& operator=(const xxh3_64_hasher&) = delete;

  xxh3_64_hasher& update(bytes_view data) noexcept;
  /// The hash of everything so far; more input may follow.
  [[nodiscard]] std::uint64_t digest() const noexcept;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace keel
