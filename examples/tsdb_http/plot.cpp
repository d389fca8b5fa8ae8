// docs/tsdb_http.md quotes this file; it is built with the examples.
#include <keel/net.hpp>
#include <keel/pg/local_cluster.hpp>
#include <keel/tsdb.hpp>
#include <keel/tsdb_http.hpp>

#include <cstdlib>

int main() {
  auto cluster = keel::pg::local_cluster::start().value();
  auto c = keel::pg::connection::connect(cluster.conninfo()).value();
  keel::tsdb::migrate(c).value();

  auto store = keel::tsdb::store::open(cluster.conninfo()).value();
  const auto cpu = store.series("cpu", {{"host", "a"}}).value();
  keel::net::server server({.port = 8080, .handle_signals = true});
  // Anyone who reaches the server may read and plot; ingest needs a loopback peer or this
  // bearer token. /tsdb plots `cpu` unless the request names another series.
  const char* token = std::getenv("TSDB_WRITE_TOKEN");
  keel::tsdb_http::mount(server, store,
                         {.write_token = token != nullptr ? token : "", .default_series = cpu});
  server.run().value();  // http://127.0.0.1:8080/tsdb until SIGINT
}
