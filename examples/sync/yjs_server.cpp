// A Yjs server on Postgres: y-websocket clients (browsers, node) edit rooms at
// ws://127.0.0.1:<port>/sync/<room>; the rooms are kept in Postgres, and several of these
// processes on the same database serve the same rooms together (docs/sync.md).
//
//   sync_yjs_server <conninfo> [port]     port 0 (the default) picks a free one
//
// It prints "listening on <port>" once clients can connect, and drains on SIGINT or SIGTERM.
#include <keel/sync.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s <postgres conninfo> [port]\n", argv[0]);
    return 2;
  }
  const auto port = argc == 3 ? std::atoi(argv[2]) : 0;
  if (port < 0 || port > 65535) {
    std::fprintf(stderr, "the port is a number from 0 to 65535, not %s\n", argv[2]);
    return 2;
  }
  keel::pg::pool pool({.conninfo = argv[1], .max_size = 8});
  keel::net::server server(
      {.address = "127.0.0.1", .port = static_cast<std::uint16_t>(port), .handle_signals = true});
  auto rooms = keel::sync::rooms::mount(server, {.pool = &pool});
  if (!rooms) {
    std::fprintf(stderr, "the rooms could not start: %s\n", rooms.error().message().c_str());
    return 1;
  }
  if (auto started = server.start(); !started) {
    std::fprintf(stderr, "the server could not start: %s\n", started.error().message().c_str());
    return 1;
  }
  std::printf("listening on %u\n", static_cast<unsigned>(server.port()));
  std::fflush(stdout);
  server.wait();
  return 0;
}
