#include <keel/crypto/error.hpp>

namespace keel::crypto {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_key_size:
      return "the key has a size the algorithm does not take (AES: 16, 24 or 32 bytes; ChaCha20-Poly1305: "
             "32)";
    case errc::invalid_nonce_size:
      return "the nonce is not 12 bytes: keel takes 96-bit nonces only (use random_bytes(aead_nonce_bytes))";
    case errc::invalid_tag_size:
      return "the MAC tag is shorter than 16 bytes or longer than the digest: send at least 16 bytes of it";
    case errc::authentication_failed:
      return "the data did not verify: it was changed, or the key, nonce or associated data differ from "
             "those it was sealed with; nothing was decrypted";
    case errc::output_too_large:
      return "HKDF can derive at most 255 digest lengths (8,160 bytes with SHA-256, 16,320 with SHA-512)";
    case errc::invalid_input_size:
      return "key wrap takes a multiple of 8 bytes, at least 16 (RFC 3394), or 1 byte or more with padding "
             "(RFC 5649); a wrapped key is 8 bytes longer than what it holds";
    case errc::buffer_too_small:
      return "the output buffer is too small: sealing needs the plaintext's size plus 16 bytes";
    case errc::openssl_failure:
      return "OpenSSL failed (out of memory, or a provider missing); see OpenSSL's error queue";
    case errc::malformed_envelope:
      return "the bytes are not a whole keel envelope: the header or the framing is broken, truncated or "
             "followed by extra bytes";
    case errc::unsupported_version:
      return "the envelope's version or algorithm suite is not one this keel knows; upgrade keel to read it";
    case errc::too_many_data_keys:
      return "the envelope holds more encrypted data keys than allowed (decrypt_options::max_data_keys); "
             "nothing was unwrapped";
    case errc::context_mismatch:
      return "the envelope's encryption context does not hold every key/value pair you expect: it belongs "
             "to something else";
    case errc::no_usable_data_key:
      return "none of the envelope's data keys could be unwrapped by the providers given: pass the keyring "
             "or KMS that encrypted it, with the key version still enabled";
    case errc::commitment_mismatch:
      return "the unwrapped data key does not match the envelope's key commitment: the envelope was "
             "tampered with or crafted to decrypt under more than one key";
    case errc::invalid_context:
      return "an encryption context key is empty, or a key or value is over 65,535 bytes, or there are over "
             "65,535 pairs";
    case errc::unknown_key:
      return "the keyring holds no such key version (the id is name/version)";
    case errc::key_disabled:
      return "the key version may not be used for this: encrypt with the primary, and decrypt only with "
             "versions at or above min_decryption_version that are not destroyed";
    case errc::key_destroyed:
      return "the key version was destroyed: what it wrapped can no longer be unwrapped (rewrap envelopes "
             "before destroying a version)";
    case errc::insecure_key_file:
      return "the key file is readable or writable by others, or owned by another user: chmod 600 it (and "
             "check who changed it) before using it";
    case errc::malformed_key_file:
      return "the file is not a keel keyring file (or one of a version this keel does not read)";
    case errc::key_exists:
      return "a key with that version or label already exists: pick another, or use the one there";
    case errc::pkcs11_module_unavailable:
      return "the PKCS#11 module could not be loaded or initialised: check the path (e.g. SoftHSM2's "
             "libsofthsm2.so) and its configuration (SOFTHSM2_CONF for SoftHSM)";
    case errc::pkcs11_token_not_found:
      return "no PKCS#11 token with that label is present: list them (softhsm2-util --show-slots, "
             "pkcs11-tool -L) and check the label";
    case errc::pkcs11_no_mechanism:
      return "the token's key can neither encrypt with CKM_AES_GCM nor wrap with CKM_AES_KEY_WRAP_PAD: use "
             "an AES key with CKA_ENCRYPT/CKA_DECRYPT or CKA_WRAP/CKA_UNWRAP set";
    case errc::duplicate_key_label:
      return "two keys in the token have that label, so which one wraps is ambiguous: give each key its own "
             "label";
    case errc::secret_not_found:
      return "no secret by that tenant and name (or no such version of it): list the tenant's secrets to "
             "see what is stored";
    case errc::secret_deleted:
      return "the secret is deleted (soft): restore it to read it again, or put a new value";
    case errc::secret_version_destroyed:
      return "that version of the secret was destroyed and cannot be read; read another version";
    case errc::invalid_secret_name:
      return "a secret's name must be 1 to 512 bytes and its tenant 1 to 255, without control characters";
    case errc::secret_too_large:
      return "the secret is larger than the store takes (secret_store_options::max_value_bytes, 64 KiB by "
             "default): store large data encrypted elsewhere and its key here";
    case errc::unsupported_key_type:
      return "keel's transit keys are of type aes256-gcm96: create the key with that type (or none)";
    case errc::invalid_key_config:
      return "the key configuration does not fit the key: min_decryption_version must be at most the latest "
             "version, and min_encryption_version 0 or between min_decryption_version and the latest";
    case errc::deletion_not_allowed:
      return "the key may not be deleted: set deletion_allowed in its config first (deleting it makes every "
             "ciphertext under it unreadable)";
    case errc::context_required:
      return "the key is derived: every encrypt, decrypt, rewrap and data key call must give a context "
             "(base64)";
    case errc::malformed_ciphertext:
      return "the ciphertext is not of the form vault:v<version>:<base64> that encrypt returned";
    case errc::invalid_vault_address:
      return "the Vault address must be https://host:port (or http:// for a Vault on loopback), and ca_file "
             "a "
             "readable PEM file";
    case errc::vault_unreachable:
      return "the Vault server did not answer: check the address, that it is running, and the timeout";
    case errc::vault_permission_denied:
      return "the Vault server refused the token for this path (403): check the token and its policy";
    case errc::vault_request_failed:
      return "the Vault server answered with an error: see the log line with its status and message";
    case errc::vault_tls_failed:
      return "the TLS handshake with the Vault server failed: its certificate is not trusted (give ca_file) "
             "or "
             "does not name the host in the address";
  }
  return "unknown keel.crypto error";
}

constexpr enum_error_category<errc> category{"keel.crypto", &describe};

}  // namespace

const error_category& crypto_category() noexcept {
  return category;
}

}  // namespace keel::crypto
