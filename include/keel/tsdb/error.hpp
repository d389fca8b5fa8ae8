#pragma once
/// @file keel/tsdb/error.hpp
/// @brief `keel::tsdb::errc`: what keel::tsdb reports, with messages that say what to do.
#include <keel/core/error.hpp>

namespace keel::tsdb {

/// Errors of keel::tsdb.
enum class errc {
  block_truncated = 1,    ///< a block ends before its header or a section says it should
  block_corrupt,          ///< a block's checksum or structure is wrong
  unsupported_block,      ///< a block from a newer format version or with an unknown codec
  out_of_order,           ///< a point older than the series' newest, under the reject policy
  duplicate_timestamp,    ///< a point at an existing timestamp, under the reject policy
  invalid_argument,       ///< a caller error the message explains
  invalid_label_matcher,  ///< a label matcher with an empty name or an invalid regex
  unknown_series,         ///< no series with that id
  too_many_points,        ///< a block larger than the format allows (2^24 points)
  invalid_range,          ///< a query range or bucket width that yields no valid buckets
};

/// The category of keel::tsdb::errc ("keel.tsdb").
[[nodiscard]] const error_category& tsdb_category() noexcept;

}  // namespace keel::tsdb

KEEL_ERROR_ENUM(keel::tsdb, tsdb_category);
