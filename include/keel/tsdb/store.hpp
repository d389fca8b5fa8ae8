#pragma once
/// @file keel/tsdb/store.hpp
/// @brief Time series in Postgres: a series index (metric + labels), an in-memory head per
/// series sealed into compressed blocks (bytea with summaries), rollups maintained on ingest,
/// retention and compaction, and queries that use summaries and rollups when they answer exactly.
#include <keel/pg/connection.hpp>
#include <keel/pg/migrations.hpp>
#include <keel/tsdb/codec.hpp>
#include <keel/tsdb/query.hpp>
#include <keel/tsdb/schema.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::tsdb {

/// What a series does with a point at or before its newest timestamp.
enum class ordering : std::int16_t {
  reject = 0,           ///< errc::out_of_order / errc::duplicate_timestamp; the batch is not applied
  last_write_wins = 1,  ///< a later write at the same timestamp replaces the earlier one
  keep_both = 2,        ///< every point is kept, duplicates included
};

/// One label of a series.
struct label {
  std::string name;
  std::string value;
  friend bool operator==(const label&, const label&) = default;
};

/// How a label matcher compares (PromQL's =, !=, =~, !~; regexes are anchored, a missing label
/// reads as "").
enum class match { equal, not_equal, regex, not_regex };

/// A label matcher for store::select().
struct matcher {
  std::string name;
  match op = match::equal;
  std::string value;
};

/// A series from the index.
struct series_info {
  std::int64_t id = 0;
  std::string metric;
  std::vector<label> labels;  ///< sorted by name
  ordering policy = ordering::reject;
};

/// Options of a store. Times are int64 in one unit chosen by the application (milliseconds by
/// default); every span, resolution and age below is in that unit.
struct store_options {
  std::size_t seal_count = 8192;        ///< a head is sealed into a block at this many points
  std::int64_t seal_span = 86'400'000;  ///< ... or when it spans this much time
  std::vector<std::int64_t> rollups = {60'000, 3'600'000};  ///< resolutions maintained on ingest
  encode_options encoding{};
  double units_per_second = 1000;  ///< 1000 for ms, 1e9 for ns (for rate())
  /// aggregate() reads an exact rollup only when it has fewer rows than the stored points in range
  /// divided by this (a rollup row costs about this many decoded points); 0: always use it.
  std::size_t points_per_rollup_row = 32;
};

/// Points a seal refused: another writer had already sealed points of this `reject` series at or
/// after their first time (see store::take_rejected()).
struct rejected_points {
  std::int64_t series = 0;
  errc reason = errc::out_of_order;  ///< out_of_order, or duplicate_timestamp at the newest stored time
  std::vector<std::int64_t> times;   ///< sorted
  std::vector<double> values;
};

/// Which source answered an aggregate query (for tests and EXPLAIN-like output).
struct query_plan {
  std::int64_t rollup = 0;            ///< resolution used, 0 for raw blocks
  std::size_t blocks_decoded = 0;     ///< blocks decoded point by point
  std::size_t blocks_summarized = 0;  ///< blocks answered from their summary alone
  std::size_t rollup_rows = 0;
};

/// A decoded range scan: points of one series in [from, to), ascending by time, merged across
/// blocks and the head according to the series' ordering policy. Blocks are decoded one at a
/// time as the scan reaches them. Made by store::scan().
class range_scan {
 public:
  range_scan(range_scan&&) noexcept;
  range_scan& operator=(range_scan&&) noexcept;
  ~range_scan();

  /// The next point; false at the end.
  bool next(std::int64_t& time, double& value);
  /// Reads the rest into two arrays.
  void drain(std::vector<std::int64_t>& times, std::vector<double>& values);
  /// Set when a block failed to decode (the scan stops there).
  [[nodiscard]] error_code error() const noexcept;

 private:
  friend class store;
  struct impl;
  explicit range_scan(std::unique_ptr<impl> i) noexcept;
  std::unique_ptr<impl> impl_;
};

/// A bucketed query for store::aggregate(): time_bucket over [from, to) with buckets of `width`.
struct aggregate_options {
  std::int64_t from = 0;
  std::int64_t to = 0;
  std::int64_t width = 1;
  bool percentiles = false;  ///< keep a quantile sketch per bucket (never answered from rollups)
};

namespace detail {
struct store_state;  // src/tsdb/store_state.hpp
}  // namespace detail

/// A time series store on one Postgres connection. Not thread-safe (use one per thread or guard
/// it); several processes may ingest into the same database at once.
///
/// Durability: buffered points are in memory until their head is sealed (by count or span) or
/// flush() returns; sealed blocks, their rollup segments and the series' newest times commit in one
/// transaction.
class store {
 public:
  /// The same as tsdb::migrate() (keel/tsdb/schema.hpp), kept for existing callers.
  [[nodiscard]] static result<pg::migration_report> migrate(pg::connection& c);
  /// The same as tsdb::migrations().
  [[nodiscard]] static std::span<const pg::migration> migrations() noexcept;

  /// Opens a store on its own connection to `conninfo` (migrations must have been applied).
  [[nodiscard]] static result<store> open(std::string_view conninfo, store_options options = {});

  store(store&&) noexcept;
  store& operator=(store&&) noexcept;
  ~store();

  /// The id of the series metric{labels}, created on first use with `policy` (an existing
  /// series keeps its policy). @returns errc::invalid_argument for an empty metric or label name.
  [[nodiscard]] result<std::int64_t> series(std::string_view metric, std::vector<label> labels = {},
                                            ordering policy = ordering::reject);

  /// The series `series` (its metric and labels), or nullopt when no series has that id.
  [[nodiscard]] result<std::optional<series_info>> describe(std::int64_t series);

  /// Series of `metric` whose labels pass every matcher.
  [[nodiscard]] result<std::vector<series_info>> select(std::string_view metric,
                                                        std::span<const matcher> matchers = {});

  /// Buffers points in a series' head in this process's memory: success means accepted, not
  /// durable (a crash loses them; flush() makes them durable). Full heads (seal_count, seal_span)
  /// are sealed and written before it returns. Under ordering::reject a
  /// batch with an out-of-order or duplicate point (against what this store has seen) is refused
  /// whole and changes nothing. A seal checks again against what every writer has sealed (under
  /// the series row's lock): a head that lost that race is refused whole, the other heads are
  /// written, and errc::out_of_order / duplicate_timestamp is returned with the refused points
  /// kept for take_rejected(). So after such an error, take_rejected() is empty when this batch
  /// was refused, and holds the head (this batch included) when the seal was.
  [[nodiscard]] result<void> buffer(std::int64_t series, std::span<const std::int64_t> times,
                                    std::span<const double> values);
  /// Seals every head and writes the blocks (one COPY, one transaction); refused heads as for
  /// buffer(). On success every point buffered before the call is committed: it survives this
  /// process being killed and is read by every other store.
  [[nodiscard]] result<void> flush();
  /// The points seals refused since the last call (nothing is dropped silently): store them
  /// elsewhere, drop them, or append them again to a series with another policy.
  [[nodiscard]] std::vector<rejected_points> take_rejected();

  /// Points of a series in [from, to), including this process's unsealed head.
  [[nodiscard]] result<range_scan> scan(std::int64_t series, std::int64_t from, std::int64_t to);

  /// time_bucket aggregation over [query.from, query.to) with buckets of query.width (at most
  /// 10 million buckets). Uses the coarsest rollup that answers exactly (width and range aligned to
  /// it, no percentiles, and under last_write_wins no head point at or before the newest sealed
  /// time) when it is cheaper than the blocks (see store_options::points_per_rollup_row), else
  /// block summaries for blocks inside one bucket, else decoded points. `plan`, when given, says
  /// which source answered.
  [[nodiscard]] result<std::vector<bucket>> aggregate(std::int64_t series, const aggregate_options& query,
                                                      query_plan* plan = nullptr);

  /// Keeps `metric`'s data for `max_age` (0 removes the rule).
  [[nodiscard]] result<void> set_retention(std::string_view metric, std::int64_t max_age);
  /// Drops whole blocks (and rollup buckets) older than their metric's max age before `now`.
  /// @returns the number of blocks dropped.
  [[nodiscard]] result<std::uint64_t> apply_retention(std::int64_t now);
  /// Merges a series' blocks smaller than `below` points into blocks of up to `target` points
  /// (within the seal span), and its rollup segments into one per resolution and window of 1,024
  /// buckets (only windows holding several are rewritten). @returns the number
  /// of blocks removed.
  [[nodiscard]] result<std::uint64_t> compact(std::int64_t series, std::size_t below = 1024,
                                              std::size_t target = 8192);

  [[nodiscard]] const store_options& options() const noexcept;
  /// The store's connection, e.g. for the application's own statements.
  [[nodiscard]] pg::connection& connection() noexcept;

 private:
  explicit store(std::unique_ptr<detail::store_state> s) noexcept;
  std::unique_ptr<detail::store_state> state_;
};

}  // namespace keel::tsdb
