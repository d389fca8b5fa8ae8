#pragma once
/// @file keel/crypto/kdf.hpp
/// @brief HKDF (RFC 5869) with SHA-256 or SHA-512, and HMAC with either, through OpenSSL 3.
///
/// @code
/// auto message_key = keel::crypto::hkdf(keel::crypto::hash_algorithm::sha512, data_key.view(),
///                                       message_id, keel::as_bytes("keel envelope v1"), 32).value();
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crypto/error.hpp>
#include <keel/crypto/secret.hpp>

#include <cstddef>
#include <cstdint>

namespace keel::crypto {

enum class hash_algorithm : std::uint8_t { sha256, sha512 };

/// 32 or 64.
[[nodiscard]] std::size_t digest_size(hash_algorithm h) noexcept;

/// HKDF-Extract-then-Expand: `length` bytes from `ikm` with `salt` (empty: a hash length of
/// zeros, as RFC 5869 says) and `info`. @returns errc::output_too_large above 255 hash lengths.
[[nodiscard]] result<secret_bytes> hkdf(hash_algorithm h, bytes_view ikm, bytes_view salt, bytes_view info,
                                        std::size_t length);

/// HKDF's two halves, for deriving several keys from one secret with one extraction:
/// hkdf(h, ikm, salt, info, n) == hkdf_expand(h, hkdf_extract(h, ikm, salt), info, n).
/// @returns the pseudorandom key (a digest long).
[[nodiscard]] result<secret_bytes> hkdf_extract(hash_algorithm h, bytes_view ikm, bytes_view salt);
/// @returns errc::output_too_large, or errc::invalid_key_size for a `prk` shorter than the digest.
[[nodiscard]] result<secret_bytes> hkdf_expand(hash_algorithm h, bytes_view prk, bytes_view info,
                                               std::size_t length);

/// HMAC of `data` under `key` (any length), the whole digest.
[[nodiscard]] result<bytes> hmac(hash_algorithm h, bytes_view key, bytes_view data);
/// Checks `tag` against the HMAC in constant time; `tag` may be the digest's first 16 or more
/// bytes (a truncated tag). @returns errc::authentication_failed, or errc::invalid_tag_size for
/// a tag under 16 bytes or over the digest.
[[nodiscard]] result<void> hmac_verify(hash_algorithm h, bytes_view key, bytes_view data, bytes_view tag);

}  // namespace keel::crypto
