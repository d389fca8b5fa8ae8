// The two suites' derivations (docs/crypto.md, "Suites"). Suite 1 runs HKDF-SHA-512 per message,
// as the AWS Encryption SDK's committing suites do; suite 2 does per data key what does not
// depend on the message (the commitment, a key schedule), so a message's derivation is four
// AES blocks under a key schedule already made.
#include "data_key.hpp"

#include <keel/core/byte_io.hpp>
#include <keel/crypto/envelope.hpp>
#include <keel/crypto/kdf.hpp>

#include <openssl/crypto.h>

#include <algorithm>
#include <string_view>

namespace keel::crypto::detail {
namespace {

constexpr std::string_view v1_derive_label = "keel envelope v1 derive key";
constexpr std::string_view v1_commit_label = "keel envelope v1 commit key";
constexpr std::string_view v2_commit_label = "keel envelope suite 2 key commitment";

// Suite 2's derivation is RFC 8452's (AES-GCM-SIV, section 4): block i is the 96-bit nonce then
// i as 32 bits little-endian, encrypted under the data key; the first half of each of four
// blocks makes the 256-bit content key (halves, so the output is a PRF's, not a permutation's).
constexpr std::size_t derivation_blocks = 4;
constexpr std::size_t block_bytes = 16;

}  // namespace

prepared_data_key::prepared_data_key(secret_bytes key, std::uint16_t suite) noexcept
    : key_(std::move(key)), suite_(suite) {}

result<std::shared_ptr<const prepared_data_key>> prepared_data_key::make(secret_bytes key,
                                                                         std::uint16_t suite) {
  if (!known_suite(suite)) return errc::unsupported_version;
  if (key.size() != content_key_bytes) return errc::invalid_key_size;
  auto prepared = std::make_shared<prepared_data_key>(std::move(key), suite);
  if (suite == suite_aes256_gcm_aes_kdf_commit) {
    auto commitment = hmac(hash_algorithm::sha256, prepared->key_.view(), as_bytes(v2_commit_label));
    if (!commitment) return commitment.error();
    std::copy_n(commitment->begin(), commitment_bytes, prepared->commitment_.begin());
    static const EVP_CIPHER* const ecb = fetch_cipher("AES-256-ECB");
    prepared->block_cipher_.reset(EVP_CIPHER_CTX_new());
    if (ecb == nullptr || !prepared->block_cipher_ ||
        EVP_EncryptInit_ex2(prepared->block_cipher_.get(), ecb, prepared->key_.data(), nullptr, nullptr) !=
            1 ||
        EVP_CIPHER_CTX_set_padding(prepared->block_cipher_.get(), 0) != 1)
      return errc::openssl_failure;
  }
  return std::shared_ptr<const prepared_data_key>(std::move(prepared));
}

result<void> prepared_data_key::derive(bytes_view message_id, message_keys& out) const {
  if (suite_ == suite_aes256_gcm_hkdf_sha512_commit) {
    // One extraction, two expansions: the same keys as two HKDF calls, at three HMACs instead of four.
    auto prk = hkdf_extract(hash_algorithm::sha512, key_.view(), message_id);
    if (!prk) return prk.error();
    auto content =
        hkdf_expand(hash_algorithm::sha512, prk->view(), as_bytes(v1_derive_label), content_key_bytes);
    if (!content) return content.error();
    auto commitment =
        hkdf_expand(hash_algorithm::sha512, prk->view(), as_bytes(v1_commit_label), commitment_bytes);
    if (!commitment) return commitment.error();
    std::copy_n(content->data(), content_key_bytes, out.content.data());
    std::copy_n(commitment->data(), commitment_bytes, out.commitment.begin());
    return {};
  }
  if (message_id.size() != message_id_bytes(suite_)) return errc::malformed_envelope;
  std::array<std::uint8_t, derivation_blocks * block_bytes> blocks{};
  for (std::size_t i = 0; i < derivation_blocks; ++i) {
    std::copy(message_id.begin(), message_id.end(),
              blocks.begin() + static_cast<std::ptrdiff_t>(i * block_bytes));
    store_le<std::uint32_t>(blocks.data() + i * block_bytes + message_id.size(),
                            static_cast<std::uint32_t>(i));
  }
  std::array<std::uint8_t, derivation_blocks * block_bytes> encrypted{};
  int written = 0;
  {
    const std::lock_guard lock(block_cipher_mutex_);
    if (EVP_EncryptUpdate(block_cipher_.get(), encrypted.data(), &written, blocks.data(),
                          static_cast<int>(blocks.size())) != 1 ||
        written != static_cast<int>(encrypted.size()))
      return errc::openssl_failure;
  }
  for (std::size_t i = 0; i < derivation_blocks; ++i) {
    std::copy_n(encrypted.begin() + static_cast<std::ptrdiff_t>(i * block_bytes), block_bytes / 2,
                out.content.data() + i * block_bytes / 2);
  }
  OPENSSL_cleanse(encrypted.data(), encrypted.size());
  out.commitment = commitment_;
  return {};
}

}  // namespace keel::crypto::detail
