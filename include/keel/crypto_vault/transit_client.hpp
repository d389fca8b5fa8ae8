#pragma once
/// @file keel/crypto_vault/transit_client.hpp
/// @brief A `keel::crypto::kms` whose key-encryption key is a key of a Vault transit engine
/// (HashiCorp Vault, or keel::crypto_http's): data keys are encrypted and decrypted by the
/// server, and the KEK never leaves it.
///
/// @code
/// auto vault = keel::crypto::vault_transit_kms::open({
///     .address = "http://127.0.0.1:8200",
///     .token = keel::crypto::secret_bytes::copy_of(keel::as_bytes(token_from_env)),
///     .key_name = "orders"}).value();
/// keel::crypto::kms* wrappers[] = {vault.get()};
/// auto sealed = keel::crypto::encrypt(wrappers, plaintext, {{"tenant", "acme"}}).value();
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/kms.hpp>
#include <keel/crypto/secret.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace keel::crypto {

struct vault_transit_options {
  /// https://host:port (TLS 1.2 or later, the certificate checked against `ca_file` and the
  /// host name), or http://host:port for a Vault on loopback.
  std::string address = "https://127.0.0.1:8200";
  /// PEM certificates to trust for https (e.g. Vault's CA); empty: the system's trust store.
  std::string ca_file;
  secret_bytes token;  ///< sent as X-Vault-Token; kept in locked memory
  std::string mount = "transit";
  std::string key_name;  ///< the transit key that wraps data keys
  std::chrono::milliseconds timeout{5000};
};

/// Thread-safe (each call is its own HTTP request). The envelope's context is sent as
/// `associated_data`, so the server refuses to decrypt a data key under another context.
class vault_transit_kms final : public kms {
 public:
  /// Checks the address and reads the key (GET <mount>/keys/<name>), so a wrong address,
  /// token or key fails here. @returns errc::vault_unreachable, vault_tls_failed (an untrusted
  /// certificate, or one for another host), vault_permission_denied, unknown_key,
  /// invalid_vault_address (or an unreadable ca_file), or vault_request_failed.
  [[nodiscard]] static result<std::unique_ptr<vault_transit_kms>> open(vault_transit_options options);

  [[nodiscard]] std::string_view provider() const noexcept override { return "vault"; }
  [[nodiscard]] result<encrypted_data_key> wrap(bytes_view data_key, bytes_view aad) override;
  [[nodiscard]] result<secret_bytes> unwrap(const encrypted_data_key& edk, bytes_view aad) override;

  struct state;
  vault_transit_kms(const vault_transit_kms&) = delete;
  vault_transit_kms& operator=(const vault_transit_kms&) = delete;
  ~vault_transit_kms() override;

 private:
  explicit vault_transit_kms(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
};

}  // namespace keel::crypto
