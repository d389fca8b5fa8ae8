#include <keel/core/error.hpp>

namespace keel {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::hex_odd_length:
      return "hex input has an odd number of digits; each byte needs exactly two";
    case errc::hex_invalid_digit:
      return "hex input has a character outside 0-9, a-f, A-F; remove spaces, prefixes and separators";
    case errc::base64_invalid_character:
      return "base64 input has a character outside its alphabet; check standard (+/) versus URL-safe (-_) "
             "and strip whitespace";
    case errc::base64_invalid_length:
      return "base64 input has an impossible length; it was probably truncated";
    case errc::base64_invalid_padding:
      return "base64 padding is missing or misplaced; standard base64 needs '=' up to a multiple of 4 "
             "characters, and '=' only at the end";
    case errc::base64_noncanonical:
      return "base64 input has non-zero unused bits in its last character; it was not produced by a "
             "conforming encoder";
    case errc::varint_truncated:
      return "varint is truncated: the input ends before its last byte";
    case errc::varint_overflow:
      return "varint does not fit in 64 bits; the input is corrupt or not a varint";
    case errc::varint_noncanonical:
      return "varint has redundant trailing zero bytes; the input is corrupt or from a non-conforming "
             "encoder";
    case errc::invalid_key_size:
      return "key has the wrong size for this algorithm (Ed25519 keys and seeds are 32 bytes)";
    case errc::invalid_signature_size:
      return "signature has the wrong size for this algorithm (Ed25519 signatures are 64 bytes)";
    case errc::crypto_failure:
      return "OpenSSL reported a failure; see the log for its error queue";
    case errc::invalid_argument:
      return "invalid argument";
    case errc::truncated:
      return "the input ends in the middle of a field; it is truncated or not in this format";
    case errc::trailing_bytes:
      return "the input has bytes after a complete value; it is corrupt or not in this format";
    case errc::length_too_large:
      return "a length in the input is larger than the format allows; the input is corrupt or hostile";
  }
  return "unknown keel.core error";
}

constexpr enum_error_category<errc> category{"keel.core", &describe};

}  // namespace

const error_category& core_category() noexcept {
  return category;
}

}  // namespace keel
