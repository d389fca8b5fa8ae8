#include <keel/dsl/error.hpp>

#include <ostream>
#include <string>

namespace keel::dsl {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::syntax_error:
      return "the query is not valid PRQL here: see the diagnostic's message and position";
    case errc::unterminated_string:
      return "a string has no closing quote";
    case errc::invalid_number:
      return "a number literal is malformed";
    case errc::invalid_date:
      return "a date or time literal is malformed: @2024-01-31, @10:30, @2024-01-31T10:30";
    case errc::nesting_too_deep:
      return "brackets are nested too deeply (keel::dsl::max_nesting)";
    case errc::unsupported_construct:
      return "the query uses what keel refuses for safety: s-strings (raw SQL), loop, read_* or function "
             "definitions";
    case errc::unknown_table:
      return "the query names a relation the catalog does not have: check the name, or qualify it "
             "(schema.table)";
    case errc::unknown_column:
      return "the query names a column the relation in scope does not have";
    case errc::ambiguous_column:
      return "several relations in scope have a column of this name: qualify it with the relation's alias";
    case errc::table_not_granted:
      return "the session's role has no grant on this table: add one to the catalog, or use another role";
    case errc::column_not_granted:
      return "the session's role may not see this column: add it to a grant, or leave it out of the query";
    case errc::aggregate_not_granted:
      return "the role's grant on a table in the query does not allow aggregates or window functions";
    case errc::type_error:
      return "an operator or function is applied to values of a type it does not take";
    case errc::unknown_function:
      return "the query calls a function the language does not have";
    case errc::invalid_arguments:
      return "a transform or function has the wrong number or kind of arguments";
    case errc::invalid_relation:
      return "a relation was expected here";
    case errc::missing_argument:
      return "a $1/$name parameter of the query was given no value";
    case errc::unknown_session_attribute:
      return "a session attribute is not declared in the catalog, or the session does not give it";
    case errc::unknown_role:
      return "the session's role is not in the catalog";
  }
  return "unknown keel.dsl error";
}

constexpr enum_error_category<errc> category{"keel.dsl", &describe};

}  // namespace

const error_category& dsl_category() noexcept {
  return category;
}

std::string_view name_of(errc code) noexcept {
  switch (code) {
    case errc::syntax_error:
      return "syntax_error";
    case errc::unterminated_string:
      return "unterminated_string";
    case errc::invalid_number:
      return "invalid_number";
    case errc::invalid_date:
      return "invalid_date";
    case errc::nesting_too_deep:
      return "nesting_too_deep";
    case errc::unsupported_construct:
      return "unsupported_construct";
    case errc::unknown_table:
      return "unknown_table";
    case errc::unknown_column:
      return "unknown_column";
    case errc::ambiguous_column:
      return "ambiguous_column";
    case errc::table_not_granted:
      return "table_not_granted";
    case errc::column_not_granted:
      return "column_not_granted";
    case errc::aggregate_not_granted:
      return "aggregate_not_granted";
    case errc::type_error:
      return "type_error";
    case errc::unknown_function:
      return "unknown_function";
    case errc::invalid_arguments:
      return "invalid_arguments";
    case errc::invalid_relation:
      return "invalid_relation";
    case errc::missing_argument:
      return "missing_argument";
    case errc::unknown_session_attribute:
      return "unknown_session_attribute";
    case errc::unknown_role:
      return "unknown_role";
  }
  return "error";
}

std::ostream& operator<<(std::ostream& out, const diagnostic& d) {
  return out << d.line << ':' << d.column << ": " << d.message;
}

diagnostic diagnostic::at(std::string_view source, errc code, std::string message, std::uint32_t begin,
                          std::uint32_t end) {
  diagnostic d;
  d.code = code;
  d.message = std::move(message);
  d.begin = begin;
  d.end = end;
  for (std::uint32_t i = 0; i < begin && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++d.line;
      d.column = 1;
    } else {
      ++d.column;
    }
  }
  return d;
}

std::string diagnostic::render(std::string_view source) const {
  std::string out = "Error at " + std::to_string(line) + ":" + std::to_string(column) + ": " + message + "\n";
  std::size_t line_begin = begin <= source.size() ? begin : source.size();
  while (line_begin > 0 && source[line_begin - 1] != '\n') --line_begin;
  std::size_t line_end = line_begin;
  while (line_end < source.size() && source[line_end] != '\n') ++line_end;
  const std::string number = std::to_string(line);
  out += "  " + number + " | " + std::string(source.substr(line_begin, line_end - line_begin)) + "\n";
  out += "  " + std::string(number.size(), ' ') + " | " + std::string(column - 1, ' ');
  const std::size_t width = end > begin ? std::min<std::size_t>(end, line_end) - begin : 1;
  out += std::string(std::max<std::size_t>(width, 1), '^') + "\n";
  return out;
}

}  // namespace keel::dsl
