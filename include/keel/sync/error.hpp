#pragma once
/// @file keel/sync/error.hpp
/// @brief `keel::sync::errc` and its category "keel.sync".
#include <keel/core/error.hpp>

namespace keel::sync {

enum class errc {
  too_many_rooms = 1,       ///< rooms_options::max_rooms are open
  not_listening = 2,        ///< across processes, the LISTEN connection did not come up
  invalid_publication = 3,  ///< a changes publication without a name or table, or a name twice
  unknown_table = 4,        ///< a changes publication's table does not exist
  not_synced = 5,           ///< a room_client got no document from the server in time
  access_denied = 6,        ///< the server refused a room_client the room
};

[[nodiscard]] const error_category& sync_category() noexcept;

}  // namespace keel::sync

KEEL_ERROR_ENUM(keel::sync, sync_category);
