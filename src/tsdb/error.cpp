#include <keel/tsdb/error.hpp>

namespace keel::tsdb {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::block_truncated:
      return "the block ends before its header or one of its sections does; it was cut short in storage or "
             "transit";
    case errc::block_corrupt:
      return "the block's checksum or structure is wrong; it was damaged after it was written";
    case errc::unsupported_block:
      return "the block was written by a newer keel::tsdb (unknown format version or codec); upgrade to read "
             "it";
    case errc::out_of_order:
      return "the point is older than the newest point of its series and the series rejects out-of-order "
             "points; send points in time order or choose another ordering policy";
    case errc::duplicate_timestamp:
      return "the series already has a point at this timestamp and rejects duplicates; choose "
             "last_write_wins "
             "or keep_both to accept it";
    case errc::invalid_argument:
      return "invalid argument";
    case errc::invalid_label_matcher:
      return "a label matcher has an empty label name or a regular expression Postgres cannot compile";
    case errc::unknown_series:
      return "no series has that id";
    case errc::too_many_points:
      return "a block holds at most 16,777,215 points; seal smaller blocks";
    case errc::invalid_range:
      return "the query range or bucket width is invalid: pass from < to, a width > 0, at most 10,000,000 "
             "buckets, and a range whose first bucket starts at or after the smallest int64 time";
  }
  return "unknown keel.tsdb error";
}

constexpr enum_error_category<errc> category{0x6b65656c2e747364ULL, "keel.tsdb", &describe};

}  // namespace

const error_category& tsdb_category() noexcept {
  return category;
}

}  // namespace keel::tsdb
