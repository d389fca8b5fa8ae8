#pragma once
/// @file keel/dsl/error.hpp
/// @brief `keel::dsl::errc` and its category "keel.dsl", and `diagnostic`: an error with its
/// place in the query text, rendered with a caret excerpt as prqlc does.
#include <keel/core/error.hpp>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>

namespace keel::dsl {

enum class errc {
  syntax_error = 1,           ///< the text is not in the language at this point
  unterminated_string,        ///< a string or f-string without its closing quote
  invalid_number,             ///< a malformed number literal
  invalid_date,               ///< a malformed @date / @time literal
  nesting_too_deep,           ///< parentheses, tuples or arrays nested past the parser's limit
  unsupported_construct,      ///< s-strings, loop, read_* and function definitions are refused
  unknown_table,              ///< a relation the catalog does not have (or an ambiguous unqualified name)
  unknown_column,             ///< a name no column of the relation in scope has
  ambiguous_column,           ///< a name several joined relations have: qualify it (`e.name`)
  table_not_granted,          ///< the role has no grant on the table (or none whose condition holds)
  column_not_granted,         ///< the column exists but the role's grants hide it
  aggregate_not_granted,      ///< an aggregate or window over rows whose grant does not allow aggregates
  type_error,                 ///< an operator or function applied to values of the wrong type
  unknown_function,           ///< a name called as a function that the language does not have
  invalid_arguments,          ///< a transform or function given the wrong number or kind of arguments
  invalid_relation,           ///< a stage where a relation was expected, or a relation-level misuse
  missing_argument,           ///< bind(): a `$1`/`$name` without a value
  unknown_session_attribute,  ///< `@name` that the catalog does not declare, or bind() without it
  unknown_role,               ///< the session's role is not in the catalog
};

/// The enumerator's name ("column_not_granted"), for JSON answers and logs.
[[nodiscard]] std::string_view name_of(errc code) noexcept;

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
  /// A diagnostic at [begin, end) of `source`, its line and column counted.
  [[nodiscard]] static diagnostic at(std::string_view source, errc code, std::string message,
                                     std::uint32_t begin, std::uint32_t end);
};

/// Writes "line:column: message" (for logs and test output; render() adds the excerpt).
std::ostream& operator<<(std::ostream& out, const diagnostic& d);

}  // namespace keel::dsl

KEEL_ERROR_ENUM(keel::dsl, dsl_category);
