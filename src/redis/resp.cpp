#include <keel/redis/resp.hpp>

#include <charconv>
#include <system_error>

namespace keel::redis {

namespace {

enum class line_status : std::uint8_t { found, incomplete, malformed };

// The line at `pos` up to CRLF. A bare CR or LF inside a header line is malformed.
line_status read_line(std::string_view data, std::size_t pos, std::string_view& line, std::size_t& next) {
  for (std::size_t i = pos; i < data.size(); ++i) {
    if (data[i] == '\r') {
      if (i + 1 == data.size()) return line_status::incomplete;
      if (data[i + 1] != '\n') return line_status::malformed;
      line = data.substr(pos, i - pos);
      next = i + 2;
      return line_status::found;
    }
    if (data[i] == '\n') return line_status::malformed;
  }
  return line_status::incomplete;
}

bool parse_integer(std::string_view text, std::int64_t& out) {
  if (text.empty() || (text.size() > 1 && text[0] == '+')) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

resp_parser::status parse_at(std::string_view data, std::size_t pos, std::size_t& next, resp_value& out,
                             int depth) {
  using status = resp_parser::status;
  if (depth > resp_parser::max_depth) return status::malformed;
  if (pos >= data.size()) return status::incomplete;
  const char type = data[pos];
  std::string_view line;
  std::size_t after = 0;
  switch (const auto found = read_line(data, pos + 1, line, after); found) {
    case line_status::incomplete:
      return status::incomplete;
    case line_status::malformed:
      return status::malformed;
    case line_status::found:
      break;
  }
  switch (type) {
    case '+':
      out = {.type = resp_value::kind::simple_string, .text = std::string(line)};
      next = after;
      return status::complete;
    case '-':
      out = {.type = resp_value::kind::error, .text = std::string(line)};
      next = after;
      return status::complete;
    case ':': {
      std::int64_t v = 0;
      if (!parse_integer(line, v)) return status::malformed;
      out = {.type = resp_value::kind::integer, .integer = v};
      next = after;
      return status::complete;
    }
    case '$': {
      std::int64_t length = 0;
      if (!parse_integer(line, length) || length < -1 ||
          length > static_cast<std::int64_t>(resp_parser::max_bulk_bytes)) {
        return status::malformed;
      }
      if (length == -1) {
        out = {.type = resp_value::kind::null};
        next = after;
        return status::complete;
      }
      const auto size = static_cast<std::size_t>(length);
      if (data.size() < after + size + 2) return status::incomplete;
      if (data[after + size] != '\r' || data[after + size + 1] != '\n') return status::malformed;
      out = {.type = resp_value::kind::bulk_string, .text = std::string(data.substr(after, size))};
      next = after + size + 2;
      return status::complete;
    }
    case '*': {
      std::int64_t count = 0;
      if (!parse_integer(line, count) || count < -1 ||
          count > static_cast<std::int64_t>(resp_parser::max_array_elements)) {
        return status::malformed;
      }
      if (count == -1) {
        out = {.type = resp_value::kind::null};
        next = after;
        return status::complete;
      }
      resp_value array{.type = resp_value::kind::array};
      std::size_t at = after;
      for (std::int64_t i = 0; i < count; ++i) {
        resp_value element;
        if (const auto s = parse_at(data, at, at, element, depth + 1); s != status::complete) return s;
        array.elements.push_back(std::move(element));
      }
      out = std::move(array);
      next = at;
      return status::complete;
    }
    default:
      return status::malformed;
  }
}

}  // namespace

resp_parser::status resp_parser::parse(std::string_view data, std::size_t& consumed, resp_value& out) {
  std::size_t next = 0;
  const status s = parse_at(data, 0, next, out, 0);
  if (s == status::complete) consumed = next;
  return s;
}

void append_array_header(std::string& out, std::size_t count) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, count);
  out += '*';
  out.append(digits, static_cast<std::size_t>(end - digits));
  out += "\r\n";
}

void append_bulk(std::string& out, std::string_view text) {
  char length[24];
  const auto [end, ec] = std::to_chars(length, length + sizeof length, text.size());
  out += '$';
  out.append(length, static_cast<std::size_t>(end - length));
  out += "\r\n";
  out += text;
  out += "\r\n";
}

void append_bulk(std::string& out, std::int64_t number) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, number);
  append_bulk(out, std::string_view(digits, static_cast<std::size_t>(end - digits)));
}

void append_command(std::string& out, std::span<const std::string_view> args) {
  append_array_header(out, args.size());
  for (const auto a : args) append_bulk(out, a);
}

}  // namespace keel::redis
