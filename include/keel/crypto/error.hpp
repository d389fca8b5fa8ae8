#pragma once
/// @file keel/crypto/error.hpp
/// @brief `keel::crypto::errc` and its category "keel.crypto".
#include <keel/core/error.hpp>

namespace keel::crypto {

/// What went wrong in a keel::crypto call. A ciphertext or tag that does not verify is
/// `authentication_failed`: the data was changed, or the key, nonce or associated data differ.
enum class errc {
  invalid_key_size = 1,   ///< a key of a size the algorithm does not take
  invalid_nonce_size,     ///< a nonce that is not 12 bytes (96-bit nonces only)
  invalid_tag_size,       ///< a MAC tag shorter than 16 bytes or longer than the hash
  authentication_failed,  ///< the ciphertext, tag or MAC did not verify: nothing is returned
  output_too_large,       ///< HKDF asked for more than 255 hash lengths
  invalid_input_size,     ///< key wrap input outside its sizes (RFC 3394: a multiple of 8, at least 16)
  buffer_too_small,       ///< the output span cannot hold the result
  openssl_failure,        ///< OpenSSL failed for another reason (allocation, a missing provider)
  malformed_envelope,     ///< not a keel envelope, or its header or framing is broken or truncated
  unsupported_version,    ///< an envelope version or algorithm suite this build does not know
  too_many_data_keys,   ///< an envelope with more encrypted data keys than allowed: refused before any unwrap
  context_mismatch,     ///< the envelope's encryption context lacks or differs from a pair the caller expects
  no_usable_data_key,   ///< no encrypted data key could be unwrapped by the providers given
  commitment_mismatch,  ///< the data key does not match the envelope's key commitment
  invalid_context,      ///< an encryption context key or value too long, or a key that is empty
  unknown_key,          ///< a key id (name/version) the keyring does not hold
  key_disabled,         ///< the key version is below min_decryption_version, or not enabled for encryption
  key_destroyed,        ///< the key version was destroyed: what it wrapped cannot be unwrapped any more
  insecure_key_file,    ///< a key file that others can read or write, or that another user owns
  malformed_key_file,   ///< not a keel keyring file, or one of another version
  key_exists,           ///< a key version or label that is already taken
  pkcs11_module_unavailable,  ///< the PKCS#11 module could not be loaded or initialised
  pkcs11_token_not_found,     ///< no token with the label asked for is present
  pkcs11_no_mechanism,        ///< the token's key can neither GCM-encrypt nor wrap with padding
  duplicate_key_label,        ///< two keys in the token share the label asked for
  secret_not_found,           ///< no secret (or version of it) by that tenant and name
  secret_deleted,             ///< the secret is soft-deleted: restore it to read it
  secret_version_destroyed,   ///< that version's value was destroyed
  invalid_secret_name,        ///< a tenant or secret name that is empty, too long or holds control characters
  secret_too_large,           ///< a secret value over the store's max_value_bytes
  unsupported_key_type,       ///< a transit key type keel does not offer (it offers aes256-gcm96)
  invalid_key_config,         ///< a key configuration whose versions do not fit the key's
  deletion_not_allowed,       ///< a transit key not configured with deletion_allowed
  context_required,           ///< a derived transit key used without a context
  malformed_ciphertext,       ///< not a "vault:v<version>:<base64>" ciphertext
  invalid_vault_address,      ///< a Vault address that is not http(s)://host:port, or an unreadable ca_file
  vault_unreachable,          ///< no answer from the Vault server (refused, timed out, closed)
  vault_permission_denied,    ///< the Vault server refused the token for this path (403)
  vault_request_failed,       ///< the Vault server answered an error (the status and message are logged)
  vault_tls_failed,           ///< the TLS handshake with the Vault server failed (certificate or host name)
};

/// The category of keel::crypto::errc ("keel.crypto").
[[nodiscard]] const error_category& crypto_category() noexcept;

}  // namespace keel::crypto

KEEL_ERROR_ENUM(keel::crypto, crypto_category);
