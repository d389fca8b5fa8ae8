// docs/jobs_http.md quotes this file; it is built with the examples.
#include <keel/jobs.hpp>
#include <keel/jobs_http.hpp>
#include <keel/net.hpp>
#include <keel/pg/local_cluster.hpp>
#include <keel/pg/pool.hpp>

#include <cstdlib>

int main() {
  auto cluster = keel::pg::local_cluster::start().value();
  auto c = keel::pg::connection::connect(cluster.conninfo()).value();
  keel::jobs::migrate(c).value();

  keel::pg::pool pool({.conninfo = cluster.conninfo()});
  keel::net::server server({.port = 8080, .handle_signals = true});
  // Anyone who reaches the server may look; retry, cancel, discard, pause and enqueue need a
  // loopback peer or this bearer token.
  const char* token = std::getenv("JOBS_ACTION_TOKEN");
  keel::jobs_http::mount(server, pool, {.action_token = token != nullptr ? token : ""});
  server.run().value();  // http://127.0.0.1:8080/jobs until SIGINT
}
