#pragma once
/// @file keel/events/store.hpp
/// @brief An event store on Postgres: streams with optimistic concurrency, idempotent and
/// atomic multi-stream appends inside the caller's transaction, and a global order (`$all`,
/// categories) that readers follow without ever skipping a committed event and without a global
/// append lock.
///
/// Every call takes a `keel::pg::connection&`. Outside a transaction each call is atomic on its
/// own; inside one (the caller's `BEGIN`), the events exist exactly when that transaction
/// commits, like `keel::jobs::enqueue`.
///
/// @code
/// keel::events::store events;
/// auto placed = events.append(c, "order-42", keel::events::expected_version::no_stream(),
///                             {{.type = "placed", .data = R"({"total": 1250})"}}).value();
/// if (!placed) { /* someone else wrote order-42 first: placed.version is where it is */ }
/// auto page = events.read_all(c, {.after = checkpoint, .category = "order"}).value();
/// @endcode
#include <keel/core/clock.hpp>
#include <keel/events/error.hpp>
#include <keel/events/upcast.hpp>
#include <keel/pg/connection.hpp>
#include <keel/pg/migrations.hpp>

#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::events {

class events_metrics;

/// The schema: tables keel_events and keel_events_streams.
[[nodiscard]] std::span<const pg::migration> migrations() noexcept;
/// Applies the missing migrations (see keel::pg::migrate).
[[nodiscard]] result<pg::migration_report> migrate(pg::connection& c);

inline constexpr std::size_t max_stream_name_bytes = 200;
inline constexpr std::size_t max_event_type_bytes = 200;

/// Checks a stream name: 1 to max_stream_name_bytes bytes, not starting with '$' (reserved for
/// `$all`), without whitespace or control bytes. Streams are named `category-id`
/// (message-db's convention): "order-42" is in category "order"; a name without '-' is its own
/// category.
[[nodiscard]] result<void> validate_stream_name(std::string_view stream) noexcept;
/// Checks a checkpoint, projection, group or member name: 1 to max_stream_name_bytes bytes
/// without control bytes. @returns errc::invalid_checkpoint_name otherwise.
[[nodiscard]] result<void> validate_checkpoint_name(std::string_view name) noexcept;
/// The category of a stream: the part before the first '-'.
[[nodiscard]] std::string_view category_of(std::string_view stream) noexcept;

/// A place in the global order. Events are ordered by the id of the transaction that appended
/// them, then by position (a sequence number drawn at insert). Positions alone are not enough:
/// they are drawn before commit, so transactions commit them out of order, and a reader that
/// trusts them skips events (Marten's lost events). Readers only ever read below the oldest
/// transaction still running, so nothing can later appear behind a cursor. The transaction part
/// is raised to the stream's previous append's when that is higher, so every stream stays in
/// version order within the global order.
struct all_position {
  std::int64_t transaction = 0;  ///< the appending transaction's id (Postgres xid8), or the stream's last
  std::int64_t position = 0;     ///< the event's sequence number, unique across the store

  /// Before every event.
  [[nodiscard]] static constexpr all_position start() noexcept { return {}; }
  /// After every event (for backward reads from the end).
  [[nodiscard]] static constexpr all_position end() noexcept {
    return {std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::max()};
  }
  /// "transaction/position", e.g. "742/1031".
  [[nodiscard]] std::string to_string() const;
  /// Parses to_string()'s form. @returns errc::invalid_position otherwise.
  [[nodiscard]] static result<all_position> parse(std::string_view text);
  // clang-tidy 14 reads the defaulted <=>'s comparison with 0 as a null pointer constant.
  friend constexpr auto operator<=>(const all_position&,
                                    const all_position&) = default;  // NOLINT(modernize-use-nullptr)
};

/// What an append expects of the stream: optimistic concurrency.
struct expected_version {
  enum class kind : std::uint8_t {
    any,            ///< no check
    no_stream,      ///< the stream has no events (never written, or soft-deleted)
    stream_exists,  ///< the stream has events and is not deleted
    exact,          ///< the stream's last version is `version`
  };
  kind expect = kind::any;
  std::int64_t version = -1;

  [[nodiscard]] static constexpr expected_version any() noexcept { return {kind::any, -1}; }
  [[nodiscard]] static constexpr expected_version no_stream() noexcept { return {kind::no_stream, -1}; }
  [[nodiscard]] static constexpr expected_version stream_exists() noexcept {
    return {kind::stream_exists, -1};
  }
  /// The stream's last event has version `v` (versions count from 0; exact(-1) is no_stream()).
  [[nodiscard]] static constexpr expected_version exact(std::int64_t v) noexcept {
    return v == -1 ? no_stream() : expected_version{kind::exact, v};
  }
  friend constexpr bool operator==(const expected_version&, const expected_version&) = default;
};
/// "any", "no_stream", "stream_exists" or the version.
[[nodiscard]] std::string to_string(expected_version e);

/// An event to append. Only `type` is required.
struct new_event {
  /// The event's id; re-sending an event with the same id and content appends nothing and
  /// returns the original versions (idempotent retries). Generated when empty.
  std::optional<pg::uuid> id{};
  std::string type;
  std::string data = "{}";      ///< any JSON document
  std::string metadata = "{}";  ///< a JSON object: correlation and causation ids, free keys
};

/// An event as stored.
struct recorded_event {
  pg::uuid id;
  std::string stream;
  std::string type;
  std::string data;          ///< JSON, as Postgres normalises jsonb (key order, spacing)
  std::string metadata;      ///< a JSON object
  std::int64_t version = 0;  ///< in its stream, from 0
  all_position position;     ///< in the global order
  timestamp recorded_at{};
};

/// How an append ended.
enum class append_status : std::uint8_t {
  appended,                ///< the events were written
  already_appended,        ///< every event id was already stored with the same content: nothing written
  wrong_expected_version,  ///< the stream was not as expected: nothing written
  not_written,             ///< another stream of an atomic multi-stream append conflicted: nothing written
};

/// The outcome of appending to one stream. `if (outcome)` is true unless the expected version
/// did not hold.
struct append_result {
  append_status status = append_status::appended;
  std::string stream;
  /// The stream's last version after the append; for wrong_expected_version, the version it is
  /// at (-1: no events).
  std::int64_t version = -1;
  /// Each event's version and position, in the order given (empty for wrong_expected_version).
  std::vector<std::int64_t> versions;
  std::vector<all_position> positions;
  [[nodiscard]] explicit operator bool() const noexcept {
    return status == append_status::appended || status == append_status::already_appended;
  }
};

/// One stream's part of an atomic multi-stream append.
struct stream_append {
  std::string stream;
  expected_version expected{};
  std::vector<new_event> events;
};

/// The outcome of an atomic multi-stream append: every stream's events were written (or were
/// there already), or none was, and `conflicts` names the streams whose expected version did not
/// hold.
struct multi_append_result {
  std::vector<append_result> streams;  ///< in the order given
  [[nodiscard]] explicit operator bool() const noexcept {
    for (const auto& s : streams) {
      if (!s) return false;
    }
    return true;
  }
};

enum class direction : std::uint8_t { forward, backward };

/// A read of one stream.
struct stream_read {
  /// The first version to read: forward from it, or backward from it (-1: from the end).
  std::int64_t from_version = 0;
  direction dir = direction::forward;
  std::size_t max_count = 1000;
  /// Only events of these types (all types when empty).
  std::vector<std::string> types{};
};

/// What a stream is now.
enum class stream_status : std::uint8_t { not_found, active, deleted, tombstoned };

/// A page of one stream.
struct stream_page {
  stream_status status = stream_status::not_found;
  std::int64_t last_version = -1;  ///< the stream's last version (-1: no events)
  std::vector<recorded_event> events;
  /// Where the next page starts (pass as from_version); meaningful unless end_of_stream.
  std::int64_t next_version = 0;
  bool end_of_stream = true;
};

/// A read of the global order, or of one category of it.
struct all_read {
  /// Forward: events after this position. Backward: events before it.
  all_position after = all_position::start();
  direction dir = direction::forward;
  std::size_t max_count = 1000;
  /// Only this category's streams (all when empty).
  std::string category{};
  /// Only events of these types (all types when empty).
  std::vector<std::string> types{};
  /// Only this stream (forward only, not with a category): the stream in the global order, so
  /// that a subscription or projection can follow one stream with a global position.
  std::string stream{};
};

/// A page of the global order.
struct all_page {
  std::vector<recorded_event> events;
  /// Where to continue (pass as `after`): the last event read, or, when a forward read reached
  /// the horizon, the horizon itself, so filtered readers do not scan the same range again.
  all_position next;
  /// A forward read returned everything committed below the horizon.
  bool caught_up = false;
  /// The oldest transaction still running when the page was read: nothing at or beyond it was
  /// returned, because such a transaction may still commit events before the cursor.
  std::int64_t horizon = 0;
};

/// Why readers of the global order may be held back: see horizon().
struct horizon_status {
  std::int64_t horizon = 0;  ///< the oldest transaction id still running anywhere on the server
  /// Committed events at or beyond the horizon, which readers cannot see until it moves.
  std::int64_t events_waiting = 0;
  /// Seconds the oldest write transaction has been open (0 when none is): how stale readers of
  /// `$all` can be. Needs visibility of other sessions in pg_stat_activity (same role, or
  /// pg_read_all_stats); otherwise only this role's transactions count.
  double oldest_transaction_seconds = 0;
  /// The server process of that transaction (0 when none), to find it in pg_stat_activity.
  int oldest_transaction_pid = 0;
};

/// Retention and free settings of a stream (EventStoreDB's stream metadata).
struct stream_settings {
  std::optional<std::int64_t> max_count{};        ///< keep only the last N events
  std::optional<std::chrono::seconds> max_age{};  ///< keep only events younger than this
  std::int64_t truncate_before = 0;               ///< events below this version are gone
  std::string custom = "{}";                      ///< a JSON object for the application
  friend bool operator==(const stream_settings&, const stream_settings&) = default;
};

/// A stream's state and settings.
struct stream_info {
  stream_status status = stream_status::not_found;
  std::int64_t last_version = -1;
  stream_settings settings;
};

enum class delete_mode : std::uint8_t {
  soft,       ///< reads show nothing up to now; a later append brings the stream back, versions go on
  tombstone,  ///< for good: reads show nothing, appends fail with errc::stream_deleted
};

/// The outcome of delete_stream: `deleted`, or the version the stream is at (-1: it has no
/// events) when the expected version did not hold or there was nothing to delete.
struct delete_result {
  bool deleted = false;
  std::int64_t version = -1;
  [[nodiscard]] explicit operator bool() const noexcept { return deleted; }
};

/// What scavenge() reclaimed.
struct scavenge_report {
  std::uint64_t events_removed = 0;
  bool more = false;  ///< the limit was reached: call again
};

/// A stream's state folded up to `version`, stored so that loading it reads only the events
/// after. `schema_version` is the state's own shape: a snapshot of another schema is ignored.
struct snapshot {
  std::int64_t version = -1;
  std::int32_t schema_version = 1;
  std::string state;  ///< JSON
};

/// A named checkpoint: a subscription's or a projection's.
struct checkpoint_info {
  std::string name;
  all_position position;
  timestamp updated_at{};
};

/// A stream, as listed.
struct stream_summary {
  std::string name;
  stream_status status = stream_status::not_found;
  std::int64_t last_version = -1;
  timestamp updated_at{};
};

/// What store::assign_sequence numbered.
struct sequence_report {
  std::uint64_t assigned = 0;
  std::int64_t last_sequence = 0;  ///< the highest number assigned so far
  bool more = false;               ///< the limit was reached: call again
};

/// An event with its dense sequence number (strict mode).
struct sequenced_event {
  std::int64_t sequence = 0;
  recorded_event event;
};

/// A page of the dense sequence.
struct sequenced_page {
  std::vector<sequenced_event> events;
  std::int64_t next = 0;  ///< pass as `after` to continue
  bool caught_up = false;
};

/// An inline projection: runs inside the append's transaction, after the events are written,
/// so what it writes commits with them or not at all. Its read model is never behind the
/// stream, at the price of the append's latency; an error (or an exception) undoes the append.
/// Runs only for appends that wrote events (not for an idempotent retry of stored ones).
struct inline_projection {
  std::string name;                ///< said in the log when it fails
  std::string category;            ///< only appends to this category (every append when empty)
  std::vector<std::string> types;  ///< only events of these types (all when empty)
  /// Gets the events the append wrote to one stream (as stored, upcast), in version order.
  std::function<result<void>(pg::connection& c, std::span<const recorded_event> events)> apply;
};

struct store_options {
  /// The most bytes an event's data and metadata may take together.
  std::size_t max_event_bytes = 1U << 20U;
  /// The most events one call may append.
  std::size_t max_batch_events = 10'000;
  /// The most events one read may return.
  std::size_t max_page_events = 100'000;
  /// Appends send NOTIFY keel_events (payload: the category) so live subscriptions wake at
  /// once; Postgres delivers it at commit and folds repeats within a transaction. Without it,
  /// subscriptions find new events at their poll interval.
  bool notify = true;
  /// Applied to every event read (streams, $all, for_each, subscriptions, projections), when set;
  /// must outlive the store.
  const upcasters* upcast = nullptr;
  /// Counts appends, conflicts and reads, when set; must outlive the store.
  events_metrics* metrics =
      nullptr;  /// Run by every append and append_many in the append's transaction (see inline_projection);
  /// must outlive the store.
  std::span<const inline_projection> inline_projections{};
};

/// The channel appends notify on; the payload is the stream's category.
inline constexpr std::string_view notify_channel = "keel_events";

/// The event store's operations. Holds only its options: cheap, copyable, thread-safe; the
/// connection passed to each call carries the state.
class store {
 public:
  store() noexcept = default;
  explicit store(store_options options) noexcept : options_(options) {}

  /// Appends `events` to `stream` if it is at the expected version, atomically.
  /// @returns the outcome (a version conflict is an outcome, not an error), or
  /// errc::invalid_stream_name, invalid_event_type, invalid_json, event_too_large,
  /// batch_too_large, empty_batch (nothing checked against the database yet),
  /// errc::duplicate_event_id (an id is taken by a different event, or only part of the batch was
  /// stored before), errc::stream_deleted (tombstoned), an inline projection's error, or a
  /// pg::errc. Nothing of a failed batch is stored.
  [[nodiscard]] result<append_result> append(pg::connection& c, std::string_view stream,
                                             expected_version expected,
                                             std::span<const new_event> events) const;
  [[nodiscard]] result<append_result> append(pg::connection& c, std::string_view stream,
                                             expected_version expected,
                                             std::initializer_list<new_event> events) const {
    return append(c, stream, expected, std::span<const new_event>(events.begin(), events.size()));
  }
  /// Appends to several streams atomically: all of them or none. Streams are locked in name
  /// order, so concurrent multi-stream appends never deadlock. Inside the caller's transaction a
  /// savepoint undoes a partial append when one stream conflicts.
  [[nodiscard]] result<multi_append_result> append_many(pg::connection& c,
                                                        std::span<const stream_append> appends) const;

  /// Reads one stream: its events in version order (committed ones only; a stream's versions
  /// commit in order, so nothing appears behind a reader of one stream).
  [[nodiscard]] result<stream_page> read_stream(pg::connection& c, std::string_view stream,
                                                const stream_read& read = {}) const;
  /// Reads the global order, or one category of it, below the horizon: an event is returned
  /// only once no transaction that could commit an event before it is still running.
  [[nodiscard]] result<all_page> read_all(pg::connection& c, const all_read& read = {}) const;

  /// Calls `handle` for each event of the global order (or of a category, or of some types)
  /// after `read.after` up to the horizon, in pages of read.max_count, reading the next page
  /// while `handle` works on this one: the fast way to rebuild a projection. The event passed is
  /// reused from call to call (copy what you keep). `handle` returns false to stop after that
  /// event (it counts as handled: the position returned is its own).
  /// @returns where to continue: the last event handled, or the horizon once every event below
  /// it was handled; errc::invalid_read for a backward read.
  [[nodiscard]] result<all_position> for_each(pg::connection& c, const all_read& read,
                                              const std::function<bool(const recorded_event&)>& handle) const;

  /// Where the horizon is and what holds it back: a long transaction anywhere on the server
  /// (any database, any table) stalls readers of the global order until it ends. Watch
  /// oldest_transaction_seconds.
  [[nodiscard]] result<horizon_status> horizon(pg::connection& c) const;

  [[nodiscard]] result<stream_info> stream(pg::connection& c, std::string_view stream) const;
  /// Sets a stream's retention and custom settings (the stream need not have events yet).
  [[nodiscard]] result<void> set_stream_settings(pg::connection& c, std::string_view stream,
                                                 const stream_settings& settings) const;
  /// Deletes a stream if it is at the expected version. Its rows are reclaimed by scavenge().
  [[nodiscard]] result<delete_result> delete_stream(pg::connection& c, std::string_view stream,
                                                    expected_version expected, delete_mode mode) const;
  /// Removes up to `limit` events that retention settings or deletion hide from reads, so their
  /// space can be reused. Safe to run while others append and read; run it from one place (e.g.
  /// a keel::jobs periodic job). An id whose event was removed can be appended again.
  [[nodiscard]] result<scavenge_report> scavenge(pg::connection& c, std::size_t limit = 10'000) const;

  /// The checkpoint stored under `name` (a subscription's or a projection's), or nullopt.
  [[nodiscard]] result<std::optional<all_position>> checkpoint(pg::connection& c,
                                                               std::string_view name) const;
  /// Stores `position` under `name`, in whatever transaction `c` is in: save it in the same
  /// transaction as what you built from the events, and each event takes effect exactly once.
  /// @returns errc::invalid_checkpoint_name for an empty or too long name.
  [[nodiscard]] result<void> save_checkpoint(pg::connection& c, std::string_view name,
                                             all_position position) const;

  /// Strict mode: gives the next committed events of the global order (up to `limit`, below the
  /// horizon) dense sequence numbers 1, 2, 3 ... without gaps, in global order. Appends take no
  /// lock for it: numbers are assigned after commit, by whoever calls this (one at a time: the
  /// sequencer's row lock), e.g. in a loop or a keel::jobs periodic job. Numbered events stay
  /// numbered; scavenged events leave their numbers unused.
  [[nodiscard]] result<sequence_report> assign_sequence(pg::connection& c, std::size_t limit = 10'000) const;
  /// Strict mode: events by sequence number after `after` (0: from the first).
  [[nodiscard]] result<sequenced_page> read_sequenced(pg::connection& c, std::int64_t after,
                                                      std::size_t max_count = 1000) const;

  /// The named checkpoints (subscriptions, projections), by name.
  [[nodiscard]] result<std::vector<checkpoint_info>> checkpoints(pg::connection& c) const;
  /// Streams in name order after `after` (all from the start when empty), of `category` when
  /// not empty, at most `limit` (and at most max_page_events).
  [[nodiscard]] result<std::vector<stream_summary>> list_streams(pg::connection& c, std::string_view category,
                                                                 std::string_view after,
                                                                 std::size_t limit) const;

  /// The highest position drawn so far (committed or not; 0 before the first append): what lag
  /// estimates count against.
  [[nodiscard]] result<std::int64_t> last_position(pg::connection& c) const;

  /// The latest snapshot of `stream` (see keel/events/aggregate.hpp), or nullopt.
  [[nodiscard]] result<std::optional<snapshot>> load_snapshot(pg::connection& c,
                                                              std::string_view stream) const;
  /// Stores a snapshot of `stream`, unless a newer one is stored already.
  [[nodiscard]] result<void> save_snapshot(pg::connection& c, std::string_view stream,
                                           const snapshot& s) const;

  [[nodiscard]] const store_options& options() const noexcept { return options_; }

 private:
  [[nodiscard]] result<void> check_batch(std::string_view stream, std::span<const new_event> events) const;
  [[nodiscard]] bool projects_inline(std::string_view stream) const noexcept;
  [[nodiscard]] result<void> project_inline(pg::connection& c, const append_result& written) const;
  store_options options_{};
};

}  // namespace keel::events
