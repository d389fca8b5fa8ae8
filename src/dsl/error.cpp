#include <keel/dsl/error.hpp>

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
  }
  return "unknown keel.dsl error";
}

constexpr enum_error_category<errc> category{"keel.dsl", &describe};

}  // namespace

const error_category& dsl_category() noexcept {
  return category;
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
