#pragma once
/// @file keel/crypto_pkcs11/pkcs11.hpp
/// @brief A `keel::crypto::kms` whose key-encryption keys live in a PKCS#11 token (an HSM, or
/// SoftHSM2): data keys are wrapped inside the token and the KEK never leaves it.
///
/// @code
/// auto hsm = keel::crypto::pkcs11_kms::open({
///     .module = "/usr/lib/softhsm/libsofthsm2.so",
///     .token_label = "payments",
///     .pin = keel::crypto::secret_bytes::copy_of(keel::as_bytes(pin_from_env)),
///     .key_label = "orders-kek-2026",
/// }).value();
/// keel::crypto::kms* wrappers[] = {hsm.get()};
/// auto sealed = keel::crypto::encrypt(wrappers, plaintext, {{"tenant", "acme"}}).value();
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/kms.hpp>
#include <keel/crypto/secret.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace keel::crypto {

/// How the token protects a data key. Chosen when the provider opens by trying each with the
/// wrapping key (a token's mechanism flags are not trusted: some advertise what fails).
enum class pkcs11_mechanism : std::uint8_t {
  /// CKM_AES_GCM over the data key's bytes, with the key id and the envelope's context as
  /// associated data: preferred, as the token itself refuses a changed context.
  aes_gcm = 1,
  /// CKM_AES_KEY_WRAP_PAD (RFC 5649) of the data key as a session object; the context is bound
  /// by an HMAC under the data key stored beside the wrapped bytes, checked after unwrapping.
  aes_key_wrap_pad = 2,
};
[[nodiscard]] std::string_view to_string(pkcs11_mechanism m) noexcept;

struct pkcs11_options {
  /// The PKCS#11 module (shared object) to load, e.g. SoftHSM2's libsofthsm2.so.
  std::string module;
  /// The token, by its label (as set when it was initialised).
  std::string token_label;
  /// The user PIN; kept in locked memory for the provider's life (sessions log in with it).
  secret_bytes pin;
  /// The AES key (CKO_SECRET_KEY with this CKA_LABEL) that wraps new data keys. Unwrapping uses
  /// the key named in each encrypted data key, so keys retired from wrapping still unwrap.
  std::string key_label;
  /// Use only this mechanism (fail to open if the token cannot do it); by default GCM, then
  /// key wrap with padding.
  std::optional<pkcs11_mechanism> mechanism;
  /// Sessions kept open for concurrent calls (a PKCS#11 session serves one call at a time).
  std::size_t max_sessions = 4;
};

/// Key-encryption keys in a PKCS#11 token. Each key id is the key's label. Thread-safe: calls
/// share a pool of logged-in sessions. Errors from the token keep their CKR_ value, in the
/// category "pkcs11" (see pkcs11_category()).
class pkcs11_kms final : public kms {
 public:
  /// Loads the module (once per process and path), finds the token, logs in, finds the
  /// wrapping key and probes the mechanism. @returns errc::pkcs11_module_unavailable,
  /// pkcs11_token_not_found, unknown_key (no key with that label), pkcs11_no_mechanism, or the
  /// token's error (e.g. CKR_PIN_INCORRECT).
  [[nodiscard]] static result<std::unique_ptr<pkcs11_kms>> open(pkcs11_options options);

  /// Creates an AES-256 key in the token of `token` (module, token_label and pin are used)
  /// under `label` — sensitive, not extractable, able only to encrypt, decrypt, wrap and
  /// unwrap — to set up a token or rotate: open a provider with it as `key_label` to wrap new
  /// data keys with it. @returns errc::key_exists if the token holds a key with that label.
  [[nodiscard]] static result<void> generate_key(const pkcs11_options& token, std::string_view label);

  pkcs11_kms(const pkcs11_kms&) = delete;
  pkcs11_kms& operator=(const pkcs11_kms&) = delete;
  ~pkcs11_kms() override;

  [[nodiscard]] std::string_view provider() const noexcept override { return "pkcs11"; }
  [[nodiscard]] pkcs11_mechanism mechanism() const noexcept;
  [[nodiscard]] result<encrypted_data_key> wrap(bytes_view data_key, bytes_view aad) override;
  [[nodiscard]] result<secret_bytes> unwrap(const encrypted_data_key& edk, bytes_view aad) override;

  struct state;

 private:
  explicit pkcs11_kms(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
};

/// The category of PKCS#11 return values ("pkcs11"): an error_code's value is the CKR_ code,
/// its message names it and says what to do.
[[nodiscard]] const error_category& pkcs11_category() noexcept;

}  // namespace keel::crypto
