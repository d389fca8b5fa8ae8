// The PRQL parser: a lexer that keeps new lines (they separate pipeline stages outside {} and
// []), then recursive descent with precedence climbing for operators. Every node records its
// span; every error its place. Depth is bounded (max_nesting) so hostile input cannot exhaust
// the stack.
#include <keel/dsl/parser.hpp>

#include <array>
#include <charconv>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace keel::dsl {
namespace {

enum class tok : std::uint8_t {
  end,
  newline,
  ident,
  integer,
  decimal,
  string,   // text: the value
  fstring,  // text: the raw contents between the quotes
  param,    // text: after $
  session,  // text: after @
  date,     // text: after @ (starts with a digit)
  op,       // text: the operator or punctuation
};

struct token {
  tok type = tok::end;
  std::string text;
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
};

bool ident_start(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool ident_char(char c) noexcept {
  return ident_start(c) || (c >= '0' && c <= '9');
}
bool digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

diagnostic make_error(std::string_view source, errc code, std::string message, std::uint32_t begin,
                      std::uint32_t end) {
  return diagnostic::at(source, code, std::move(message), begin, end);
}

class lexer {
 public:
  explicit lexer(std::string_view source) : s_(source) {}

  parse_result<std::vector<token>> run() {
    std::vector<token> out;
    while (true) {
      skip_blanks();
      if (at_ >= s_.size()) break;
      const char c = s_[at_];
      const auto begin = static_cast<std::uint32_t>(at_);
      if (c == '\n') {
        ++at_;
        // A line that starts with a backslash continues the one before.
        std::size_t look = at_;
        while (look < s_.size() && (s_[look] == ' ' || s_[look] == '\t' || s_[look] == '\r')) ++look;
        if (look < s_.size() && s_[look] == '\\') {
          at_ = look + 1;
          continue;
        }
        if (out.empty() || out.back().type == tok::newline) continue;
        out.push_back({tok::newline, "", begin, begin + 1});
        continue;
      }
      if (c == '#') {
        while (at_ < s_.size() && s_[at_] != '\n') ++at_;
        continue;
      }
      if (c == '-' && at_ + 1 < s_.size() && s_[at_ + 1] == '>') {
        return make_error(
            s_, errc::unsupported_construct,
            "function definitions (x -> ...) are not accepted: keel compiles no user-defined functions",
            begin, begin + 2);
      }
      if ((c == 'f' || c == 's' || c == 'r') && at_ + 1 < s_.size() &&
          (s_[at_ + 1] == '"' || s_[at_ + 1] == '\'')) {
        if (c == 's') {
          return make_error(s_, errc::unsupported_construct,
                            "s-strings (raw SQL) are not accepted: SQL never comes from the query text",
                            begin, begin + 2);
        }
        ++at_;
        auto text = quoted(c == 'r' ? quoting::raw : quoting::kept);
        if (!text) return text.error();
        out.push_back({c == 'f' ? tok::fstring : tok::string, std::move(*text), begin, position()});
        continue;
      }
      if (ident_start(c)) {
        while (at_ < s_.size() && ident_char(s_[at_])) ++at_;
        out.push_back({tok::ident, std::string(s_.substr(begin, at_ - begin)), begin, position()});
        continue;
      }
      if (digit(c)) {
        auto number = read_number();
        if (!number) return number.error();
        out.push_back(std::move(*number));
        continue;
      }
      if (c == '"' || c == '\'') {
        auto text = quoted(quoting::escapes);
        if (!text) return text.error();
        out.push_back({tok::string, std::move(*text), begin, position()});
        continue;
      }
      if (c == '$') {
        ++at_;
        const auto name_begin = at_;
        while (at_ < s_.size() && ident_char(s_[at_])) ++at_;
        if (at_ == name_begin) {
          return make_error(s_, errc::syntax_error, "a parameter is $ and a number or name: $1, $name", begin,
                            position());
        }
        out.push_back({tok::param, std::string(s_.substr(name_begin, at_ - name_begin)), begin, position()});
        continue;
      }
      if (c == '@') {
        ++at_;
        const auto name_begin = at_;
        if (at_ < s_.size() && digit(s_[at_])) {
          // A '.' is a fraction of a second; ".." ends the literal (a range: @2022-01-01..@2022-06-30).
          while (at_ < s_.size() &&
                 (ident_char(s_[at_]) || s_[at_] == '-' || s_[at_] == ':' ||
                  (s_[at_] == '.' && (at_ + 1 >= s_.size() || s_[at_ + 1] != '.')) || s_[at_] == '+'))
            ++at_;
          out.push_back({tok::date, std::string(s_.substr(name_begin, at_ - name_begin)), begin, position()});
          continue;
        }
        while (at_ < s_.size() && ident_char(s_[at_])) ++at_;
        if (at_ == name_begin) {
          return make_error(s_, errc::syntax_error,
                            "@ starts a session attribute (@tenant) or a date (@2024-01-31)", begin,
                            position());
        }
        out.push_back(
            {tok::session, std::string(s_.substr(name_begin, at_ - name_begin)), begin, position()});
        continue;
      }
      // Operators and punctuation, longest first.
      static constexpr std::array<std::string_view, 31> operators = {
          "**", "//", "..", "==", "!=", "<=", ">=", "~=", "??", "&&", "||", "=>", "|", ",", "(", ")",
          "{",  "}",  "[",  "]",  ".",  ":",  "=",  "!",  "<",  ">",  "+",  "-",  "*", "/", "%"};
      bool matched = false;
      for (const std::string_view o : operators) {
        if (s_.substr(at_).starts_with(o)) {
          at_ += o.size();
          out.push_back({tok::op, std::string(o), begin, position()});
          matched = true;
          break;
        }
      }
      if (!matched) {
        return make_error(s_, errc::syntax_error, std::string("unexpected character '") + c + "'", begin,
                          begin + 1);
      }
    }
    out.push_back({tok::end, "", position(), position()});
    return out;
  }

 private:
  enum class quoting : std::uint8_t { escapes, kept, raw };

  [[nodiscard]] std::uint32_t position() const noexcept { return static_cast<std::uint32_t>(at_); }

  void skip_blanks() {
    while (at_ < s_.size() && (s_[at_] == ' ' || s_[at_] == '\t' || s_[at_] == '\r')) ++at_;
  }

  parse_result<token> read_number() {
    const auto begin = position();
    std::string digits;
    bool is_decimal = false;
    auto take_digits = [&] {
      while (at_ < s_.size() && (digit(s_[at_]) || s_[at_] == '_')) {
        if (s_[at_] != '_') digits += s_[at_];
        ++at_;
      }
    };
    take_digits();
    // A dot followed by a digit is a fraction; "1..5" is a range.
    if (at_ + 1 < s_.size() && s_[at_] == '.' && digit(s_[at_ + 1])) {
      is_decimal = true;
      digits += '.';
      ++at_;
      take_digits();
    }
    if (at_ < s_.size() && (s_[at_] == 'e' || s_[at_] == 'E')) {
      is_decimal = true;
      digits += 'e';
      ++at_;
      if (at_ < s_.size() && (s_[at_] == '+' || s_[at_] == '-')) digits += s_[at_++];
      const auto exponent_at = digits.size();
      take_digits();
      if (digits.size() == exponent_at) {
        return make_error(s_, errc::invalid_number, "an exponent needs digits: 1e3, 2.5e-2", begin,
                          position());
      }
    }
    if (at_ < s_.size() && ident_start(s_[at_]))
      return make_error(s_, errc::invalid_number, "a number runs into a name here", begin, position() + 1);
    return token{is_decimal ? tok::decimal : tok::integer, std::move(digits), begin, position()};
  }

  // At the opening quote. Triple quotes allow new lines inside.
  parse_result<std::string> quoted(quoting how) {
    const auto begin = position();
    const char q = s_[at_];
    std::size_t quotes = 1;
    if (s_.substr(at_).starts_with(std::string(3, q))) quotes = 3;
    at_ += quotes;
    const std::string closing(quotes, q);
    std::string out;
    while (at_ < s_.size()) {
      if (s_.substr(at_).starts_with(closing)) {
        at_ += quotes;
        return out;
      }
      const char c = s_[at_];
      if (c == '\n' && quotes == 1) break;
      if (c == '\\' && how != quoting::raw && at_ + 1 < s_.size()) {
        const char e = s_[at_ + 1];
        if (how == quoting::kept) {  // f-strings: escapes resolved after interpolation is split
          out += c;
          out += e;
        } else {
          switch (e) {
            case 'n':
              out += '\n';
              break;
            case 't':
              out += '\t';
              break;
            case 'r':
              out += '\r';
              break;
            case '\\':
            case '\'':
            case '"':
              out += e;
              break;
            default:
              return make_error(s_, errc::syntax_error, std::string("unknown escape \\") + e, position(),
                                position() + 2);
          }
        }
        at_ += 2;
        continue;
      }
      out += c;
      ++at_;
    }
    return make_error(s_, errc::unterminated_string, "this string has no closing quote", begin, position());
  }

  std::string_view s_;
  std::size_t at_ = 0;
};

// Binary operators by precedence, loosest first (the PRQL book's table). `**` binds right.
struct binary_level {
  std::array<std::string_view, 7> ops;
  bool right = false;
};
constexpr std::array<binary_level, 7> levels = {{
    {{"||"}},
    {{"&&"}},
    {{"??"}},
    {{"==", "!=", "<=", ">=", "<", ">", "~="}},
    {{"+", "-"}},
    {{"*", "/", "//", "%"}},
    {{"**"}, true},
}};

class parser {
 public:
  parser(std::string_view source, std::vector<token> tokens) : s_(source), t_(std::move(tokens)) {}

  parse_result<ast::query> run() {
    ast::query q;
    skip_newlines();
    while (peek_ident("let")) {
      const auto begin = t_[i_].begin;
      ++i_;
      if (peek().type != tok::ident) return fail("a name after let: let top = (from ...)");
      ast::binding b;
      b.name = take().text;
      if (!take_op("=")) return fail("= after the name: let " + b.name + " = (from ...)");
      // A let's value is one line (stages by |); a longer one goes in parentheses.
      auto value = parse_pipeline(false, false);
      if (!value) return value.error();
      b.value = std::move(*value);
      b.where = {begin, b.value->where.end};
      q.lets.push_back(std::move(b));
      if (peek().type != tok::newline && peek().type != tok::end)
        return fail("a new line after the let statement");
      skip_newlines();
    }
    if (peek().type == tok::end) return fail("a query: from <table> | ...");
    auto main = parse_pipeline(true, true);
    if (!main) return main.error();
    skip_newlines();
    if (peek().type != tok::end) return fail("the end of the query");
    q.main = std::move(*main);
    return q;
  }

 private:
  [[nodiscard]] const token& peek(std::size_t ahead = 0) const {
    return t_[std::min(i_ + ahead, t_.size() - 1)];
  }
  const token& take() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }
  [[nodiscard]] bool peek_op(std::string_view op, std::size_t ahead = 0) const {
    return peek(ahead).type == tok::op && peek(ahead).text == op;
  }
  [[nodiscard]] bool peek_ident(std::string_view name) const {
    return peek().type == tok::ident && peek().text == name;
  }
  bool take_op(std::string_view op) {
    if (!peek_op(op)) return false;
    ++i_;
    return true;
  }
  void skip_newlines() {
    while (peek().type == tok::newline) ++i_;
  }
  // Inside {} and [] new lines are blanks.
  void skip_blank_lines() {
    if (brackets_ > 0) skip_newlines();
  }

  [[nodiscard]] diagnostic fail_at(const token& at, std::string_view expected,
                                   errc code = errc::syntax_error) const {
    // Built by appending: GCC 12 at -O3 warns falsely (-Wrestrict) on operator+ chains.
    std::string message = "expected ";
    message.append(expected).append(", found ");
    if (at.type == tok::end) {
      message.append("the end of the query");
    } else if (at.type == tok::newline) {
      message.append("a new line");
    } else {
      message.append("'").append(s_.substr(at.begin, at.end - at.begin)).append("'");
    }
    return make_error(s_, code, std::move(message), at.begin, std::max(at.end, at.begin));
  }
  [[nodiscard]] diagnostic fail(std::string_view expected) const { return fail_at(peek(), expected); }

  struct depth_guard {
    int& depth;
    explicit depth_guard(int& d) : depth(d) { ++depth; }
    depth_guard(const depth_guard&) = delete;
    depth_guard& operator=(const depth_guard&) = delete;
    ~depth_guard() { --depth; }
  };

  static ast::node_ptr make(ast::kind k, std::uint32_t begin, std::uint32_t end) {
    auto n = std::make_unique<ast::node>();
    n->kind = k;
    n->where = {begin, end};
    return n;
  }

  // Stages separated by | (and by new lines when `lines_separate`), until ) or the end.
  parse_result<ast::node_ptr> parse_pipeline(bool top_level, bool lines_separate) {
    const depth_guard guard(depth_);
    if (depth_ > max_nesting) return fail_at(peek(), "less nesting", errc::nesting_too_deep);
    auto pipe = make(ast::kind::pipeline, peek().begin, peek().begin);
    while (true) {
      auto stage = parse_stage();
      if (!stage) return stage.error();
      pipe->where.end = (*stage)->where.end;
      pipe->items.push_back(std::move(*stage));
      if (take_op("|")) {
        skip_newlines();
        continue;
      }
      if (peek().type == tok::newline) {
        // A new line separates stages, unless what follows closes the pipeline; a line that
        // starts with | continues it.
        std::size_t ahead = 0;
        while (peek(ahead).type == tok::newline) ++ahead;
        const auto& next = peek(ahead);
        if (next.type == tok::op && next.text == "|") {
          i_ += ahead + 1;
          skip_newlines();
          continue;
        }
        if (!lines_separate) break;
        if (next.type == tok::end || (next.type == tok::op && next.text == ")")) {
          i_ += ahead;
          break;
        }
        if (top_level && next.type == tok::ident && next.text == "let") break;
        i_ += ahead;
        continue;
      }
      break;
    }
    // `(from a | take 1)` alone is that pipeline, not a pipeline holding it.
    if (pipe->items.size() == 1 && pipe->items[0]->kind == ast::kind::pipeline)
      return std::move(pipe->items[0]);
    return pipe;
  }

  // A function call by juxtaposition (`take 10`, `join side:left b (==id)`), or an expression.
  parse_result<ast::node_ptr> parse_stage() {
    if (peek().type == tok::ident && !is_keyword(peek().text)) {
      std::size_t after = 1;  // past a dotted name: text.upper
      while (peek_op(".", after) && peek(after + 1).type == tok::ident) after += 2;
      if (starts_argument(after)) return parse_call();
    }
    return parse_expression();
  }

  static bool is_keyword(std::string_view name) {
    return name == "case" || name == "true" || name == "false" || name == "null" || name == "let";
  }

  // Whether the token `ahead` can begin a call's argument (so the name before it is a call). A
  // minus, bang or == begins one only when written against what follows and apart from what
  // precedes, as in `sort -salary` and `join b ==id`; `a - b`, `a-b` and `a == b` are binary.
  [[nodiscard]] bool starts_argument(std::size_t ahead) const {
    const auto& t = peek(ahead);
    if (t.type == tok::op && (t.text == "-" || t.text == "!" || t.text == "==")) {
      const auto& before = peek(ahead - (ahead > 0 ? 1 : 0));
      const auto& after = peek(ahead + 1);
      const bool spaced_before = ahead == 0 ? (i_ > 0 && t_[i_ - 1].end < t.begin) : before.end < t.begin;
      return spaced_before && after.begin == t.end && after.type != tok::newline && after.type != tok::end;
    }
    switch (t.type) {
      case tok::ident:
      case tok::integer:
      case tok::decimal:
      case tok::string:
      case tok::fstring:
      case tok::param:
      case tok::session:
      case tok::date:
        return true;
      case tok::op:
        return t.text == "(" || t.text == "{" || t.text == "[" || t.text == "..";
      default:
        return false;
    }
  }

  // name(.name)* then arguments: named (name:value), assigned (name = value), or positional.
  parse_result<ast::node_ptr> parse_call() {
    const auto begin = peek().begin;
    auto call = make(ast::kind::call, begin, begin);
    call->path.push_back(take().text);
    while (peek_op(".") && peek(1).type == tok::ident) {
      ++i_;
      call->path.push_back(take().text);
    }
    if (call->path.size() == 1 && (call->path[0] == "loop" || call->path[0].starts_with("read_"))) {
      return make_error(s_, errc::unsupported_construct,
                        "'" + call->path[0] + "' is not accepted: it reads outside the catalog or loops",
                        begin, peek().begin);
    }
    call->where.end = t_[i_ - 1].end;
    while (starts_argument(0)) {
      if (peek().type == tok::ident && peek_op(":", 1)) {
        ast::named_arg arg;
        const auto arg_begin = peek().begin;
        arg.name = take().text;
        ++i_;  // ':'
        auto value = parse_expression();
        if (!value) return value.error();
        arg.where = {arg_begin, (*value)->where.end};
        arg.value = std::move(*value);
        call->where.end = arg.where.end;
        call->named.push_back(std::move(arg));
        continue;
      }
      std::optional<std::string> alias;
      if (peek().type == tok::ident && peek_op("=", 1)) {
        alias = take().text;
        ++i_;  // '='
      }
      auto value = parse_expression();
      if (!value) return value.error();
      call->where.end = (*value)->where.end;
      call->items.push_back(std::move(*value));
      call->aliases.push_back(std::move(alias));
    }
    return call;
  }

  parse_result<ast::node_ptr> parse_expression() { return parse_binary(0); }

  parse_result<ast::node_ptr> parse_binary(std::size_t level) {
    if (level == levels.size()) return parse_range();
    auto left = parse_binary(level + 1);
    if (!left) return left.error();
    while (true) {
      std::string_view found;
      if (peek().type == tok::op) {
        for (const auto op : levels[level].ops) {
          if (!op.empty() && peek().text == op) found = op;
        }
      }
      if (found.empty()) return left;
      ++i_;
      skip_blank_lines();
      auto right = levels[level].right ? parse_binary(level) : parse_binary(level + 1);
      if (!right) return right.error();
      auto node = make(ast::kind::binary, (*left)->where.begin, (*right)->where.end);
      node->text = std::string(found);
      node->items.push_back(std::move(*left));
      node->items.push_back(std::move(*right));
      left = std::move(node);
    }
  }

  // a..b, ..b, a.. — tighter than arithmetic, looser than unary.
  parse_result<ast::node_ptr> parse_range() {
    const auto begin = peek().begin;
    ast::node_ptr start;
    if (!peek_op("..")) {
      auto first = parse_unary();
      if (!first) return first.error();
      if (!peek_op("..")) return first;
      start = std::move(*first);
    }
    const auto dots_end = peek().end;
    ++i_;  // '..'
    ast::node_ptr finish;
    if (starts_operand()) {
      auto second = parse_unary();
      if (!second) return second.error();
      finish = std::move(*second);
    }
    auto range = make(ast::kind::range, begin, finish ? finish->where.end : dots_end);
    range->items.push_back(std::move(start));
    range->items.push_back(std::move(finish));
    return range;
  }

  [[nodiscard]] bool starts_operand() const {
    const auto& t = peek();
    if (t.type == tok::op)
      return t.text == "(" || t.text == "{" || t.text == "[" || t.text == "-" || t.text == "+";
    return t.type != tok::end && t.type != tok::newline;
  }

  parse_result<ast::node_ptr> parse_unary() {
    if (peek().type == tok::op &&
        (peek().text == "-" || peek().text == "+" || peek().text == "!" || peek().text == "==")) {
      const auto begin = peek().begin;
      std::string op = take().text;
      const depth_guard guard(depth_);
      if (depth_ > max_nesting) return fail_at(peek(), "less nesting", errc::nesting_too_deep);
      auto operand = parse_unary();
      if (!operand) return operand.error();
      auto node = make(ast::kind::unary, begin, (*operand)->where.end);
      node->text = std::move(op);
      node->items.push_back(std::move(*operand));
      return node;
    }
    return parse_term();
  }

  parse_result<ast::node_ptr> parse_term() {
    const token& t = peek();
    switch (t.type) {
      case tok::integer:
      case tok::decimal: {
        auto n = make(t.type == tok::integer ? ast::kind::integer : ast::kind::decimal, t.begin, t.end);
        n->text = t.text;
        ++i_;
        return n;
      }
      case tok::string: {
        auto n = make(ast::kind::string, t.begin, t.end);
        n->text = t.text;
        ++i_;
        return n;
      }
      case tok::fstring:
        return parse_fstring();
      case tok::param:
      case tok::session: {
        auto n = make(t.type == tok::param ? ast::kind::param : ast::kind::session, t.begin, t.end);
        n->text = t.text;
        ++i_;
        return n;
      }
      case tok::date:
        return parse_date();
      case tok::ident:
        return parse_name();
      case tok::op:
        if (t.text == "(") return parse_parenthesised();
        if (t.text == "{") return parse_bracketed(ast::kind::tuple, "}");
        if (t.text == "[") return parse_bracketed(ast::kind::array, "]");
        break;
      default:
        break;
    }
    return fail("a value, a name, or ( { [");
  }

  parse_result<ast::node_ptr> parse_name() {
    const token& t = peek();
    if (t.text == "true" || t.text == "false") {
      auto n = make(ast::kind::boolean, t.begin, t.end);
      n->text = t.text;
      ++i_;
      return n;
    }
    if (t.text == "null") {
      ++i_;
      return make(ast::kind::null, t.begin, t.end);
    }
    if (t.text == "case") return parse_case();
    auto n = make(ast::kind::ident, t.begin, t.end);
    n->path.push_back(take().text);
    while (peek_op(".") && (peek(1).type == tok::ident || peek_op("*", 1))) {
      ++i_;
      n->where.end = peek().end;
      n->path.push_back(take().text);
    }
    return n;
  }

  parse_result<ast::node_ptr> parse_case() {
    const auto begin = take().begin;  // 'case'
    if (!peek_op("[")) return fail(R"([ after case: case [x > 1 => "big", true => "small"])");
    ++i_;
    const depth_guard guard(depth_);
    if (depth_ > max_nesting) return fail_at(peek(), "less nesting", errc::nesting_too_deep);
    ++brackets_;
    auto n = make(ast::kind::case_, begin, begin);
    skip_blank_lines();
    while (!peek_op("]")) {
      auto condition = parse_expression();
      if (!condition) return condition.error();
      skip_blank_lines();
      if (!take_op("=>")) return fail("=> between a condition and its value");
      skip_blank_lines();
      auto value = parse_expression();
      if (!value) return value.error();
      n->items.push_back(std::move(*condition));
      n->items.push_back(std::move(*value));
      skip_blank_lines();
      if (!take_op(",")) break;
      skip_blank_lines();
    }
    --brackets_;
    if (!peek_op("]")) return fail("] or , in case [...]");
    n->where.end = take().end;
    return n;
  }

  // ( pipeline ): new lines inside separate stages, as at the top.
  parse_result<ast::node_ptr> parse_parenthesised() {
    const auto begin = take().begin;
    const int saved_brackets = brackets_;
    brackets_ = 0;
    skip_newlines();
    auto inner = parse_pipeline(false, true);
    brackets_ = saved_brackets;
    if (!inner) return inner.error();
    skip_newlines();
    if (!peek_op(")")) return fail(") to close the ( opened before");
    const auto end = take().end;
    // One stage that is an expression: just the expression (grouping).
    if ((*inner)->items.size() == 1 && (*inner)->items[0]->kind != ast::kind::call) {
      auto only = std::move((*inner)->items[0]);
      return only;
    }
    (*inner)->where = {begin, end};
    return inner;
  }

  // { fields } or [ elements ]: each an expression, or a call, maybe named (name = ...).
  parse_result<ast::node_ptr> parse_bracketed(ast::kind k, std::string_view closing) {
    const auto begin = take().begin;
    const depth_guard guard(depth_);
    if (depth_ > max_nesting) return fail_at(peek(), "less nesting", errc::nesting_too_deep);
    ++brackets_;
    auto n = make(k, begin, begin);
    skip_blank_lines();
    while (!peek_op(closing)) {
      std::optional<std::string> alias;
      if (k == ast::kind::tuple && peek().type == tok::ident && peek_op("=", 1)) {
        alias = take().text;
        ++i_;
      }
      auto value = parse_stage();
      if (!value) return value.error();
      n->items.push_back(std::move(*value));
      n->aliases.push_back(std::move(alias));
      skip_blank_lines();
      if (!take_op(",")) break;
      skip_blank_lines();
    }
    --brackets_;
    if (!peek_op(closing)) return fail(std::string(closing) + " or ,");
    n->where.end = take().end;
    return n;
  }

  // f"Hello {name}!": literal parts and interpolated expressions, each parsed on its own.
  parse_result<ast::node_ptr> parse_fstring() {
    if (depth_ > max_nesting) return fail_at(peek(), "less nesting", errc::nesting_too_deep);
    const token t = take();
    auto n = make(ast::kind::fstring, t.begin, t.end);
    const std::string& raw = t.text;
    const std::uint32_t content_begin = t.begin + 2;  // after f and the quote
    std::string literal;
    auto flush = [&] {
      if (literal.empty()) return;
      auto part = make(ast::kind::string, t.begin, t.end);
      part->text = std::move(literal);
      literal.clear();
      n->items.push_back(std::move(part));
    };
    for (std::size_t k = 0; k < raw.size(); ++k) {
      const char c = raw[k];
      if (c == '\\' && k + 1 < raw.size()) {
        const char e = raw[++k];
        literal += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        continue;
      }
      if (c == '{' && k + 1 < raw.size() && raw[k + 1] == '{') {
        literal += '{';
        ++k;
        continue;
      }
      if (c == '}' && k + 1 < raw.size() && raw[k + 1] == '}') {
        literal += '}';
        ++k;
        continue;
      }
      if (c == '{') {
        const auto close = raw.find('}', k);
        if (close == std::string::npos) {
          return make_error(s_, errc::syntax_error, "this f-string's { has no }",
                            content_begin + static_cast<std::uint32_t>(k), t.end);
        }
        flush();
        const std::string inner = raw.substr(k + 1, close - k - 1);
        auto tokens = lexer(inner).run();
        if (!tokens) return shifted(tokens.error(), content_begin + static_cast<std::uint32_t>(k + 1));
        parser sub(inner, std::move(*tokens));
        sub.depth_ = depth_ + 1;
        auto value = sub.parse_expression();
        if (!value) return shifted(value.error(), content_begin + static_cast<std::uint32_t>(k + 1));
        if (sub.peek().type != tok::end) {
          return shifted(sub.fail("} to end the interpolation"),
                         content_begin + static_cast<std::uint32_t>(k + 1));
        }
        n->items.push_back(std::move(*value));
        k = close;
        continue;
      }
      literal += c;
    }
    flush();
    return n;
  }

  // An error found in a piece of the text, placed in the whole query.
  [[nodiscard]] diagnostic shifted(const diagnostic& inner, std::uint32_t offset) const {
    return make_error(s_, inner.code, inner.message, inner.begin + offset, inner.end + offset);
  }

  parse_result<ast::node_ptr> parse_date() {
    const token t = take();
    const std::string& v = t.text;
    auto is_date = [](std::string_view d) {
      return d.size() == 10 && digit(d[0]) && digit(d[1]) && digit(d[2]) && digit(d[3]) && d[4] == '-' &&
             digit(d[5]) && digit(d[6]) && d[7] == '-' && digit(d[8]) && digit(d[9]);
    };
    auto is_time = [](std::string_view d) {
      if (d.size() < 5 || !digit(d[0]) || !digit(d[1]) || d[2] != ':' || !digit(d[3]) || !digit(d[4]))
        return false;
      for (const char c : d.substr(5)) {
        if (!digit(c) && c != ':' && c != '.' && c != '+' && c != '-' && c != 'Z') return false;
      }
      return true;
    };
    ast::kind k;
    if (is_date(v)) {
      k = ast::kind::date;
    } else if (v.size() > 11 && is_date(std::string_view(v).substr(0, 10)) && v[10] == 'T' &&
               is_time(std::string_view(v).substr(11))) {
      k = ast::kind::timestamp;
    } else if (is_time(v)) {
      k = ast::kind::time;
    } else {
      return make_error(s_, errc::invalid_date,
                        "a date is @2024-01-31, a time @10:30, a timestamp @2024-01-31T10:30", t.begin,
                        t.end);
    }
    auto n = make(k, t.begin, t.end);
    n->text = v;
    return n;
  }

  std::string_view s_;
  std::vector<token> t_;
  std::size_t i_ = 0;
  int depth_ = 0;
  int brackets_ = 0;  // open { or [: new lines are blanks inside them
};

}  // namespace

void throw_exception_from_error(const diagnostic& d, const boost::source_location& /*where*/) {
  throw std::invalid_argument("keel::dsl: " + d.message);
}

parse_result<ast::query> parse(std::string_view text) {
  if (text.size() > std::numeric_limits<std::uint32_t>::max() / 2)
    return make_error(text, errc::syntax_error, "the query is too long", 0, 0);
  auto tokens = lexer(text).run();
  if (!tokens) return tokens.error();
  return parser(text, std::move(*tokens)).run();
}

}  // namespace keel::dsl
