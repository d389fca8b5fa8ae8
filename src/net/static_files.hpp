#pragma once
// Internal: the handler behind server::serve_static.
#include <keel/net/router.hpp>
#include <keel/net/server.hpp>

#include <filesystem>

namespace keel::net::detail {

/// Serves files under `root` for the tail parameter "path" of the route.
[[nodiscard]] handler make_static_handler(const std::filesystem::path& root, static_options options);

/// The Content-Type for a file name, by extension; application/octet-stream when unknown.
[[nodiscard]] std::string_view content_type_for(const std::filesystem::path& file) noexcept;

}  // namespace keel::net::detail
