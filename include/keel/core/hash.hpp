#pragma once
/// @file keel/core/hash.hpp
/// @brief SHA-256 and HMAC-SHA-256 through OpenSSL 3 EVP.
///
/// These only fail when OpenSSL cannot allocate, which is reported as std::bad_alloc.
#include <keel/core/bytes.hpp>

#include <array>
#include <cstdint>
#include <memory>

namespace keel {

/// A SHA-256 digest.
using sha256_digest = std::array<std::uint8_t, 32>;

/// SHA-256 of `data` in one call.
[[nodiscard]] sha256_digest sha256(bytes_view data);

/// Incremental SHA-256, for input that arrives in pieces (and the `0x00 ‖ bytes` framing of
/// Merkle leaves). Reusable: `finish` resets it.
class sha256_hasher {
 public:
  sha256_hasher();
  ~sha256_hasher();
  sha256_hasher(sha256_hasher&&) noexcept;
  sha256_hasher& operator=(sha256_hasher&&) noexcept;
  sha256_hasher(const sha256_hasher&) = delete;
  sha256_hasher& operator=(const sha256_hasher&) = delete;

  /// Appends bytes to the message.
  sha256_hasher& update(bytes_view data);
  /// Returns the digest of everything appended since construction or the last finish.
  [[nodiscard]] sha256_digest finish();

 private:
  struct context;
  std::unique_ptr<context> context_;
};

/// HMAC-SHA-256 (RFC 2104) of `data` under `key`.
[[nodiscard]] sha256_digest hmac_sha256(bytes_view key, bytes_view data);

/// Checks a HMAC-SHA-256 tag in constant time. `tag` may be the full 32 bytes or truncated
/// to its first 16..31 bytes (RFC 2104 §5); shorter or longer tags never verify.
[[nodiscard]] bool hmac_sha256_verify(bytes_view key, bytes_view data, bytes_view tag);

}  // namespace keel
