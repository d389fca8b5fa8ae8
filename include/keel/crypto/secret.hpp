#pragma once
/// @file keel/crypto/secret.hpp
/// @brief Key material in memory that is locked against swapping where the OS allows, kept out
/// of core dumps, wiped when released, compared in constant time, and never printed.
///
/// @code
/// auto key = keel::crypto::secret_bytes::random(32);   // a fresh AES-256 key
/// use(key.view());                                     // bytes_view for the primitives
/// @endcode
#include <keel/core/bytes.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace keel::crypto {

/// An owned buffer of secret bytes in locked memory — OpenSSL's secure heap for up to 4 KiB
/// (mlock()ed, guard pages, excluded from core dumps; set up on first use unless the
/// application did), whole pages of its own otherwise — best effort: `locked()` says whether it
/// worked (RLIMIT_MEMLOCK can refuse it). Cleansed before it is freed or reassigned. Move-only: copies of
/// secrets are explicit (`copy()`). There is no stream operator and no conversion to text.
class secret_bytes {
 public:
  secret_bytes() noexcept = default;
  /// `size` zero bytes.
  explicit secret_bytes(std::size_t size);
  /// A copy of `data` (cleanse the source yourself if it was secret).
  [[nodiscard]] static secret_bytes copy_of(bytes_view data);
  /// `size` bytes from OpenSSL's CSPRNG. Throws std::runtime_error if it fails (it does not
  /// once seeded).
  [[nodiscard]] static secret_bytes random(std::size_t size);

  secret_bytes(secret_bytes&& other) noexcept;
  secret_bytes& operator=(secret_bytes&& other) noexcept;
  secret_bytes(const secret_bytes&) = delete;
  secret_bytes& operator=(const secret_bytes&) = delete;
  ~secret_bytes();

  [[nodiscard]] secret_bytes copy() const { return copy_of(view()); }
  [[nodiscard]] bytes_view view() const noexcept { return {data_, size_}; }
  [[nodiscard]] std::uint8_t* data() noexcept { return data_; }
  [[nodiscard]] const std::uint8_t* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// Whether the pages are locked in memory (mlock succeeded).
  [[nodiscard]] bool locked() const noexcept { return locked_; }
  /// Shortens the secret to its first `size` bytes, cleansing the rest.
  void truncate(std::size_t size) noexcept;

  /// Constant time in the contents (not in the sizes, which are not secret).
  friend bool operator==(const secret_bytes& a, const secret_bytes& b) noexcept;

 private:
  void release() noexcept;
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;  // bytes mapped (whole pages), when not from the secure heap
  bool locked_ = false;
  bool secure_heap_ = false;  // from OpenSSL's secure heap
};

/// Constant-time comparison of two byte strings of equal size (false for different sizes).
[[nodiscard]] bool equal_constant_time(bytes_view a, bytes_view b) noexcept;

/// Overwrites `data` with zeros in a way the compiler cannot drop (OPENSSL_cleanse): for
/// plaintext that had to live in ordinary memory, before it is freed.
void cleanse(std::span<std::uint8_t> data) noexcept;

/// `size` random bytes from OpenSSL's CSPRNG, for nonces and ids (not secret).
[[nodiscard]] bytes random_bytes(std::size_t size);

}  // namespace keel::crypto
