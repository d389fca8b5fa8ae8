// AES key wrap through EVP's wrap ciphers (AES-*-WRAP is RFC 3394 with its default IV,
// AES-*-WRAP-PAD is RFC 5649). Unwrapped key data goes straight into secret memory.
#include <keel/crypto/keywrap.hpp>

#include "evp.hpp"

#include <climits>

namespace keel::crypto {
namespace {

const EVP_CIPHER* wrap_cipher(std::size_t kek_size, bool pad) noexcept {
  static const EVP_CIPHER* const w128 = detail::fetch_cipher("AES-128-WRAP");
  static const EVP_CIPHER* const w192 = detail::fetch_cipher("AES-192-WRAP");
  static const EVP_CIPHER* const w256 = detail::fetch_cipher("AES-256-WRAP");
  static const EVP_CIPHER* const p128 = detail::fetch_cipher("AES-128-WRAP-PAD");
  static const EVP_CIPHER* const p192 = detail::fetch_cipher("AES-192-WRAP-PAD");
  static const EVP_CIPHER* const p256 = detail::fetch_cipher("AES-256-WRAP-PAD");
  switch (kek_size) {
    case 16:
      return pad ? p128 : w128;
    case 24:
      return pad ? p192 : w192;
    default:
      return pad ? p256 : w256;
  }
}

bool valid_kek(bytes_view kek) noexcept {
  return kek.size() == 16 || kek.size() == 24 || kek.size() == 32;
}

// Runs one wrap or unwrap through `cipher` into `out` (sized for the largest result).
// @returns the bytes written, or -1.
int run(const EVP_CIPHER* cipher, bytes_view kek, bytes_view in, std::uint8_t* out, bool encrypt) {
  detail::cipher_ctx ctx(EVP_CIPHER_CTX_new());
  if (!ctx || cipher == nullptr || in.size() > static_cast<std::size_t>(INT_MAX / 2)) return -1;
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  if (EVP_CipherInit_ex2(ctx.get(), cipher, kek.data(), nullptr, encrypt ? 1 : 0, nullptr) != 1) return -1;
  int written = 0;
  if (EVP_CipherUpdate(ctx.get(), out, &written, in.data(), static_cast<int>(in.size())) != 1 || written < 0)
    return -1;
  int last = 0;
  if (EVP_CipherFinal_ex(ctx.get(), out + written, &last) != 1) return -1;
  return written + last;
}

result<bytes> wrap(bytes_view kek, bytes_view key_data, bool pad) {
  if (!valid_kek(kek)) return errc::invalid_key_size;
  const bool sized = pad ? !key_data.empty() : key_data.size() >= 16 && key_data.size() % 8 == 0;
  if (!sized) return errc::invalid_input_size;
  bytes out((key_data.size() + 7) / 8 * 8 + 8);
  const int n = run(wrap_cipher(kek.size(), pad), kek, key_data, out.data(), true);
  if (n < 0) return errc::openssl_failure;
  out.resize(static_cast<std::size_t>(n));
  return out;
}

result<secret_bytes> unwrap(bytes_view kek, bytes_view wrapped, bool pad) {
  if (!valid_kek(kek)) return errc::invalid_key_size;
  const bool sized = wrapped.size() % 8 == 0 && wrapped.size() >= (pad ? 16U : 24U);
  if (!sized) return errc::invalid_input_size;
  secret_bytes out(wrapped.size());
  const int n = run(wrap_cipher(kek.size(), pad), kek, wrapped, out.data(), false);
  // A wrong KEK, a changed byte or bad padding: the integrity check failed.
  if (n < 0) return errc::authentication_failed;
  out.truncate(static_cast<std::size_t>(n));
  return out;
}

}  // namespace

result<bytes> aes_key_wrap(bytes_view kek, bytes_view key_data) {
  return wrap(kek, key_data, false);
}
result<secret_bytes> aes_key_unwrap(bytes_view kek, bytes_view wrapped) {
  return unwrap(kek, wrapped, false);
}
result<bytes> aes_key_wrap_pad(bytes_view kek, bytes_view key_data) {
  return wrap(kek, key_data, true);
}
result<secret_bytes> aes_key_unwrap_pad(bytes_view kek, bytes_view wrapped) {
  return unwrap(kek, wrapped, true);
}

}  // namespace keel::crypto
