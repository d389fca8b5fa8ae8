#pragma once
/// @file keel/dsl/ast.hpp
/// @brief The syntax tree the parser makes of a PRQL query: `let` statements and a main
/// pipeline, each a sequence of stages that are expressions. One node type with a kind keeps
/// the tree small to walk; `to_string()` prints it as an S-expression for tests and debugging.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::dsl::ast {

/// Byte offsets into the query text: [begin, end).
struct span {
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
};

enum class kind : std::uint8_t {
  integer,  ///< text: the digits, underscores removed ("1000")
  decimal,  ///< text: as written, underscores removed ("1.5e3")
  string,   ///< text: the value, escapes resolved
  boolean,  ///< text: "true" or "false"
  null,
  date,       ///< text: "2024-01-31" (from @2024-01-31)
  time,       ///< text: "10:30" or "10:30:00.5"
  timestamp,  ///< text: "2024-01-31T10:30"
  ident,      ///< path: {"text", "lower"} for text.lower; {"this"} and {"that"} are idents too
  param,      ///< text: "1" for $1, "name" for $name — a bound parameter, never inlined
  session,    ///< text: "tenant" for @tenant — a session attribute (keel's, not PRQL's)
  unary,      ///< text: the operator ("-", "+", "!", "=="); items: {operand}
  binary,     ///< text: the operator; items: {left, right}
  range,      ///< items: {start or null, end or null} (a missing bound is a null pointer)
  call,       ///< path: the function; items: positional arguments; named: named arguments
  tuple,      ///< items: the fields; aliases: each field's name, if given ("{a = b}")
  array,      ///< items: the elements
  fstring,    ///< items: string literals and interpolated expressions, in order
  // `case` is a keyword, hence `case_`.
  // NOLINTNEXTLINE(readability-identifier-naming)
  case_,     ///< items: condition, value, condition, value, ...
  pipeline,  ///< items: the stages (a parenthesised pipeline, or a relation)
};

struct node;
using node_ptr = std::unique_ptr<node>;

struct named_arg {
  std::string name;
  node_ptr value;
  span where;
};

struct node {
  ast::kind kind = kind::null;
  span where;
  std::string text;
  std::vector<std::string> path;
  std::vector<node_ptr> items;
  std::vector<std::optional<std::string>>
      aliases;  ///< parallel to items, for tuples and calls' "x = expr" arguments
  std::vector<named_arg> named;
};

/// `let name = <relation>`.
struct binding {
  std::string name;
  node_ptr value;
  span where;
};

struct query {
  std::vector<binding> lets;
  node_ptr main;  ///< a pipeline
};

/// An S-expression: (pipeline (call from employees) (call filter (> age 30))).
[[nodiscard]] std::string to_string(const node& n);
[[nodiscard]] std::string to_string(const query& q);

}  // namespace keel::dsl::ast
