// keel::crypto benchmarks. Counters: `bytes_per_second` for AEAD sealing and opening (1 KiB,
// 16 KiB, 64 KiB), envelope round trips (1 KiB; 1 MiB in 64 KiB frames) and streaming (16 MiB in
// 64 KiB frames, each direction); `ops_per_second` for envelopes, rewrap, HKDF and key wrap. The
// peer is OpenSSL's own `openssl speed -evp aes-256-gcm`, run from here before the benchmarks
// (same machine, same run) at 1, 16 and 64 KiB; `vs_openssl_speed_16k` is streaming over it.
//   ./keel bench crypto
#include <keel/crypto.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>

namespace {

namespace crypto = keel::crypto;

// `openssl speed -evp aes-256-gcm -bytes <size>`: bytes per second, or 0 without the tool.
double openssl_speed(int size) {
  const std::string command =
      "openssl speed -evp aes-256-gcm -seconds 2 -bytes " + std::to_string(size) + " 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  if (!pipe) return 0;
  std::array<char, 512> line{};
  double figure = 0;
  while (std::fgets(line.data(), static_cast<int>(line.size()), pipe.get()) != nullptr) {
    double thousands = 0;
    if (std::sscanf(line.data(), "AES-256-GCM %lfk", &thousands) == 1) figure = thousands * 1000;
  }
  return figure;
}

std::map<int, double>& peer_figures() {
  static std::map<int, double> figures;
  return figures;
}

// Seals range(0) bytes with AES-256-GCM into a reused buffer, a fresh nonce each time as a user
// must (the counter nonce here: drawing random nonces is measured separately).
void aes_gcm_seal(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto key = crypto::secret_bytes::random(32);
  keel::bytes plaintext(size, 0x5A), out(size + crypto::aead_tag_bytes);
  keel::bytes nonce(crypto::aead_nonce_bytes, 0);
  std::uint64_t counter = 0;
  for (auto _ : state) {
    std::memcpy(nonce.data(), &++counter, sizeof counter);
    auto n = crypto::seal_into(crypto::aead_algorithm::aes_gcm, key.view(), nonce, plaintext, {}, out);
    benchmark::DoNotOptimize(n);
  }
  state.counters["bytes_per_second"] =
      benchmark::Counter(static_cast<double>(size), benchmark::Counter::kIsIterationInvariantRate);
  const auto peer = peer_figures().find(static_cast<int>(size));
  if (peer != peer_figures().end() && peer->second > 0) {
    state.counters["openssl_speed_bytes_per_second"] = peer->second;
  }
}
BENCHMARK(aes_gcm_seal)->Arg(1024)->Arg(16 * 1024)->Arg(64 * 1024)->MinTime(1.0);

void aes_gcm_open(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto key = crypto::secret_bytes::random(32);
  const auto nonce = crypto::random_bytes(crypto::aead_nonce_bytes);
  const auto sealed =
      crypto::seal(crypto::aead_algorithm::aes_gcm, key.view(), nonce, keel::bytes(size, 0x5A)).value();
  keel::bytes out(size);
  for (auto _ : state) {
    auto n = crypto::open_into(crypto::aead_algorithm::aes_gcm, key.view(), nonce, sealed, {}, out);
    benchmark::DoNotOptimize(n);
  }
  state.counters["bytes_per_second"] =
      benchmark::Counter(static_cast<double>(size), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(aes_gcm_open)->Arg(1024)->Arg(16 * 1024)->Arg(64 * 1024)->MinTime(1.0);

void chacha20_poly1305_seal(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto key = crypto::secret_bytes::random(32);
  const auto nonce = crypto::random_bytes(crypto::aead_nonce_bytes);
  keel::bytes plaintext(size, 0x5A), out(size + crypto::aead_tag_bytes);
  for (auto _ : state) {
    auto n =
        crypto::seal_into(crypto::aead_algorithm::chacha20_poly1305, key.view(), nonce, plaintext, {}, out);
    benchmark::DoNotOptimize(n);
  }
  state.counters["bytes_per_second"] =
      benchmark::Counter(static_cast<double>(size), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(chacha20_poly1305_seal)->Arg(1024)->Arg(64 * 1024)->MinTime(1.0);

// Envelope encrypt + decrypt of range(0) bytes with the local keyring (a data key per message:
// wrap, the suite's derivation, header, body; then the same to open). range(1): frame size.
void envelope_round_trip(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto frame = static_cast<std::uint32_t>(state.range(1));
  crypto::keyring ring("bench");
  ring.rotate();
  crypto::kms* keys[] = {&ring};
  const keel::bytes plaintext(size, 0x5A);
  for (auto _ : state) {
    auto sealed = crypto::encrypt(keys, plaintext, {{"tenant", "bench"}}, {.frame_size = frame});
    auto opened = crypto::decrypt(keys, sealed.value());
    benchmark::DoNotOptimize(opened);
  }
  state.counters["bytes_per_second"] =
      benchmark::Counter(static_cast<double>(size), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(envelope_round_trip)->Args({1024, 0})->Args({1 << 20, 64 * 1024})->MinTime(1.0);

// Streaming, as a service streams a large object: a 16 MiB message fed in 64 KiB chunks to
// envelope_encryptor (64 KiB frames) and the result to envelope_decryptor, each appending to a
// buffer the caller reuses, so the figure is the frames' cost and not an allocator's.
// `vs_openssl_speed_16k`: bytes per second over `openssl speed`'s 16 KiB figure.
constexpr std::size_t stream_bytes = 16U << 20U;
constexpr std::size_t stream_chunk = 64U << 10U;

// `bytes` per iteration as bytes_per_second, and over `openssl speed`'s figure at `peer_size`
// in this run as `counter` (the rate from wall time since `start`).
void report_vs_openssl(benchmark::State& state, std::chrono::steady_clock::time_point start,
                       std::size_t bytes, int peer_size, const char* counter) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  state.counters["bytes_per_second"] =
      benchmark::Counter(static_cast<double>(bytes), benchmark::Counter::kIsIterationInvariantRate);
  const auto peer = peer_figures().find(peer_size);
  if (peer != peer_figures().end() && peer->second > 0 && seconds > 0) {
    const double rate = static_cast<double>(bytes) * static_cast<double>(state.iterations()) / seconds;
    state.counters[counter] = rate / peer->second;
  }
}

void report_stream(benchmark::State& state, std::chrono::steady_clock::time_point start) {
  report_vs_openssl(state, start, stream_bytes, 16 * 1024, "vs_openssl_speed_16k");
}

void envelope_stream_seal(benchmark::State& state) {
  crypto::keyring ring("bench");
  ring.rotate();
  crypto::kms* keys[] = {&ring};
  const keel::bytes chunk(stream_chunk, 0x5A);
  keel::bytes out;
  out.reserve(2 * stream_chunk);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto encryptor = crypto::envelope_encryptor::start(keys, {{"tenant", "bench"}}, stream_chunk).value();
    for (std::size_t done = 0; done < stream_bytes; done += stream_chunk) {
      out.clear();
      if (!encryptor.update(chunk, out)) state.SkipWithError("update failed");
      benchmark::DoNotOptimize(out.data());
    }
    out.clear();
    if (!encryptor.finish(out)) state.SkipWithError("finish failed");
  }
  report_stream(state, start);
}
BENCHMARK(envelope_stream_seal)->MinTime(1.0);

void envelope_stream_open(benchmark::State& state) {
  crypto::keyring ring("bench");
  ring.rotate();
  crypto::kms* keys[] = {&ring};
  const keel::bytes plaintext(stream_bytes, 0x5A);
  const auto envelope =
      crypto::encrypt(keys, plaintext, {{"tenant", "bench"}}, {.frame_size = stream_chunk}).value();
  keel::bytes out;
  out.reserve(2 * stream_chunk);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    crypto::envelope_decryptor decryptor(keys);
    for (std::size_t at = 0; at < envelope.size(); at += stream_chunk) {
      out.clear();
      const auto piece = keel::bytes_view(envelope).subspan(at, std::min(stream_chunk, envelope.size() - at));
      if (!decryptor.update(piece, out)) state.SkipWithError("update failed");
      benchmark::DoNotOptimize(out.data());
    }
    if (!decryptor.finish()) state.SkipWithError("finish failed");
  }
  report_stream(state, start);
}
BENCHMARK(envelope_stream_open)->MinTime(1.0);

// The same 1 KiB round trip with a data-key cache: the wrap and the unwrap happen once, each
// message still derives its own content key.
void envelope_round_trip_cached(benchmark::State& state) {
  crypto::keyring ring("bench");
  ring.rotate();
  crypto::kms* keys[] = {&ring};
  crypto::data_key_cache cache;
  const keel::bytes plaintext(1024, 0x5A);
  for (auto _ : state) {
    auto sealed = crypto::encrypt(keys, plaintext, {{"tenant", "bench"}}, {.cache = &cache});
    auto opened = crypto::decrypt(keys, sealed.value(), {.cache = &cache});
    benchmark::DoNotOptimize(opened);
  }
  state.counters["bytes_per_second"] =
      benchmark::Counter(1024, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(envelope_round_trip_cached)->MinTime(1.0);

// One direction of the cached 1 KiB envelope, the headline: `vs_openssl_speed_1k` is
// bytes per second over `openssl speed -evp aes-256-gcm`'s 1 KiB figure (encryption; OpenSSL's
// decryption speed is the same within noise), measured in this run.
void report_1k(benchmark::State& state, std::chrono::steady_clock::time_point start) {
  report_vs_openssl(state, start, 1024, 1024, "vs_openssl_speed_1k");
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}

void envelope_seal_cached(benchmark::State& state) {
  crypto::keyring ring("bench");
  ring.rotate();
  crypto::kms* keys[] = {&ring};
  crypto::data_key_cache cache;
  const keel::bytes plaintext(1024, 0x5A);
  const crypto::encryption_context context{{"tenant", "bench"}};
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto sealed = crypto::encrypt(keys, plaintext, context, {.cache = &cache});
    benchmark::DoNotOptimize(sealed);
  }
  report_1k(state, start);
}
BENCHMARK(envelope_seal_cached)->MinTime(1.0);

void envelope_open_cached(benchmark::State& state) {
  crypto::keyring ring("bench");
  ring.rotate();
  crypto::kms* keys[] = {&ring};
  crypto::data_key_cache cache;
  const auto sealed = crypto::encrypt(keys, keel::bytes(1024, 0x5A), {{"tenant", "bench"}}).value();
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto opened = crypto::decrypt(keys, sealed, {.cache = &cache});
    benchmark::DoNotOptimize(opened);
  }
  report_1k(state, start);
}
BENCHMARK(envelope_open_cached)->MinTime(1.0);

// Rewrap after a rotation: unwrap, verify the header, wrap under the new version; the body untouched.
void envelope_rewrap(benchmark::State& state) {
  crypto::keyring ring("bench");
  ring.rotate();
  crypto::kms* keys[] = {&ring};
  const auto sealed = crypto::encrypt(keys, keel::bytes(1024, 0x5A), {{"tenant", "bench"}}).value();
  ring.rotate();
  for (auto _ : state) {
    auto rewrapped = crypto::rewrap(keys, keys, sealed);
    benchmark::DoNotOptimize(rewrapped);
  }
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(envelope_rewrap)->MinTime(1.0);

void hkdf_sha256_32_bytes(benchmark::State& state) {
  const auto ikm = crypto::secret_bytes::random(32);
  const auto salt = crypto::random_bytes(32);
  for (auto _ : state) {
    auto key =
        crypto::hkdf(crypto::hash_algorithm::sha256, ikm.view(), salt, keel::as_bytes("keel bench"), 32);
    benchmark::DoNotOptimize(key);
  }
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(hkdf_sha256_32_bytes)->MinTime(1.0);

void aes_key_wrap_pad_32_bytes(benchmark::State& state) {
  const auto kek = crypto::secret_bytes::random(32);
  const auto dek = crypto::secret_bytes::random(32);
  for (auto _ : state) {
    auto wrapped = crypto::aes_key_wrap_pad(kek.view(), dek.view());
    benchmark::DoNotOptimize(wrapped);
  }
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(aes_key_wrap_pad_32_bytes)->MinTime(1.0);

}  // namespace

int main(int argc, char** argv) {
  // The peer first, on an idle machine, as the benchmarks will run.
  for (const int size : {1024, 16 * 1024, 64 * 1024}) peer_figures()[size] = openssl_speed(size);
  std::printf("openssl speed -evp aes-256-gcm: 1 KiB %.0f MB/s, 16 KiB %.0f MB/s, 64 KiB %.0f MB/s\n",
              peer_figures()[1024] / 1e6, peer_figures()[16 * 1024] / 1e6, peer_figures()[64 * 1024] / 1e6);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
