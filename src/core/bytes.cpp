#include <keel/core/bytes.hpp>

#include <openssl/crypto.h>

#include <array>

namespace keel {
namespace {

constexpr char hex_digits[] = "0123456789abcdef";

constexpr std::int8_t invalid = -1;
constexpr std::int8_t padding = -2;

constexpr std::array<std::int8_t, 256> hex_table() {
  std::array<std::int8_t, 256> table{};
  table.fill(invalid);
  for (int c = '0'; c <= '9'; ++c) table[static_cast<std::size_t>(c)] = static_cast<std::int8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c)
    table[static_cast<std::size_t>(c)] = static_cast<std::int8_t>(c - 'a' + 10);
  for (int c = 'A'; c <= 'F'; ++c)
    table[static_cast<std::size_t>(c)] = static_cast<std::int8_t>(c - 'A' + 10);
  return table;
}
constexpr auto hex_values = hex_table();

constexpr char standard_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr std::array<std::int8_t, 256> base64_table(const char* alphabet) {
  std::array<std::int8_t, 256> table{};
  table.fill(invalid);
  for (int i = 0; i < 64; ++i) {
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<std::int8_t>(i);
  }
  table[static_cast<unsigned char>('=')] = padding;
  return table;
}
constexpr auto standard_values = base64_table(standard_alphabet);
constexpr auto url_values = base64_table(url_alphabet);

std::string encode_base64(bytes_view data, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t group =
        (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) | data[i + 2];
    out.push_back(alphabet[(group >> 18) & 63]);
    out.push_back(alphabet[(group >> 12) & 63]);
    out.push_back(alphabet[(group >> 6) & 63]);
    out.push_back(alphabet[group & 63]);
  }
  const std::size_t rest = data.size() - i;
  if (rest != 0) {
    std::uint32_t group = std::uint32_t{data[i]} << 16;
    if (rest == 2) group |= std::uint32_t{data[i + 1]} << 8;
    out.push_back(alphabet[(group >> 18) & 63]);
    out.push_back(alphabet[(group >> 12) & 63]);
    if (rest == 2) out.push_back(alphabet[(group >> 6) & 63]);
    if (pad) out.append(rest == 1 ? "==" : "=");
  }
  return out;
}

result<bytes> decode_base64(std::string_view text, const std::array<std::int8_t, 256>& values,
                            bool padding_required) {
  // Split off the padding; characters are checked first, so the error names the real problem.
  std::size_t body = text.size();
  while (body > 0 && text[body - 1] == '=') --body;
  const std::size_t pad = text.size() - body;
  const std::size_t tail = body % 4;  // characters in the last, partial group

  bytes out;
  out.reserve(body / 4 * 3 + 2);
  std::uint32_t group = 0;
  for (std::size_t i = 0; i < body; ++i) {
    const std::int8_t v = values[static_cast<unsigned char>(text[i])];
    if (v == padding) return errc::base64_invalid_padding;
    if (v < 0) return errc::base64_invalid_character;
    group = (group << 6) | static_cast<std::uint32_t>(v);
    if ((i & 3) == 3) {
      out.push_back(static_cast<std::uint8_t>(group >> 16));
      out.push_back(static_cast<std::uint8_t>(group >> 8));
      out.push_back(static_cast<std::uint8_t>(group));
      group = 0;
    }
  }
  if (tail == 1) return errc::base64_invalid_length;
  if (pad != 0 || padding_required) {
    const std::size_t expected = tail == 0 ? 0 : 4 - tail;
    if (pad != expected) return errc::base64_invalid_padding;
  }
  if (tail == 2) {
    if ((group & 0xF) != 0) return errc::base64_noncanonical;
    out.push_back(static_cast<std::uint8_t>(group >> 4));
  } else if (tail == 3) {
    if ((group & 0x3) != 0) return errc::base64_noncanonical;
    out.push_back(static_cast<std::uint8_t>(group >> 10));
    out.push_back(static_cast<std::uint8_t>(group >> 2));
  }
  return out;
}

}  // namespace

std::string to_hex(bytes_view data) {
  std::string out(data.size() * 2, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) {
    out[2 * i] = hex_digits[data[i] >> 4];
    out[2 * i + 1] = hex_digits[data[i] & 0xF];
  }
  return out;
}

result<bytes> from_hex(std::string_view text) {
  if (text.size() % 2 != 0) return errc::hex_odd_length;
  bytes out(text.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto high = hex_values[static_cast<unsigned char>(text[2 * i])];
    const auto low = hex_values[static_cast<unsigned char>(text[2 * i + 1])];
    if ((high | low) < 0) return errc::hex_invalid_digit;
    out[i] = static_cast<std::uint8_t>((high << 4) | low);
  }
  return out;
}

std::string to_base64(bytes_view data) {
  return encode_base64(data, standard_alphabet, true);
}
std::string to_base64url(bytes_view data) {
  return encode_base64(data, url_alphabet, false);
}

result<bytes> from_base64(std::string_view text) {
  return decode_base64(text, standard_values, true);
}
result<bytes> from_base64url(std::string_view text) {
  return decode_base64(text, url_values, false);
}

bool constant_time_equal(bytes_view a, bytes_view b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace keel
