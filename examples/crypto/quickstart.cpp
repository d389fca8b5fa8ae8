// docs/crypto.md quotes this file; ctest runs it (examples.crypto_quickstart).
#include <keel/crypto.hpp>

#include <cstdio>
#include <string_view>

int main() {
  using namespace keel::crypto;
  const auto kek = secret_bytes::random(32);           // a key-encryption key (a KMS would hold it)
  const auto data_key = secret_bytes::random(32);      // a fresh key per object
  const auto nonce = random_bytes(aead_nonce_bytes);   // never twice under one key
  const auto context = keel::as_bytes("tenant=acme");  // authenticated, not stored
  auto sealed =
      seal(aead_algorithm::aes_gcm, data_key.view(), nonce, keel::as_bytes("card 4242"), context).value();
  auto wrapped = aes_key_wrap_pad(kek.view(), data_key.view()).value();  // store it beside `sealed`

  // Later: unwrap the data key, then open; another tenant's context does not verify.
  const auto unwrapped = aes_key_unwrap_pad(kek.view(), wrapped).value();
  const auto plain = open(aead_algorithm::aes_gcm, unwrapped.view(), nonce, sealed, context).value();
  const auto other =
      open(aead_algorithm::aes_gcm, unwrapped.view(), nonce, sealed, keel::as_bytes("tenant=evil"));
  std::printf("%.*s; other tenant: %s\n", static_cast<int>(plain.size()),
              reinterpret_cast<const char*>(plain.data()),
              other ? "opened?!" : other.error().message().c_str());
  return !other && other.error() == errc::authentication_failed ? 0 : 1;
}
