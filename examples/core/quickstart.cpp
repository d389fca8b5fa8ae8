// docs/core.md quotes this file; tests/docs_test.cmake checks they agree.
#include <keel/core.hpp>

#include <cstdio>

int main() {
  // Fallible calls return keel::result<T>: a value or an error_code with a helpful message.
  auto decoded = keel::from_base64("aGVsbG8=");
  if (!decoded) return std::fprintf(stderr, "%s\n", decoded.error().message().c_str()), 1;

  // Hash, sign and verify through OpenSSL; only the public key is needed to verify.
  const auto digest = keel::sha256(*decoded);
  const auto key = keel::ed25519_private_key::generate();
  const auto signature = key.sign(digest);
  const bool valid = key.public_key().verify(digest, signature);

  keel::log::info("signed a digest", {{"sha256", keel::to_hex(digest)}, {"valid", valid}});
  return valid ? 0 : 1;
}
