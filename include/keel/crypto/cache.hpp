#pragma once
/// @file keel/crypto/cache.hpp
/// @brief A data-key cache: encrypt() reuses a data key (and its wrapped forms) for messages of
/// the same context and providers within limits, and decrypt() remembers unwrapped data keys, so
/// a remote KMS is not asked for every message. Every message still gets its own content key
/// (derived with its random message id), so reuse never repeats a key-nonce pair (within the
/// 2^32 messages a cached key seals at most).
///
/// @code
/// keel::crypto::data_key_cache cache({.max_age = std::chrono::minutes(5), .max_messages = 10'000});
/// auto sealed = keel::crypto::encrypt(wrappers, plaintext, context, {.cache = &cache});
/// auto opened = keel::crypto::decrypt(wrappers, sealed, {.cache = &cache});
/// @endcode
///
/// A cached key outlives changes at the KMS until it expires: a version destroyed or disabled
/// there still decrypts what this process cached for up to `max_age`. Keep it short.
#include <keel/core/bytes.hpp>
#include <keel/core/clock.hpp>
#include <keel/crypto/kms.hpp>
#include <keel/crypto/secret.hpp>

#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace keel::crypto {

struct data_key_cache_options {
  std::chrono::milliseconds max_age{std::chrono::minutes(5)};  ///< a key older than this is not used again
  std::uint64_t max_messages = 1'000'000;                      ///< messages one data key encrypts at most
  std::uint64_t max_bytes = std::uint64_t{1} << 36U;  ///< plaintext bytes one data key encrypts at most
  std::size_t capacity = 1000;                        ///< entries kept (least recently used go first)
  const keel::clock* clock = &keel::system_clock::instance();
};

struct data_key_cache_stats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t evictions = 0;  ///< entries dropped (expired, used up, or over capacity); their keys wiped
};

namespace detail {
class prepared_data_key;
}

/// A cached data key for encrypt(): the key made ready for messages, and its wrapped forms.
struct cached_encryption_key {
  std::shared_ptr<const detail::prepared_data_key> key;
  std::shared_ptr<const std::vector<encrypted_data_key>> wrapped;
};

/// Thread-safe. Evicted keys are wiped (secret_bytes) once no message in flight still uses them.
class data_key_cache {
 public:
  /// Messages one data key encrypts at most, whatever the options say: suite 2's message ids
  /// are 96 random bits, so, as with random GCM nonces, 2^32 messages per key at most.
  static constexpr std::uint64_t messages_per_key_limit = std::uint64_t{1} << 32U;

  explicit data_key_cache(data_key_cache_options options = {});

  // What encrypt() and decrypt() call; the key types and the cache keys (which say whether they
  // are for encrypting or decrypting) are theirs.
  /// For encrypt(): a data key and its wrapped forms for this (suite, context, providers), if one
  /// is cached within its limits; counts the message and its bytes against them.
  [[nodiscard]] std::optional<cached_encryption_key> take_for_encrypt(const std::string& cache_key,
                                                                      std::size_t plaintext_bytes);
  /// Remembers a new data key for encrypt(), the first message counted.
  void put_for_encrypt(const std::string& cache_key, cached_encryption_key key, std::size_t plaintext_bytes);
  /// For decrypt(): the data key a wrapped key unwrapped to before, within max_age; null if none.
  [[nodiscard]] std::shared_ptr<const detail::prepared_data_key> take_for_decrypt(
      const std::string& cache_key);
  void put_for_decrypt(const std::string& cache_key, std::shared_ptr<const detail::prepared_data_key> key);

  /// Drops every entry (wiping the keys), e.g. after a key version was destroyed.
  void clear();
  [[nodiscard]] data_key_cache_stats stats() const;
  [[nodiscard]] std::size_t size() const;

 private:
  struct entry {
    cached_encryption_key cached;  // for decrypt entries, `wrapped` is null
    monotonic_time created{};
    std::uint64_t messages = 0;
    std::uint64_t bytes = 0;
    std::list<std::string>::iterator in_order;
  };
  void touch(std::map<std::string, entry>::iterator it);
  void erase(std::map<std::string, entry>::iterator it);
  void make_room();
  [[nodiscard]] bool expired(const entry& e) const;

  data_key_cache_options options_;
  mutable std::mutex mutex_;
  std::map<std::string, entry> entries_;
  std::list<std::string> order_;  // most recently used first
  data_key_cache_stats stats_;
};

}  // namespace keel::crypto
