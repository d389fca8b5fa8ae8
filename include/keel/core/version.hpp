#pragma once
/// @file keel/core/version.hpp
/// @brief keel's version. CMake reads it from here, so this is the one place to bump it.
#include <string_view>

#define KEEL_VERSION_MAJOR 0
#define KEEL_VERSION_MINOR 1
#define KEEL_VERSION_PATCH 0

namespace keel {
inline constexpr std::string_view version = "0.1.0";
}  // namespace keel
