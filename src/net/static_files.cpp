#include "static_files.hpp"

#include <keel/net/error.hpp>
#include <keel/net/json.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <system_error>
#include <utility>

namespace keel::net::detail {
namespace {

// Dashboards need only the common web types; anything else is served as bytes.
constexpr std::array<std::pair<std::string_view, std::string_view>, 24> content_types{{
    {".html", "text/html; charset=utf-8"},
    {".htm", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".map", "application/json"},
    {".txt", "text/plain; charset=utf-8"},
    {".csv", "text/csv; charset=utf-8"},
    {".xml", "application/xml"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".jpg", "image/jpeg"},
    {".jpeg", "image/jpeg"},
    {".gif", "image/gif"},
    {".webp", "image/webp"},
    {".ico", "image/x-icon"},
    {".avif", "image/avif"},
    {".woff", "font/woff"},
    {".woff2", "font/woff2"},
    {".ttf", "font/ttf"},
    {".otf", "font/otf"},
    {".wasm", "application/wasm"},
    {".pdf", "application/pdf"},
}};

std::string http_date(std::chrono::system_clock::time_point t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[64];
  const auto n = std::strftime(buffer, sizeof buffer, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return {buffer, n};
}

// True when `inner` is `root` or below it (both canonical).
bool within(const std::filesystem::path& root, const std::filesystem::path& inner) {
  auto r = root.begin();
  auto i = inner.begin();
  for (; r != root.end(); ++r, ++i) {
    if (i == inner.end() || *r != *i) return false;
  }
  return true;
}

}  // namespace

std::string_view content_type_for(const std::filesystem::path& file) noexcept {
  std::string ext = file.extension().string();
  for (auto& c : ext) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  for (const auto& [known, type] : content_types) {
    if (ext == known) return type;
  }
  return "application/octet-stream";
}

handler make_static_handler(const std::filesystem::path& root, static_options options) {
  std::error_code ec;
  auto canonical_root = std::filesystem::weakly_canonical(root, ec);
  if (ec) canonical_root = root;
  return [root = std::move(canonical_root), options = std::move(options)](const request& req) -> response {
    const auto not_found = [] { return error_response(status::not_found, make_error_code(errc::not_found)); };
    const auto rest = req.path_param("path").value_or("");
    std::filesystem::path file = root;
    std::string_view remaining = rest;
    while (!remaining.empty()) {
      const auto slash = remaining.find('/');
      const auto part = remaining.substr(0, slash);
      remaining = slash == std::string_view::npos ? std::string_view{} : remaining.substr(slash + 1);
      if (part.empty() || part == ".") continue;
      // The server refuses '..' before routing; this keeps the handler safe on its own too.
      if (part == ".." || part.find('\0') != std::string_view::npos) {
        return error_response(status::bad_request, make_error_code(errc::invalid_path));
      }
      file /= part;
    }
    std::error_code fs_ec;
    if (std::filesystem::is_directory(file, fs_ec)) file /= options.index;
    // Symlinks that lead outside the root are not followed.
    const auto canonical = std::filesystem::weakly_canonical(file, fs_ec);
    if (fs_ec || !within(root, canonical) || !std::filesystem::is_regular_file(canonical, fs_ec))
      return not_found();
    const auto size = std::filesystem::file_size(canonical, fs_ec);
    if (fs_ec) return not_found();
    const auto modified = std::filesystem::last_write_time(canonical, fs_ec);
    if (fs_ec) return not_found();
    const auto modified_sys = std::chrono::file_clock::to_sys(modified);
    const auto stamp =
        std::chrono::duration_cast<std::chrono::nanoseconds>(modified_sys.time_since_epoch()).count();
    char etag[64];
    const int etag_size =
        std::snprintf(etag, sizeof etag, "\"%llx-%llx\"", static_cast<unsigned long long>(size),
                      static_cast<unsigned long long>(stamp));
    const std::string_view etag_view(etag, static_cast<std::size_t>(etag_size));

    response res;
    res.headers.set("ETag", etag_view);
    res.headers.set("Last-Modified",
                    http_date(std::chrono::time_point_cast<std::chrono::seconds>(modified_sys)));
    if (!options.cache_control.empty()) res.headers.set("Cache-Control", options.cache_control);
    if (const auto match = req.headers.get("If-None-Match"); match && *match == etag_view) {
      res.status = status::not_modified;
      return res;
    }
    std::ifstream in(canonical, std::ios::binary);
    if (!in) return not_found();
    res.body.resize(static_cast<std::size_t>(size));
    in.read(res.body.data(), static_cast<std::streamsize>(size));
    res.body.resize(static_cast<std::size_t>(in.gcount()));  // the file may have shrunk meanwhile
    res.headers.set("Content-Type", content_type_for(canonical));
    res.headers.set("X-Content-Type-Options", "nosniff");
    return res;
  };
}

}  // namespace keel::net::detail
