// libFuzzer target for keel::tsdb's block decoders. The first input byte picks what to attack:
//   0: decode_block on the raw input (header, checksum, zstd)
//   1: the input as a block with its checksum fixed up, so mutations reach the codecs' parsers
//   2: each codec decoder on the raw input with a count from the next two bytes
//   3: the input as points: encode with every codec, decode, and require the same bits back
#include <keel/core/xxhash.hpp>
#include <keel/tsdb/codec.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace tsdb = keel::tsdb;

namespace {

void decode(keel::bytes_view block) {
  std::vector<std::int64_t> times;
  std::vector<double> values;
  const auto r = tsdb::decode_block(block, times, values);
  if (r && (times.size() != values.size())) std::abort();
}

void round_trip(const std::uint8_t* data, std::size_t size) {
  const std::size_t n = size / 16;
  std::vector<std::int64_t> times(n);
  std::vector<double> values(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::memcpy(&times[i], data + 16 * i, 8);
    std::memcpy(&values[i], data + 16 * i + 8, 8);
  }
  for (const auto choice : {tsdb::codec_choice::automatic, tsdb::codec_choice::gorilla,
                            tsdb::codec_choice::decimal, tsdb::codec_choice::chimp}) {
    for (const bool zstd : {false, true}) {
      const auto block = tsdb::encode_block(times, values, {.codec = choice, .zstd = zstd});
      if (!block) std::abort();
      std::vector<std::int64_t> t;
      std::vector<double> v;
      if (!tsdb::decode_block(*block, t, v)) std::abort();
      if (t != times) std::abort();
      if (n != 0 && std::memcmp(v.data(), values.data(), n * 8) != 0) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0] % 4;
  ++data;
  --size;
  switch (mode) {
    case 0:
      decode({data, size});
      break;
    case 1: {
      if (size < 24) break;
      keel::bytes block(data, data + size);
      const std::uint64_t seed = keel::xxh3_64(keel::bytes_view(block.data(), 20));
      const auto sum = static_cast<std::uint32_t>(keel::xxh3_64(keel::bytes_view(block).subspan(24), seed));
      for (int i = 0; i < 4; ++i)
        block[20 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(sum >> (8 * i));
      decode(block);
      break;
    }
    case 2: {
      if (size < 2) break;
      const std::size_t count = (std::size_t{data[0]} << 8 | data[1]) % 5000;
      const keel::bytes_view in(data + 2, size - 2);
      std::vector<std::int64_t> times(count);
      std::vector<double> values(count);
      (void)tsdb::codecs::gorilla_decode_times(in, count, times.data());
      (void)tsdb::codecs::gorilla_decode_values(in, count, values.data());
      (void)tsdb::codecs::packed_decode_times(in, count, times.data());
      (void)tsdb::codecs::decimal_decode_values(in, count, values.data());
      (void)tsdb::codecs::decimal_decode_values(in, count, values.data(), false);
      (void)tsdb::codecs::chimp_decode_values(in, count, values.data());
      break;
    }
    default:
      round_trip(data, size);
      break;
  }
  return 0;
}
