#pragma once
/// @file keel/crypto/envelope.hpp
/// @brief Envelope encryption: a fresh data key per message encrypts the body; the data key is
/// wrapped by one or more key-encryption-key providers; an authenticated encryption context
/// binds the message to what it belongs to; a key commitment makes the message decrypt under one
/// data key only. Framed mode cuts a large body into fixed-size frames, each verified on its own,
/// so memory stays bounded and truncation or reordering is detected. docs/crypto.md gives the
/// byte layout.
///
/// @code
/// keel::crypto::keyring orders("orders");
/// orders.rotate();
/// keel::crypto::kms* wrappers[] = {&orders};
/// auto sealed = keel::crypto::encrypt(wrappers, plaintext, {{"tenant", "acme"}}).value();
/// auto opened = keel::crypto::decrypt(wrappers, sealed, {.expected_context = {{"tenant", "acme"}}}).value();
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/error.hpp>
#include <keel/crypto/kms.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace keel::crypto {

/// Key/value pairs authenticated with the message and stored in its header (in key order). Not
/// secret: put names and ids here, never the data.
using encryption_context = std::map<std::string, std::string, std::less<>>;

inline constexpr std::uint8_t envelope_version = 1;
/// AES-256-GCM body; a 32-byte message id; content key and key commitment by HKDF-SHA-512 from
/// the data key and the message id, per message (the AWS Encryption SDK's committing design).
/// Read, and written when asked for.
inline constexpr std::uint16_t suite_aes256_gcm_hkdf_sha512_commit = 0x0001;
/// AES-256-GCM body; a 12-byte message id; the content key derived from the data key by AES-256
/// over the message id (RFC 8452's derivation); the key commitment HMAC-SHA-256 of the data key.
/// What depends only on the data key is made once per cached key, so a 1 KiB message costs
/// about what AES-GCM of its bytes does. The default.
inline constexpr std::uint16_t suite_aes256_gcm_aes_kdf_commit = 0x0002;

class data_key_cache;

struct encrypt_options {
  /// 0: the body is one sealed block. Otherwise frames of this many bytes (the last one shorter),
  /// each sealed on its own: memory bounded by a frame, truncation and reordering detected.
  std::uint32_t frame_size = 0;
  /// Reuse a data key (and its wrapped forms) for this context and these providers within the
  /// cache's limits, instead of wrapping a new one per message (keel/crypto/cache.hpp).
  data_key_cache* cache = nullptr;
  /// suite_aes256_gcm_aes_kdf_commit or suite_aes256_gcm_hkdf_sha512_commit.
  std::uint16_t suite = suite_aes256_gcm_aes_kdf_commit;
};

struct decrypt_options {
  /// Every pair here must be in the envelope's context with the same value (errc::context_mismatch).
  encryption_context expected_context{};
  /// Envelopes holding more data keys are refused before any unwrap (errc::too_many_data_keys).
  std::size_t max_data_keys = 8;
  /// Remember unwrapped data keys (within the cache's max_age) instead of asking the provider again.
  data_key_cache* cache = nullptr;
};

/// What an envelope says about itself, readable without any key.
struct envelope_header {
  std::uint8_t version = envelope_version;
  std::uint16_t suite = suite_aes256_gcm_aes_kdf_commit;
  bytes message_id;  ///< random: 32 bytes in suite 1, 12 in suite 2
  encryption_context context;
  std::vector<encrypted_data_key> data_keys;
  std::uint32_t frame_size = 0;  ///< 0: not framed
  std::size_t header_size = 0;   ///< bytes before the body
};

struct decrypted {
  bytes plaintext;
  encryption_context context;
  encrypted_data_key used;  ///< which data key unwrapped it
};

/// Encrypts `plaintext` under a new data key wrapped by every provider in `wrappers` (at least
/// one, at most 255). @returns errc::invalid_context, or the first provider error.
[[nodiscard]] result<bytes> encrypt(std::span<kms* const> wrappers, bytes_view plaintext,
                                    const encryption_context& context, const encrypt_options& options = {});

/// Decrypts an envelope with the first data key one of `unwrappers` (matched by provider id)
/// can unwrap. Every byte is authenticated: a change anywhere, a missing or reordered frame, or a
/// truncated body is an error, and nothing of the plaintext is returned then.
[[nodiscard]] result<decrypted> decrypt(std::span<kms* const> unwrappers, bytes_view envelope,
                                        const decrypt_options& options = {});

/// Reads the header (context, data keys, framing) without decrypting. @returns
/// errc::malformed_envelope, unsupported_version, too_many_data_keys (over `max_data_keys`).
[[nodiscard]] result<envelope_header> read_header(bytes_view envelope, std::size_t max_data_keys = 255);

/// Re-wraps the envelope's data key under `wrappers` (replacing every data key it held) without
/// touching the body: unwraps with `unwrappers`, checks the commitment and the header's tag,
/// and writes a new header. The body is not decrypted. For rotation: rewrap with the keyring
/// after rotate(), then old versions can be retired.
[[nodiscard]] result<bytes> rewrap(std::span<kms* const> unwrappers, std::span<kms* const> wrappers,
                                   bytes_view envelope, const decrypt_options& options = {});

/// Encrypts a message of any length as it comes, into a framed envelope: header() first, then
/// update() with the message's bytes in chunks of any size (it appends each frame they fill),
/// then finish() (the final frame). Holds one frame of plaintext at most.
class envelope_encryptor {
 public:
  /// Makes the data key, wraps it with every provider, writes the header. @returns
  /// errc::invalid_input_size for a frame size of 0, or what encrypt() returns.
  [[nodiscard]] static result<envelope_encryptor> start(
      std::span<kms* const> wrappers, const encryption_context& context, std::uint32_t frame_size,
      std::uint16_t suite = suite_aes256_gcm_aes_kdf_commit);
  envelope_encryptor(envelope_encryptor&&) noexcept;
  envelope_encryptor& operator=(envelope_encryptor&&) noexcept;
  ~envelope_encryptor();

  [[nodiscard]] const bytes& header() const noexcept;
  /// Appends to `out` every frame `chunk` completes.
  [[nodiscard]] result<void> update(bytes_view chunk, bytes& out);
  /// Appends the final frame (what is left, maybe nothing). Nothing may follow.
  [[nodiscard]] result<void> finish(bytes& out);

  struct state;

 private:
  explicit envelope_encryptor(std::unique_ptr<state> s) noexcept;
  std::unique_ptr<state> state_;
};

/// Decrypts a framed envelope as its bytes arrive: update() with chunks of any size appends the
/// plaintext of each frame once its tag verified — never a byte before — and finish() says
/// whether the envelope ended where it should (errc::malformed_envelope when the final frame
/// never came). Holds one frame at most (and the header: at most `max_header_bytes`).
class envelope_decryptor {
 public:
  explicit envelope_decryptor(std::span<kms* const> unwrappers, decrypt_options options = {},
                              std::size_t max_header_bytes = 1U << 20U);
  envelope_decryptor(envelope_decryptor&&) noexcept;
  envelope_decryptor& operator=(envelope_decryptor&&) noexcept;
  ~envelope_decryptor();

  /// Appends verified plaintext to `out`. After an error the decryptor takes nothing more.
  [[nodiscard]] result<void> update(bytes_view chunk, bytes& out);
  [[nodiscard]] result<void> finish();
  /// The header, once it was read and authenticated; null before.
  [[nodiscard]] const envelope_header* header() const noexcept;

  struct state;

 private:
  std::unique_ptr<state> state_;
};

}  // namespace keel::crypto
