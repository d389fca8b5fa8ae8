#pragma once
// A data key made ready for messages: what each message derives from it is prepared once per
// data key (the commitment, the key schedule of suite 2's derivation), so that a message costs
// its own key and nothing else. Shared between the data-key cache and the messages using it.
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/envelope.hpp>
#include <keel/crypto/secret.hpp>

#include "evp.hpp"

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>

namespace keel::crypto::detail {

inline constexpr std::size_t commitment_bytes = 32;
inline constexpr std::size_t content_key_bytes = 32;

[[nodiscard]] constexpr bool known_suite(std::uint16_t suite) noexcept {
  return suite == suite_aes256_gcm_hkdf_sha512_commit || suite == suite_aes256_gcm_aes_kdf_commit;
}

/// A message id's size in a suite: 32 bytes of HKDF salt in suite 1, the 96-bit nonce of the
/// AES derivation in suite 2.
[[nodiscard]] constexpr std::size_t message_id_bytes(std::uint16_t suite) noexcept {
  return suite == suite_aes256_gcm_hkdf_sha512_commit ? 32 : 12;
}

/// The keys of one message: the content key (header tag and body) and the key commitment,
/// which is not secret (it is stored in the header).
struct message_keys {
  secret_bytes content{content_key_bytes};
  std::array<std::uint8_t, commitment_bytes> commitment{};
};

class prepared_data_key {
 public:
  /// `suite`: an envelope suite (keel/crypto/envelope.hpp). @returns errc::unsupported_version
  /// for another, errc::openssl_failure.
  [[nodiscard]] static result<std::shared_ptr<const prepared_data_key>> make(secret_bytes key,
                                                                             std::uint16_t suite);

  [[nodiscard]] const secret_bytes& key() const noexcept { return key_; }
  [[nodiscard]] std::uint16_t suite() const noexcept { return suite_; }
  /// The keys of the message `message_id` (its size checked by the caller) into `out`.
  [[nodiscard]] result<void> derive(bytes_view message_id, message_keys& out) const;

  prepared_data_key(secret_bytes key, std::uint16_t suite) noexcept;

 private:
  secret_bytes key_;
  std::uint16_t suite_;
  std::array<std::uint8_t, commitment_bytes> commitment_{};  // suite 2: one per data key
  cipher_ctx block_cipher_;                                  // suite 2: AES-256-ECB under the key
  mutable std::mutex block_cipher_mutex_;                    // an EVP context is one caller's at a time
};

}  // namespace keel::crypto::detail
