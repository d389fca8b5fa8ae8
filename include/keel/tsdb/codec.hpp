#pragma once
/// @file keel/tsdb/codec.hpp
/// @brief Compressed blocks of (timestamp, value) points: Gorilla (VLDB 2015), Chimp128 (VLDB 2022)
/// and a decimal-aware codec (ALP-like: scale decimals to integers, then delta/frame-of-reference
/// bit-packing or runs), chosen per block, optionally zstd over the sealed block. The byte layout
/// is in docs/tsdb.md.
#include <keel/core/bytes.hpp>
#include <keel/tsdb/error.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace keel::tsdb {

/// How a block's values are encoded. The number is stored in the block header.
enum class value_codec : std::uint8_t {
  gorilla = 1,  ///< XOR with the previous value, leading/trailing-zero windows (the paper's)
  decimal = 2,  ///< values * 10^e as integers, delta or frame-of-reference, bit-packed; exceptions raw
  /// decimal whose integer frames may also be runs (a repeat costs one bit); what new blocks use
  decimal_runs = 3,
  chimp128 = 4,  ///< XOR with one of the previous 128 values (Chimp128, VLDB 2022)
};

/// How a block's timestamps are encoded. The number is stored in the block header.
enum class time_codec : std::uint8_t {
  gorilla = 1,  ///< delta-of-delta in the paper's buckets (0, 7, 9, 12 bits, then 32 or 64)
  packed = 2,   ///< delta from the previous timestamp, frame-of-reference bit-packed per 1024
};

/// Which codecs encode_block() uses.
enum class codec_choice : std::uint8_t {
  automatic,  ///< the decimal/packed pair unless Gorilla is estimated smaller for the values (per block)
  gorilla,    ///< Gorilla for both timestamps and values, exactly as the paper
  decimal,    ///< packed timestamps and decimal values
  chimp,      ///< packed timestamps and Chimp128 values
};

/// Options for encode_block().
struct encode_options {
  codec_choice codec = codec_choice::automatic;
  /// Also try zstd over the encoded sections and keep it when smaller (costs encode and decode time).
  bool zstd = false;
  int zstd_level = 3;
};

/// Summary statistics of a block, stored beside it so queries can skip decoding.
struct block_summary {
  std::int64_t first_time = 0;
  std::int64_t last_time = 0;
  std::uint32_t count = 0;
  double min = 0;  ///< NaN values are left out of min/max/sum
  double max = 0;
  double sum = 0;
  double first = 0;
  double last = 0;
};

/// What a block header says (read without decoding the points).
struct block_info {
  std::uint8_t version = 0;
  time_codec times{};
  value_codec values{};
  bool zstd = false;
  std::uint32_t count = 0;
};

/// Encodes points (times[i], values[i]) into one self-describing block. Times need not be sorted.
/// @returns errc::invalid_argument when the spans differ in length, errc::too_many_points beyond
/// 2^24 - 1 points.
[[nodiscard]] result<bytes> encode_block(std::span<const std::int64_t> times, std::span<const double> values,
                                         const encode_options& options = {});

/// Decodes a block into `times` and `values` (replacing their contents). Every value comes back
/// bit for bit (NaN payloads, -0.0, infinities, subnormals).
/// @returns errc::block_truncated, errc::block_corrupt (checksum or structure) or
/// errc::unsupported_block; never reads outside `block`.
[[nodiscard]] result<void> decode_block(bytes_view block, std::vector<std::int64_t>& times,
                                        std::vector<double>& values);

/// Reads and checks the header only.
[[nodiscard]] result<block_info> read_block_info(bytes_view block);

/// Summary of points (used when sealing a block).
[[nodiscard]] block_summary summarize(std::span<const std::int64_t> times,
                                      std::span<const double> values) noexcept;

/// The individual codecs, exposed for benchmarks and tests. Each encoder appends to `out`; each
/// decoder reads exactly `count` items and fails on truncated or malformed input.
namespace codecs {
void gorilla_encode_times(std::span<const std::int64_t> times, bytes& out);
[[nodiscard]] result<void> gorilla_decode_times(bytes_view in, std::size_t count, std::int64_t* out);
void gorilla_encode_values(std::span<const double> values, bytes& out);
[[nodiscard]] result<void> gorilla_decode_values(bytes_view in, std::size_t count, double* out);
void packed_encode_times(std::span<const std::int64_t> times, bytes& out);
[[nodiscard]] result<void> packed_decode_times(bytes_view in, std::size_t count, std::int64_t* out);
void chimp_encode_values(std::span<const double> values, bytes& out);
/// The bits chimp_encode_values() would write for values[0, n) (to choose a codec).
[[nodiscard]] std::size_t chimp_bits(const double* values, std::size_t n);
[[nodiscard]] result<void> chimp_decode_values(bytes_view in, std::size_t count, double* out);
/// Options for decimal_encode_values().
struct decimal_encode_options {
  /// Write the layout even when it does not pay off (what codec_choice::decimal does).
  bool force = false;
  /// When given, the number of values stored raw (exceptions) is added to it.
  std::size_t* exception_count = nullptr;
};
/// Writes the decimal_runs layout. Unless options.force: @returns false, appending nothing, when
/// the values are not decimal enough to pay off or Gorilla is estimated smaller on the first frame.
bool decimal_encode_values(std::span<const double> values, bytes& out,
                           const decimal_encode_options& options = {});
/// Reads value codec 2 (`repeat_frames` false) or 3 (true).
[[nodiscard]] result<void> decimal_decode_values(bytes_view in, std::size_t count, double* out,
                                                 bool repeat_frames = true);
}  // namespace codecs

}  // namespace keel::tsdb
