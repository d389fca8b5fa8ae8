#pragma once
/// @file keel/redis/resp.hpp
/// @brief RESP2, the Redis protocol: one reply value, an incremental strict parser, and the
/// encoders for commands (arrays of bulk strings).
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::redis {

/// One RESP2 value.
struct resp_value {
  enum class kind : std::uint8_t { simple_string, error, integer, bulk_string, null, array };
  kind type = kind::null;
  std::string text{};  ///< simple_string, error, bulk_string
  std::int64_t integer = 0;
  std::vector<resp_value> elements{};

  [[nodiscard]] bool is_error() const noexcept { return type == kind::error; }
  [[nodiscard]] bool is_null() const noexcept { return type == kind::null; }
};

/// An incremental RESP2 reader: strict about the grammar, bounded in sizes and nesting.
class resp_parser {
 public:
  enum class status : std::uint8_t { complete, incomplete, malformed };
  /// Tries to read one value from the front of `data`. On `complete`, `out` is the value and
  /// `consumed` its length in bytes; on `incomplete` more bytes are needed; on `malformed` the
  /// stream cannot be trusted any more (close the connection).
  [[nodiscard]] static status parse(std::string_view data, std::size_t& consumed, resp_value& out);
  /// Bulk strings longer than this are malformed (Redis itself allows 512 MB; keel never needs it).
  static constexpr std::size_t max_bulk_bytes = std::size_t{64} * 1024 * 1024;
  static constexpr std::size_t max_array_elements = 1 << 20;
  static constexpr int max_depth = 8;
};

/// Encodes a command as a RESP array of bulk strings.
void append_command(std::string& out, std::span<const std::string_view> args);
inline void append_command(std::string& out, std::initializer_list<std::string_view> args) {
  append_command(out, std::span<const std::string_view>(args.begin(), args.size()));
}
/// The pieces of append_command, for encoding a command straight into a buffer without
/// building its arguments as strings first: `*<count>`, then `count` bulk strings.
void append_array_header(std::string& out, std::size_t count);
void append_bulk(std::string& out, std::string_view text);
/// A bulk string holding `number` in decimal.
void append_bulk(std::string& out, std::int64_t number);

}  // namespace keel::redis
