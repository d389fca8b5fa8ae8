// The syntax tree as an S-expression, for tests and for reading what the parser made.
#include <keel/dsl/ast.hpp>

#include <string>

namespace keel::dsl::ast {
namespace {

void quote(std::string& out, const std::string& text) {
  out += '"';
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

void print(std::string& out, const node* n) {
  if (n == nullptr) {
    out += "_";
    return;
  }
  switch (n->kind) {
    case kind::integer:
    case kind::decimal:
      out += n->text;
      return;
    case kind::string:
      quote(out, n->text);
      return;
    case kind::boolean:
      out += n->text;
      return;
    case kind::null:
      out += "null";
      return;
    case kind::date:
    case kind::time:
    case kind::timestamp:
      out += '@' + n->text;
      return;
    case kind::ident: {
      for (std::size_t i = 0; i < n->path.size(); ++i) out += (i > 0 ? "." : "") + n->path[i];
      return;
    }
    case kind::param:
      out += '$' + n->text;
      return;
    case kind::session:
      out += '@' + n->text;
      return;
    default:
      break;
  }
  out += '(';
  switch (n->kind) {
    case kind::unary:
    case kind::binary:
      out += n->text;
      break;
    case kind::range:
      out += "..";
      break;
    case kind::call:
      for (std::size_t i = 0; i < n->path.size(); ++i) out += (i > 0 ? "." : "") + n->path[i];
      break;
    case kind::tuple:
      out += "tuple";
      break;
    case kind::array:
      out += "array";
      break;
    case kind::fstring:
      out += "f";
      break;
    case kind::case_:
      out += "case";
      break;
    case kind::pipeline:
      out += "pipeline";
      break;
    default:
      break;
  }
  for (const auto& arg : n->named) {
    out += ' ' + arg.name + ':';
    print(out, arg.value.get());
  }
  for (std::size_t i = 0; i < n->items.size(); ++i) {
    out += ' ';
    if (i < n->aliases.size() && n->aliases[i]) out += *n->aliases[i] + '=';
    print(out, n->items[i].get());
  }
  out += ')';
}

}  // namespace

std::string to_string(const node& n) {
  std::string out;
  print(out, &n);
  return out;
}

std::string to_string(const query& q) {
  std::string out;
  for (const auto& b : q.lets) {
    out += "(let " + b.name + ' ';
    print(out, b.value.get());
    out += ")\n";
  }
  print(out, q.main.get());
  return out;
}

}  // namespace keel::dsl::ast
