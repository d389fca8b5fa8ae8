#pragma once
/// @file keel/sync/changes.hpp
/// @brief Live table changes over WebSocket: clients subscribe to a publication (a table the
/// application chose, with row filters on columns it allowed) and receive its inserts, updates
/// and deletes in commit order, resuming from their last position after a reconnect without
/// missing or repeating a change.
///
/// Changes are captured by a trigger on each published table into `keel_sync_changes`, in the
/// writer's transaction: a change exists exactly when its transaction commits. Each change is
/// ordered by (the writer's transaction id, a sequence number), and readers read only below the
/// horizon — `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running —
/// so no change can later appear before a position already delivered. (Transactions that
/// overlapped come in the order of their ids, not necessarily the order they committed in;
/// every client sees the same order.) A NOTIFY from the trigger
/// says "look again"; readers also look every `poll_interval`, so a lost notification delays,
/// it never loses.
///
/// The protocol (JSON text messages on `<path>`, one subscription per connection):
///   client: {"subscribe": "<publication>", "filter": {"column": "value"}, "after": "<position>" | null}
///   server: {"subscribed": "<publication>", "position": "<position>"}  (then the changes after it)
///           {"position": "...", "op": "insert" | "update" | "delete", "row": {...}, "old": {...}}
///           {"progress": "<position>"}  (rows were passed that did not match: resume from here)
///           {"resync": "<why>"}, then close 4000: the changes after your position are gone
///           {"error": "<why>"}, then close 1008 (or 1002 for a message that is not JSON)
///
/// @code
/// auto feed = keel::sync::changes::mount(server, {
///     .publications = {{.name = "orders", .table = "orders", .filter_columns = {"customer_id"}}},
///     .authorize = [](std::string_view, const keel::sync::changes_filter& filter,
///                     const keel::net::request& upgrade) {
///       return filter.contains("customer_id") && upgrade.query_param("token") == "...";
///     },
///     .pool = &pool}).value();  // ws://host:8080/changes
/// @endcode
#include <keel/core/result.hpp>
#include <keel/net/server.hpp>
#include <keel/pg/connection.hpp>
#include <keel/pg/pool.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::sync {

/// A table clients may subscribe to, by `name`. Every identifier comes from the application
/// (quoted before it reaches SQL), never from a client.
struct publication {
  /// What clients ask for in "subscribe".
  std::string name;
  /// The table, unquoted (as in the catalog: `orders`, `Order Lines`).
  std::string table;
  /// Its schema; empty: the first of the search_path's that has it.
  std::string schema{};
  /// Columns a client may filter on (equality, all of them ANDed); a filter on another column
  /// is refused.
  std::vector<std::string> filter_columns{};
  /// Columns sent to clients; empty sends the whole row.
  std::vector<std::string> columns{};
};

/// A client's filter: column → value, compared with the row's value in text form (`42`,
/// `true`, `abc`).
using changes_filter = std::map<std::string, std::string, std::less<>>;

/// Decides whether a client may subscribe to `publication` with `filter`, from its upgrade
/// request (a token, a session cookie...). Runs on the server's threads; keep it short.
using changes_authorize_function = std::function<bool(
    std::string_view publication, const changes_filter& filter, const net::request& upgrade)>;

/// How long changes are kept for clients that come back.
struct changes_retention {
  /// The newest changes kept; older ones are pruned.
  std::size_t max_count = 1'000'000;
  /// Changes older than this are pruned.
  std::chrono::seconds max_age = std::chrono::hours(24);
  /// How often the server prunes.
  std::chrono::milliseconds interval = std::chrono::minutes(1);
};

struct changes_options {
  /// The WebSocket route.
  std::string path = "/changes";
  /// What clients may subscribe to; names are unique.
  std::vector<publication> publications{};
  /// Empty: every client may subscribe to every publication with any allowed filter.
  changes_authorize_function authorize{};
  /// Where the changes are (required). One connection is held for LISTEN, one more is used to
  /// read while clients are served.
  pg::pool* pool = nullptr;
  /// Create the change table and the triggers at mount (install_changes()); off when the
  /// application migrates at deploy time.
  bool install = true;
  /// Readers look this often even without a notification.
  std::chrono::milliseconds poll_interval = std::chrono::seconds(1);
  /// Changes read for one client at a time.
  std::size_t batch = 256;
  /// Messages waiting to be written to one client. A client with this many still waiting while
  /// more changes are due is told to resync and closed: it cannot keep up. Keep it below
  /// keel::net's websocket_options::max_queued_messages, so that the resync message fits.
  std::size_t max_queued = 512;
  changes_retention retention{};
};

/// What the server did, for metrics and tests.
struct changes_stats {
  std::size_t subscriptions = 0;    ///< clients subscribed now
  std::uint64_t changes_sent = 0;   ///< change messages queued to clients
  std::uint64_t resyncs = 0;        ///< clients told to resync
  std::uint64_t refused = 0;        ///< bad requests and denied clients (closed)
  std::uint64_t reads = 0;          ///< reads of the change table
  std::uint64_t notifications = 0;  ///< wake-ups by NOTIFY
  std::uint64_t pruned = 0;         ///< changes pruned by retention
};

/// The live changes of one server.
class changes {
 public:
  /// Adds the WebSocket route `options.path` to `server` (before it starts), installs the
  /// capture unless `options.install` is off, and starts the reader and the listener.
  /// @returns errc::invalid_publication or errc::unknown_table when a publication is wrong,
  /// or the Postgres error of installing.
  [[nodiscard]] static result<std::shared_ptr<changes>> mount(net::server& server, changes_options options);
  ~changes();
  changes(const changes&) = delete;
  changes& operator=(const changes&) = delete;

  [[nodiscard]] changes_stats stats() const;
  /// Prunes by `options.retention` now (the server does it every retention.interval).
  /// @returns how many changes were pruned.
  [[nodiscard]] result<std::uint64_t> prune_now();

  struct state;
  explicit changes(std::shared_ptr<state> s) noexcept;

 private:
  std::shared_ptr<state> state_;
};

/// Creates the change table `keel_sync_changes` and its capture function (idempotent,
/// migrations "sync_changes"), and an AFTER INSERT OR UPDATE OR DELETE trigger
/// `keel_sync_capture` on each publication's table (replaced if there). TRUNCATE is not captured.
[[nodiscard]] result<void> install_changes(pg::connection& c, std::span<const publication> publications);

}  // namespace keel::sync
