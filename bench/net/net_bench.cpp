// keel::net benchmarks: HTTP requests per second with keep-alive against an in-process server on
// loopback (headline: requests_per_second), and the metrics hot path.
#include <keel/net.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <memory>
#include <string>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// One keep-alive connection, one request in flight: the latency-bound figure a single client sees.
void http_keepalive(benchmark::State& state) {
  keel::net::server server({.port = 0, .threads = 2});
  server.get("/hello/{name}", [](const keel::net::request& req) {
    return keel::net::json_response({{"hello", req.path_param("name").value_or("world")}});
  });
  if (auto started = server.start(); !started) {
    state.SkipWithError(started.error().message().c_str());
    return;
  }
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  http::request<http::string_body> req(http::verb::get, "/hello/bench", 11);
  req.set(http::field::host, "127.0.0.1");
  beast::flat_buffer buffer;
  for (auto _ : state) {
    http::write(stream, req);
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    if (res.result_int() != 200) state.SkipWithError("unexpected status");
    benchmark::DoNotOptimize(res.body().data());
  }
  state.counters["requests_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  server.stop();
  server.wait();
}
BENCHMARK(http_keepalive)->UseRealTime()->MinTime(2.0);

keel::metrics::registry& shared_registry() {
  static keel::metrics::registry registry;
  return registry;
}

// The hot path: a child resolved once, then one atomic add per increment.
void counter_inc(benchmark::State& state) {
  auto& child =
      shared_registry().add_counter("bench_requests_total", "Bench.", {"route"}).labels({"/jobs/{id}"});
  for (auto _ : state) child.inc();
  state.counters["increments_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(counter_inc)->Threads(1)->Threads(2);

// Resolving the child on every call (a shared-lock map lookup): what the hot path avoids.
void counter_labels_lookup_inc(benchmark::State& state) {
  auto& family = shared_registry().add_counter("bench_lookups_total", "Bench.", {"method", "route"});
  for (auto _ : state) family.labels({"GET", "/jobs/{id}"}).inc();
  state.counters["increments_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(counter_labels_lookup_inc)->Threads(1)->Threads(2);

void histogram_observe(benchmark::State& state) {
  auto& child = shared_registry().add_histogram("bench_duration_seconds", "Bench.", {"route"}).labels({"/x"});
  double v = 0.0001;
  for (auto _ : state) {
    child.observe(v);
    v = v > 20 ? 0.0001 : v * 1.7;
  }
  state.counters["observations_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(histogram_observe)->Threads(1)->Threads(2);

}  // namespace
