#pragma once
/// @file keel/sync/server.hpp
/// @brief Yjs rooms over keel::net: the y-websocket protocol (sync steps 1 and 2, updates,
/// awareness, auth), so that Yjs editors (npm `yjs` + `y-websocket`, unmodified) collaborate
/// through a keel server, with each room's document kept in Postgres.
///
/// A room is a Yjs document, held as one update (keel::crdt::yjs merges what clients send; no
/// document is built). A client that joins gets what its state vector lacks; an update from a
/// writer reaches every other client of the room, and Postgres before the next one is read; the
/// awareness states (presence, cursors) a socket brought are removed for everyone when it
/// drops. Rooms are loaded on first join — their compacted update plus the updates after it —
/// and dropped from memory when their last client leaves. Several processes can serve one room:
/// they pass updates and awareness to each other through Postgres NOTIFY (across_processes).
///
/// @code
/// keel::net::server server({.port = 8080});
/// auto rooms = keel::sync::rooms::mount(server, {.pool = &pool}).value();  // ws://host:8080/sync/<room>
/// server.run().value();
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/net/server.hpp>
#include <keel/pg/connection.hpp>
#include <keel/pg/pool.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace keel::sync {

/// What a client may do in a room.
enum class access : std::uint8_t {
  denied,      ///< told so (Yjs's permission-denied message), then closed with 1008
  read_only,   ///< receives the document and others' changes; its own updates are dropped and it is told
  read_write,  ///< edits
};

/// Decides a client's access from the room and its upgrade request (a token in a query
/// parameter or header, a session cookie...). Runs on the server's threads; keep it short.
using authorize_function = std::function<access(std::string_view room, const net::request& upgrade)>;

struct rooms_options {
  /// Rooms live at `<path>/<room>` (y-websocket's URL: `new WebsocketProvider(base + path, room, doc)`).
  std::string path = "/sync";
  /// Empty: every client may edit every room.
  authorize_function authorize{};
  /// Where rooms are kept (tables from migrate()); nullptr keeps them in memory only.
  pg::pool* pool = nullptr;
  /// Rooms open at once; a client of one more room is closed with 1013 (try again later).
  std::size_t max_rooms = 10'000;
  /// Clients in one room; one more is closed with 1013.
  std::size_t max_clients_per_room = 1'000;
  /// A room's document, as its merged update; an update that would pass it is refused (1009).
  std::size_t max_document_bytes = std::size_t{64} * 1024 * 1024;
  /// Updates appended to a room's tail before the background compaction merges them into its
  /// document row.
  std::size_t compact_after_updates = 200;
  /// Updates kept apart in memory before they are merged into the room's document.
  std::size_t merge_after_updates = 64;
  /// Several server processes serving the same rooms (needs `pool`): every update and awareness
  /// change a client sends is also published with NOTIFY on `channel`, and what the other
  /// processes publish reaches this one's clients. false saves a NOTIFY per update where one
  /// process serves each room.
  bool across_processes = true;
  /// The NOTIFY channel the processes of one deployment share.
  std::string channel = "keel_sync";
};

/// What the rooms did, for metrics and tests.
struct rooms_stats {
  std::size_t rooms_open = 0;
  std::size_t clients = 0;
  std::uint64_t updates_received = 0;
  std::uint64_t updates_dropped_read_only = 0;
  std::uint64_t messages_refused = 0;  ///< malformed or oversized: the sender was closed
  std::uint64_t compactions = 0;
  std::uint64_t rooms_loaded = 0;         ///< from Postgres
  std::uint64_t append_statements = 0;    ///< INSERTs of updates (a batch is one)
  std::uint64_t published = 0;            ///< updates and awareness changes sent to the other processes
  std::uint64_t received_from_peers = 0;  ///< ... and received from them for a room open here
  std::uint64_t catch_ups = 0;            ///< open rooms reloaded after the NOTIFY connection came back
  std::uint64_t peers_gone = 0;           ///< processes found gone, their clients' awareness removed
};

/// The Yjs rooms of one server.
class rooms {
 public:
  /// Adds the WebSocket route `<options.path>/{room}` to `server` (before it starts).
  /// @returns the rooms, alive as long as the server's handlers hold them.
  [[nodiscard]] static result<std::shared_ptr<rooms>> mount(net::server& server, rooms_options options);
  /// Stops the compaction and listener threads. Posting the listener's stop can only throw on
  /// allocation failure; then the threads could outlive the state, so terminating is the safe outcome.
  ~rooms();  // NOLINT(bugprone-exception-escape)
  rooms(const rooms&) = delete;
  rooms& operator=(const rooms&) = delete;

  [[nodiscard]] rooms_stats stats() const;
  /// A room's document as one Yjs update (loaded from Postgres if it is not open).
  [[nodiscard]] result<bytes> document(std::string_view room);
  /// Compacts every room with a tail now, and waits for it (the background does it by itself).
  [[nodiscard]] result<void> compact_now();

  struct state;
  explicit rooms(std::shared_ptr<state> s) noexcept;

 private:
  std::shared_ptr<state> state_;
};

/// Creates keel's sync tables (idempotent): keel_sync_documents (room, compacted update),
/// keel_sync_updates (room, sequence, update: the tail) and keel_sync_relay (messages too large
/// for a NOTIFY payload, kept a few minutes for the other processes to read).
[[nodiscard]] result<void> migrate(pg::connection& c);

}  // namespace keel::sync
