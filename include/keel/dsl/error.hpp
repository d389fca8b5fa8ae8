#pragma once
/// @file keel/dsl/error.hpp
/// @brief `keel::dsl::errc` and its category "keel.dsl", and `diagnostic`: an error with its
/// place in the query text, rendered with a caret excerpt as prqlc does.
#include <keel/core/error.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace keel::dsl {

enum class errc {
  syntax_error = 1,       ///< the text is not in the language at this point
  unterminated_string,    ///< a string or f-string without its closing quote
  invalid_number,         ///< a malformed number literal
  invalid_date,           ///< a malformed @date / @time literal
  nesting_too_deep,       ///< parentheses, tuples or arrays nested past the parser's limit
  unsupported_construct,  ///< s-strings, loop, read_* and function definitions are refused
};

/// The category of keel::dsl::errc ("keel.dsl").
[[nodiscard]] const error_category& dsl_category() noexcept;

/// What went wrong and where: byte offsets into the query text and its 1-based line and column.
struct diagnostic {
  errc code = errc::syntax_error;
  std::string message;      ///< says what was expected or found
  std::uint32_t begin = 0;  ///< byte offset of the offending text
  std::uint32_t end = 0;    ///< one past it (begin == end: at a point)
  std::uint32_t line = 1;
  std::uint32_t column = 1;  ///< in bytes from the line's start, 1-based
  /// "Error at 2:8: <message>" then the line and a caret under the span, as prqlc prints.
  [[nodiscard]] std::string render(std::string_view source) const;
};

}  // namespace keel::dsl

KEEL_ERROR_ENUM(keel::dsl, dsl_category);
