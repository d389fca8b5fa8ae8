#include <keel/net/http.hpp>

#include "text.hpp"

#include <algorithm>

namespace keel::net {
namespace {

using detail::hex_value;
using detail::iequals;

std::optional<std::string_view> find(const std::vector<std::pair<std::string, std::string>>& v,
                                     std::string_view name) noexcept {
  for (const auto& [key, value] : v) {
    if (key == name) return value;
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(method m) noexcept {
  switch (m) {
    case method::get:
      return "GET";
    case method::head:
      return "HEAD";
    case method::post:
      return "POST";
    case method::put:
      return "PUT";
    case method::delete_:
      return "DELETE";
    case method::patch:
      return "PATCH";
    case method::options:
      return "OPTIONS";
    case method::other:
      break;
  }
  return "OTHER";
}

std::optional<std::string_view> headers::get(std::string_view name) const noexcept {
  for (const auto& [key, value] : fields_) {
    if (iequals(key, name)) return value;
  }
  return std::nullopt;
}

void headers::set(std::string_view name, std::string_view value) {
  erase(name);
  add(name, value);
}

void headers::add(std::string_view name, std::string_view value) {
  fields_.emplace_back(std::string(name), std::string(value));
}

void headers::erase(std::string_view name) noexcept {
  std::erase_if(fields_, [&](const field& f) { return iequals(f.first, name); });
}

std::optional<std::string_view> request::query_param(std::string_view name) const noexcept {
  return find(query, name);
}

std::optional<std::string_view> request::path_param(std::string_view name) const noexcept {
  return find(path_params, name);
}

std::optional<std::string_view> request::attribute(std::string_view name) const noexcept {
  const auto it = attributes.find(name);
  if (it == attributes.end()) return std::nullopt;
  return it->second;
}

response text_response(std::string body, status s, std::string_view content_type) {
  response r{.status = s, .headers = {}, .body = std::move(body)};
  r.headers.set("Content-Type", content_type);
  return r;
}

std::string escape_html(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return std::nullopt;
    const int hi = hex_value(in[i + 1]);
    const int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

}  // namespace keel::net
