#pragma once
/// @file keel/crypto/keywrap.hpp
/// @brief AES key wrap (RFC 3394) and key wrap with padding (RFC 5649): wrapping data keys under
/// a key-encryption key of 16, 24 or 32 bytes, as KMSs and PKCS#11 (CKM_AES_KEY_WRAP[_PAD]) do.
///
/// @code
/// auto wrapped = keel::crypto::aes_key_wrap_pad(kek.view(), data_key.view()).value();
/// auto unwrapped = keel::crypto::aes_key_unwrap_pad(kek.view(), wrapped).value();  // secret_bytes
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/error.hpp>
#include <keel/crypto/secret.hpp>

namespace keel::crypto {

/// RFC 3394: `key_data` a multiple of 8 bytes, at least 16. The result is 8 bytes longer.
/// @returns errc::invalid_key_size (the KEK), errc::invalid_input_size.
[[nodiscard]] result<bytes> aes_key_wrap(bytes_view kek, bytes_view key_data);
/// @returns the key data, errc::authentication_failed (wrong KEK or changed bytes), or a size error.
[[nodiscard]] result<secret_bytes> aes_key_unwrap(bytes_view kek, bytes_view wrapped);

/// RFC 5649: any `key_data` of 1 byte or more.
[[nodiscard]] result<bytes> aes_key_wrap_pad(bytes_view kek, bytes_view key_data);
[[nodiscard]] result<secret_bytes> aes_key_unwrap_pad(bytes_view kek, bytes_view wrapped);

}  // namespace keel::crypto
