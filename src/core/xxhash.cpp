#include <keel/core/xxhash.hpp>

#include <xxhash.h>

#include <new>

namespace keel {

std::uint64_t xxh3_64(bytes_view data, std::uint64_t seed) noexcept {
  return XXH3_64bits_withSeed(data.data(), data.size(), seed);
}

xxh128_hash xxh3_128(bytes_view data, std::uint64_t seed) noexcept {
  const XXH128_hash_t h = XXH3_128bits_withSeed(data.data(), data.size(), seed);
  return {h.low64, h.high64};
}

struct xxh3_64_hasher::state {
  XXH3_state_t* s;
  explicit state(std::uint64_t seed) : s(XXH3_createState()) {
    if (s == nullptr) throw std::bad_alloc();
    XXH3_64bits_reset_withSeed(s, seed);
  }
  ~state() { XXH3_freeState(s); }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
};

xxh3_64_hasher::xxh3_64_hasher(std::uint64_t seed) : state_(std::make_unique<state>(seed)) {}
xxh3_64_hasher::~xxh3_64_hasher() = default;
xxh3_64_hasher::xxh3_64_hasher(xxh3_64_hasher&&) noexcept = default;
xxh3_64_hasher& xxh3_64_hasher::operator=(xxh3_64_hasher&&) noexcept = default;

xxh3_64_hasher& xxh3_64_hasher::update(bytes_view data) noexcept {
  XXH3_64bits_update(state_->s, data.data(), data.size());
  return *this;
}

std::uint64_t xxh3_64_hasher::digest() const noexcept {
  return XXH3_64bits_digest(state_->s);
}

}  // namespace keel
