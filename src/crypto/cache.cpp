// The data-key cache: one map, with an LRU list for capacity. Keys are handed out shared, not
// copied: a key stays in locked memory, once, until its entry and the last message using it go.
#include <keel/crypto/cache.hpp>

#include "data_key.hpp"

#include <algorithm>
#include <utility>

namespace keel::crypto {

data_key_cache::data_key_cache(data_key_cache_options options) : options_(options) {}

bool data_key_cache::expired(const entry& e) const {
  return options_.clock->monotonic() - e.created >= options_.max_age;
}

void data_key_cache::touch(std::map<std::string, entry>::iterator it) {
  order_.splice(order_.begin(), order_, it->second.in_order);
}

void data_key_cache::erase(std::map<std::string, entry>::iterator it) {
  order_.erase(it->second.in_order);
  entries_.erase(it);  // the key is wiped by secret_bytes
  ++stats_.evictions;
}

void data_key_cache::make_room() {
  while (!order_.empty() && entries_.size() >= options_.capacity) erase(entries_.find(order_.back()));
}

std::optional<cached_encryption_key> data_key_cache::take_for_encrypt(const std::string& cache_key,
                                                                      std::size_t plaintext_bytes) {
  const std::lock_guard lock(mutex_);
  auto it = entries_.find(cache_key);
  if (it == entries_.end()) {
    ++stats_.misses;
    return std::nullopt;
  }
  auto& e = it->second;
  if (expired(e) || e.messages >= std::min(options_.max_messages, messages_per_key_limit) ||
      e.bytes + plaintext_bytes > options_.max_bytes) {
    erase(it);
    ++stats_.misses;
    return std::nullopt;
  }
  ++e.messages;
  e.bytes += plaintext_bytes;
  touch(it);
  ++stats_.hits;
  return e.cached;
}

void data_key_cache::put_for_encrypt(const std::string& cache_key, cached_encryption_key key,
                                     std::size_t plaintext_bytes) {
  if (options_.capacity == 0 || plaintext_bytes > options_.max_bytes) return;
  const std::lock_guard lock(mutex_);
  const auto& name = cache_key;
  if (auto old = entries_.find(name); old != entries_.end()) erase(old);
  make_room();
  order_.push_front(name);
  entries_.emplace(name,
                   entry{std::move(key), options_.clock->monotonic(), 1, plaintext_bytes, order_.begin()});
}

std::shared_ptr<const detail::prepared_data_key> data_key_cache::take_for_decrypt(
    const std::string& cache_key) {
  const std::lock_guard lock(mutex_);
  auto it = entries_.find(cache_key);
  if (it == entries_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  if (expired(it->second)) {
    erase(it);
    ++stats_.misses;
    return nullptr;
  }
  touch(it);
  ++stats_.hits;
  return it->second.cached.key;
}

void data_key_cache::put_for_decrypt(const std::string& cache_key,
                                     std::shared_ptr<const detail::prepared_data_key> key) {
  if (options_.capacity == 0) return;
  const std::lock_guard lock(mutex_);
  const auto& name = cache_key;
  if (auto old = entries_.find(name); old != entries_.end()) erase(old);
  make_room();
  order_.push_front(name);
  entries_.emplace(name, entry{{std::move(key), nullptr}, options_.clock->monotonic(), 0, 0, order_.begin()});
}

void data_key_cache::clear() {
  const std::lock_guard lock(mutex_);
  stats_.evictions += entries_.size();
  entries_.clear();
  order_.clear();
}

data_key_cache_stats data_key_cache::stats() const {
  const std::lock_guard lock(mutex_);
  return stats_;
}

std::size_t data_key_cache::size() const {
  const std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace keel::crypto
