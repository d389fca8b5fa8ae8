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
  }
  return "unknown keel.crypto error";
}

constexpr enum_error_category<errc> category{"keel.crypto", &describe};

}  // namespace

const error_category& crypto_category() noexcept {
  return category;
}

}  // namespace keel::crypto
