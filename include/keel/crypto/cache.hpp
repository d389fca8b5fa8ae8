#pragma once
/// @file keel/crypto/cache.hpp
/// @brief A data-key cache: encrypt() reuses a data key (and its wrapped forms) for messages of
/// the same context and providers within limits, and decrypt() remembers unwrapped data keys, so
/// a remote KMS is not asked for every message. Every message still gets its own content key
/// (derived with its random message id), so reuse never repeats a key-nonce pair.
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

/// Thread-safe. Evicted keys are wiped (secret_bytes).
class data_key_cache {
 public:
  explicit data_key_cache(data_key_cache_options options = {});

  /// For encrypt(): a data key and its wrapped forms for this (context, providers), if one is
  /// cached within its limits; counts the message and its bytes against them.
  [[nodiscard]] std::optional<std::pair<secret_bytes, std::vector<encrypted_data_key>>> take_for_encrypt(
      const std::string& cache_key, std::size_t plaintext_bytes);
  /// Remembers a new data key for encrypt(), the first message counted.
  void put_for_encrypt(const std::string& cache_key, const secret_bytes& data_key,
                       const std::vector<encrypted_data_key>& wrapped, std::size_t plaintext_bytes);
  /// For decrypt(): the data key a wrapped key unwrapped to before, within max_age.
  [[nodiscard]] std::optional<secret_bytes> take_for_decrypt(const std::string& cache_key);
  void put_for_decrypt(const std::string& cache_key, const secret_bytes& data_key);

  /// Drops every entry (wiping the keys), e.g. after a key version was destroyed.
  void clear();
  [[nodiscard]] data_key_cache_stats stats() const;
  [[nodiscard]] std::size_t size() const;

 private:
  struct entry {
    secret_bytes data_key;
    std::vector<encrypted_data_key> wrapped;
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
