#pragma once
/// @file keel/dsl/parser.hpp
/// @brief PRQL text to a syntax tree (keel/dsl/ast.hpp), with errors that carry their place.
///
/// @code
/// auto parsed = keel::dsl::parse("from employees | filter age > $1 | select {name, age}");
/// if (!parsed) std::cerr << parsed.error().render(text);
/// @endcode
/// The grammar is PRQL's (the PRQL book): stages separated by `|` or new lines, function calls
/// by juxtaposition (`take 10`, `join side:left b (==id)`), tuples `{}`, arrays `[]`, ranges,
/// f-strings, `case`, `let` relations, `$1`/`$name` parameters, and `@attribute` session values.
/// s-strings are refused at parse time: SQL never comes from the query text.
#include <keel/dsl/ast.hpp>
#include <keel/dsl/error.hpp>

#include <boost/system/result.hpp>

#include <string_view>

namespace keel::dsl {

/// How deep brackets may nest: a bound, so that hostile input cannot exhaust the stack.
inline constexpr int max_nesting = 64;

/// For `result<T, diagnostic>::value()` on an error: throws std::invalid_argument with the message.
[[noreturn]] void throw_exception_from_error(const diagnostic& d, const boost::source_location& where);

template <class T>
using parse_result = boost::system::result<T, diagnostic>;

/// Parses a whole query. Never throws for bad input: the first error is returned.
[[nodiscard]] parse_result<ast::query> parse(std::string_view text);

}  // namespace keel::dsl
