// The data-key cache: one map, with an LRU list for capacity. Copies of keys handed out are
// secret_bytes too, so nothing leaves locked memory.
#include <keel/crypto/cache.hpp>

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

std::optional<std::pair<secret_bytes, std::vector<encrypted_data_key>>> data_key_cache::take_for_encrypt(
    const std::string& cache_key, std::size_t plaintext_bytes) {
  const std::lock_guard lock(mutex_);
  auto it = entries_.find("e" + cache_key);
  if (it == entries_.end()) {
    ++stats_.misses;
    return std::nullopt;
  }
  auto& e = it->second;
  if (expired(e) || e.messages >= options_.max_messages || e.bytes + plaintext_bytes > options_.max_bytes) {
    erase(it);
    ++stats_.misses;
    return std::nullopt;
  }
  ++e.messages;
  e.bytes += plaintext_bytes;
  touch(it);
  ++stats_.hits;
  return std::make_pair(e.data_key.copy(), e.wrapped);
}

void data_key_cache::put_for_encrypt(const std::string& cache_key, const secret_bytes& data_key,
                                     const std::vector<encrypted_data_key>& wrapped,
                                     std::size_t plaintext_bytes) {
  if (options_.capacity == 0 || plaintext_bytes > options_.max_bytes) return;
  const std::lock_guard lock(mutex_);
  const auto key = "e" + cache_key;
  if (auto old = entries_.find(key); old != entries_.end()) erase(old);
  make_room();
  order_.push_front(key);
  entries_.emplace(
      key, entry{data_key.copy(), wrapped, options_.clock->monotonic(), 1, plaintext_bytes, order_.begin()});
}

std::optional<secret_bytes> data_key_cache::take_for_decrypt(const std::string& cache_key) {
  const std::lock_guard lock(mutex_);
  auto it = entries_.find("d" + cache_key);
  if (it == entries_.end()) {
    ++stats_.misses;
    return std::nullopt;
  }
  if (expired(it->second)) {
    erase(it);
    ++stats_.misses;
    return std::nullopt;
  }
  touch(it);
  ++stats_.hits;
  return it->second.data_key.copy();
}

void data_key_cache::put_for_decrypt(const std::string& cache_key, const secret_bytes& data_key) {
  if (options_.capacity == 0) return;
  const std::lock_guard lock(mutex_);
  const auto key = "d" + cache_key;
  if (auto old = entries_.find(key); old != entries_.end()) erase(old);
  make_room();
  order_.push_front(key);
  entries_.emplace(key, entry{data_key.copy(), {}, options_.clock->monotonic(), 0, 0, order_.begin()});
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
