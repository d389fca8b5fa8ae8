// Packed timestamps: integer frames of 1024 (see int_frames.cpp), delta mode at width 0 for a
// regular grid.
#include "codec_frames.hpp"

#include <algorithm>
#include <array>

namespace keel::tsdb::codecs {

using detail::decode_int_frame;
using detail::encode_int_frame;
using detail::frame_size;

void packed_encode_times(std::span<const std::int64_t> times, bytes& out) {
  std::array<std::uint64_t, frame_size> scratch;
  for (std::size_t at = 0; at < times.size(); at += frame_size) {
    const std::size_t n = std::min(frame_size, times.size() - at);
    encode_int_frame(times.data() + at, n, out, scratch.data());
  }
}

result<void> packed_decode_times(bytes_view in, std::size_t count, std::int64_t* out) {
  byte_reader reader(in);
  std::array<std::uint64_t, frame_size> scratch;
  for (std::size_t at = 0; at < count; at += frame_size) {
    const std::size_t n = std::min(frame_size, count - at);
    if (auto r = decode_int_frame(reader, n, out + at, scratch.data()); !r) return r;
  }
  if (!reader.empty()) return errc::block_corrupt;  // bytes beyond the last frame
  return {};
}

}  // namespace keel::tsdb::codecs
