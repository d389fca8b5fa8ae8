#include <keel/sync/error.hpp>

namespace keel::sync {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::too_many_rooms:
      return "as many rooms are open as rooms_options::max_rooms allows; try again when one closes, or raise "
             "it";
    case errc::not_listening:
      return "the rooms could not LISTEN for the other processes' updates within 15 s: check that Postgres "
             "is reachable with the pool's conninfo, or set rooms_options::across_processes = false";
    case errc::invalid_publication:
      return "a publication needs a name and a table, and names are unique; check "
             "changes_options::publications";
    case errc::unknown_table:
      return "a publication's table does not exist; create it before mounting the changes, or fix its "
             "table and schema";
    case errc::not_synced:
      return "the room's server did not send its document within client_options::connect_timeout: check "
             "the host, port and path, and that the server is up";
    case errc::access_denied:
      return "the server's authorize hook refused this client the room: check client_options::query (its "
             "token)";
  }
  return "unknown keel.sync error";
}

constexpr enum_error_category<errc> category{"keel.sync", &describe};

}  // namespace

const error_category& sync_category() noexcept {
  return category;
}

}  // namespace keel::sync
