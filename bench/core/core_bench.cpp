// keel::core benchmarks: bit stream throughput (bits/s), SHA-256 and xxHash3 throughput (GB/s).
//   ./keel bench core
#include <keel/core/bits.hpp>
#include <keel/core/hash.hpp>
#include <keel/core/xxhash.hpp>

#include <benchmark/benchmark.h>

#include <random>
#include <vector>

namespace {

struct bit_field {
  std::uint64_t value;
  unsigned width;
};

// Widths as a Gorilla/Chimp codec writes them: many short control fields, some long payloads.
std::vector<bit_field> codec_like_fields(std::size_t count) {
  std::mt19937_64 rng(42);
  std::discrete_distribution<int> pick({30, 20, 20, 15, 15});
  const unsigned widths[] = {1, 2, 7, 27, 64};
  std::vector<bit_field> fields(count);
  for (auto& f : fields) {
    f.width = widths[pick(rng)];
    f.value = rng() >> (64 - f.width);
  }
  return fields;
}

std::size_t total_bits(const std::vector<bit_field>& fields) {
  std::size_t bits = 0;
  for (const auto& f : fields) bits += f.width;
  return bits;
}

void set_bits_rate(benchmark::State& state, std::size_t bits_per_iteration) {
  state.counters["bits_per_second"] =
      benchmark::Counter(static_cast<double>(bits_per_iteration) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void set_gbps(benchmark::State& state, std::size_t bytes_per_iteration) {
  const double bytes = static_cast<double>(bytes_per_iteration) * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.counters["GB_per_second"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
}

void bit_writer_throughput(benchmark::State& state) {
  const auto fields = codec_like_fields(1 << 16);
  const auto bits = total_bits(fields);
  for (auto _ : state) {
    keel::bit_writer writer(bits);
    for (const auto& f : fields) writer.write(f.value, f.width);
    auto out = writer.finish();
    benchmark::DoNotOptimize(out.data());
  }
  set_bits_rate(state, bits);
}
BENCHMARK(bit_writer_throughput);

void bit_reader_throughput(benchmark::State& state) {
  const auto fields = codec_like_fields(1 << 16);
  const auto bits = total_bits(fields);
  keel::bit_writer writer(bits);
  for (const auto& f : fields) writer.write(f.value, f.width);
  const auto data = writer.finish();
  for (auto _ : state) {
    keel::bit_reader reader(data);
    std::uint64_t sum = 0;
    for (const auto& f : fields) sum += reader.read(f.width);
    benchmark::DoNotOptimize(sum);
    if (reader.overrun()) state.SkipWithError("reader overran its input");
  }
  set_bits_rate(state, bits);
}
BENCHMARK(bit_reader_throughput);

keel::bytes input(std::size_t size) {
  return keel::bytes(size, 0x5a);
}

void sha256_throughput(benchmark::State& state) {
  const auto data = input(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    auto digest = keel::sha256(data);
    benchmark::DoNotOptimize(digest);
  }
  set_gbps(state, data.size());
}
BENCHMARK(sha256_throughput)->Arg(64)->Arg(4096);

void xxh3_64_throughput(benchmark::State& state) {
  const auto data = input(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    auto hash = keel::xxh3_64(data);
    benchmark::DoNotOptimize(hash);
  }
  set_gbps(state, data.size());
}
BENCHMARK(xxh3_64_throughput)->Arg(64)->Arg(4096);

void xxh3_128_throughput(benchmark::State& state) {
  const auto data = input(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    auto hash = keel::xxh3_128(data);
    benchmark::DoNotOptimize(hash);
  }
  set_gbps(state, data.size());
}
BENCHMARK(xxh3_128_throughput)->Arg(64)->Arg(4096);

}  // namespace
