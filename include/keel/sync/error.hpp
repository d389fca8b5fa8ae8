#pragma once
/// @file keel/sync/error.hpp
/// @brief `keel::sync::errc` and its category "keel.sync".
#include <keel/core/error.hpp>

namespace keel::sync {

enum class errc {
  too_many_rooms = 1,       ///< rooms_options::max_rooms are open
  invalid_publication = 2,  ///< a changes publication without a name or table, or a name twice
  unknown_table = 3,        ///< a changes publication's table does not exist
};

[[nodiscard]] const error_category& sync_category() noexcept;

}  // namespace keel::sync

KEEL_ERROR_ENUM(keel::sync, sync_category);
