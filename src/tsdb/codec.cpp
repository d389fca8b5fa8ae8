// The block format: a 24-byte header (magic, version, codecs, flags, count, section sizes, checksum)
// over a time section and a value section, optionally one zstd frame of both. Layout in docs/tsdb.md.
#include <keel/core/xxhash.hpp>

#include "codec_frames.hpp"

#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace keel::tsdb {
namespace {

constexpr std::uint8_t magic0 = 'k';
constexpr std::uint8_t magic1 = 'T';
constexpr std::uint8_t format_version = 1;
constexpr std::size_t header_size = 24;
constexpr std::uint32_t max_points = (1U << 24) - 1;
constexpr std::uint8_t flag_zstd = 1;

std::uint32_t block_checksum(const std::uint8_t* header, bytes_view payload) noexcept {
  const std::uint64_t seed = xxh3_64(bytes_view(header, 20));
  return static_cast<std::uint32_t>(xxh3_64(payload, seed));
}

/// The largest section a block of `count` points can honestly have: bounds allocations when
/// decompressing hostile input.
std::size_t max_section_size(std::size_t count) noexcept {
  return count * 20 + 4096;
}

}  // namespace

block_summary summarize(std::span<const std::int64_t> times, std::span<const double> values) noexcept {
  block_summary s;
  s.count = static_cast<std::uint32_t>(times.size());
  if (times.empty()) return s;
  s.first_time = *std::min_element(times.begin(), times.end());
  s.last_time = *std::max_element(times.begin(), times.end());
  s.first = values.front();
  s.last = values.back();
  s.min = std::numeric_limits<double>::infinity();
  s.max = -std::numeric_limits<double>::infinity();
  bool any = false;
  for (const double v : values) {
    if (std::isnan(v)) continue;
    any = true;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
    s.sum += v;
  }
  if (!any) s.min = s.max = std::numeric_limits<double>::quiet_NaN();
  return s;
}

result<bytes> encode_block(std::span<const std::int64_t> times, std::span<const double> values,
                           const encode_options& options) {
  if (times.size() != values.size()) return errc::invalid_argument;
  if (times.size() > max_points) return errc::too_many_points;
  bytes payload;
  payload.reserve(times.size() * 2 + 64);
  time_codec tc = time_codec::packed;
  value_codec vc = value_codec::decimal_runs;
  if (options.codec == codec_choice::gorilla) {
    tc = time_codec::gorilla;
    codecs::gorilla_encode_times(times, payload);
  } else {
    codecs::packed_encode_times(times, payload);
  }
  const std::size_t time_size = payload.size();
  if (options.codec == codec_choice::gorilla) {
    vc = value_codec::gorilla;
    codecs::gorilla_encode_values(values, payload);
  } else if (options.codec == codec_choice::decimal) {
    codecs::decimal_encode_values(values, payload, {.force = true});
  } else if (options.codec == codec_choice::chimp) {
    vc = value_codec::chimp128;
    codecs::chimp_encode_values(values, payload);
  } else if (!codecs::decimal_encode_values(values, payload)) {
    // Not decimal enough, or Gorilla estimated smaller on the first frame: Gorilla or Chimp128 by
    // their sizes on the first frame (both encoded there), so the block is encoded once.
    const std::size_t probe = std::min(values.size(), detail::frame_size);
    bytes gorilla_probe;
    codecs::gorilla_encode_values(values.first(probe), gorilla_probe);
    // Chimp128 decodes slower than Gorilla here, so it has to be clearly (1/8) smaller.
    if (codecs::chimp_bits(values.data(), probe) * 8 < gorilla_probe.size() * 8 * 7) {
      vc = value_codec::chimp128;
      codecs::chimp_encode_values(values, payload);
    } else {
      vc = value_codec::gorilla;
      codecs::gorilla_encode_values(values, payload);
    }
  }
  const std::size_t value_size = payload.size() - time_size;

  std::uint8_t flags = 0;
  bytes stored;
  if (options.zstd && !payload.empty()) {
    stored.resize(ZSTD_compressBound(payload.size()));
    const std::size_t packed =
        ZSTD_compress(stored.data(), stored.size(), payload.data(), payload.size(), options.zstd_level);
    if (!ZSTD_isError(packed) && packed < payload.size()) {
      stored.resize(packed);
      flags |= flag_zstd;
    }
  }
  const bytes& body = (flags & flag_zstd) != 0 ? stored : payload;

  bytes block;
  block.reserve(header_size + body.size());
  byte_writer w(block);
  w.u8(magic0);
  w.u8(magic1);
  w.u8(format_version);
  w.u8(static_cast<std::uint8_t>(tc));
  w.u8(static_cast<std::uint8_t>(vc));
  w.u8(flags);
  w.le(std::uint16_t{0});
  w.le(static_cast<std::uint32_t>(times.size()));
  w.le(static_cast<std::uint32_t>(time_size));
  w.le(static_cast<std::uint32_t>(value_size));
  w.le(block_checksum(block.data(), body));
  w.append(body);
  return block;
}

namespace {

/// The header's fields past the magic and version checks.
struct header {
  block_info info;
  std::uint32_t time_size = 0;
  std::uint32_t value_size = 0;
  std::uint32_t checksum = 0;
};

result<header> read_header(bytes_view block) {
  byte_reader in(block);
  const auto fields = in.take(header_size);
  if (!fields) return errc::block_truncated;
  // Every read below stays inside the header_size bytes just taken.
  byte_reader h(*fields);
  const std::uint8_t m0 = h.u8().value();
  const std::uint8_t m1 = h.u8().value();
  const std::uint8_t version = h.u8().value();
  const std::uint8_t times = h.u8().value();
  const std::uint8_t values = h.u8().value();
  const std::uint8_t flags = h.u8().value();
  const auto reserved = h.le<std::uint16_t>().value();
  if (m0 != magic0 || m1 != magic1) return errc::block_corrupt;
  if (version != format_version) return errc::unsupported_block;
  header out;
  out.info.version = version;
  if (times != 1 && times != 2) return errc::unsupported_block;
  if (values < 1 || values > 4) return errc::unsupported_block;
  if ((flags & ~flag_zstd) != 0 || reserved != 0) return errc::unsupported_block;
  out.info.times = static_cast<time_codec>(times);
  out.info.values = static_cast<value_codec>(values);
  out.info.zstd = (flags & flag_zstd) != 0;
  out.info.count = h.le<std::uint32_t>().value();
  if (out.info.count > max_points) return errc::block_corrupt;
  out.time_size = h.le<std::uint32_t>().value();
  out.value_size = h.le<std::uint32_t>().value();
  out.checksum = h.le<std::uint32_t>().value();
  return out;
}

}  // namespace

result<block_info> read_block_info(bytes_view block) {
  auto h = read_header(block);
  if (!h) return h.error();
  return h->info;
}

result<void> decode_block(bytes_view block, std::vector<std::int64_t>& times, std::vector<double>& values) {
  const auto parsed = read_header(block);
  if (!parsed) return parsed.error();
  const block_info* info = &parsed->info;
  const std::uint8_t* h = block.data();
  const std::size_t time_size = parsed->time_size;
  const std::size_t value_size = parsed->value_size;
  const std::uint32_t checksum = parsed->checksum;
  const bytes_view body = block.subspan(header_size);
  const std::size_t count = info->count;
  if (time_size > max_section_size(count) || value_size > max_section_size(count)) return errc::block_corrupt;
  // Every codec spends at least 12 bytes per 1024 timestamps: a header claiming more points than
  // its time section could hold is corrupt, and is refused before anything is allocated for them.
  if (count > 1024 * (time_size / 12 + 1)) return errc::block_corrupt;
  if (!info->zstd && body.size() < time_size + value_size) return errc::block_truncated;
  if (block_checksum(h, body) != checksum) {
    return body.size() < time_size + value_size ? errc::block_truncated : errc::block_corrupt;
  }
  bytes inflated;
  bytes_view payload = body;
  if (info->zstd) {
    const unsigned long long declared = ZSTD_getFrameContentSize(body.data(), body.size());
    if (declared != time_size + value_size) return errc::block_corrupt;
    inflated.resize(time_size + value_size);
    const std::size_t got = ZSTD_decompress(inflated.data(), inflated.size(), body.data(), body.size());
    if (ZSTD_isError(got) || got != inflated.size()) return errc::block_corrupt;
    payload = inflated;
  } else if (body.size() != time_size + value_size) {
    return errc::block_corrupt;
  }
  times.resize(count);
  values.resize(count);
  const bytes_view time_bytes = payload.subspan(0, time_size);
  const bytes_view value_bytes = payload.subspan(time_size, value_size);
  result<void> r = info->times == time_codec::gorilla
                       ? codecs::gorilla_decode_times(time_bytes, count, times.data())
                       : codecs::packed_decode_times(time_bytes, count, times.data());
  if (r) {
    switch (info->values) {
      case value_codec::gorilla:
        r = codecs::gorilla_decode_values(value_bytes, count, values.data());
        break;
      case value_codec::chimp128:
        r = codecs::chimp_decode_values(value_bytes, count, values.data());
        break;
      case value_codec::decimal:
      case value_codec::decimal_runs:
        r = codecs::decimal_decode_values(value_bytes, count, values.data(),
                                          info->values == value_codec::decimal_runs);
        break;
    }
  }
  if (!r) {
    times.clear();
    values.clear();
  }
  return r;
}

}  // namespace keel::tsdb
