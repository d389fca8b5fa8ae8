// A writer or projector process for the events reliability test (events_test.cpp starts them,
// SIGKILLs one, restarts Postgres under them).
//   keel_events_test_process write <conninfo> <writer> <events>   appends in batches of 100, exits 0
//   keel_events_test_process project <conninfo>                    runs the "totals" projection until SIGTERM
//   keel_events_test_process consume <conninfo> <member>            a member of group "workers" until
//   SIGTERM,
//                                                                   recording what it handles in
//                                                                   test_consumed
// Writers give every event a deterministic id, so a batch whose commit was lost with the
// connection is re-sent and found already appended: each event is stored once.
#include <keel/events.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace ev = keel::events;
using namespace std::chrono_literals;

std::atomic<bool> terminate_requested{false};

keel::pg::uuid event_id(int writer, int index) {
  keel::pg::uuid u;
  for (int k = 0; k < 4; ++k) {
    u.bytes[static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(writer >> (8 * (3 - k)));
    u.bytes[static_cast<std::size_t>(12 + k)] = static_cast<std::uint8_t>(index >> (8 * (3 - k)));
  }
  u.bytes[6] = 0x40;
  u.bytes[8] = 0x80;
  return u;
}

int write(const std::string& conninfo, int writer, int count) {
  const ev::store store;
  std::optional<keel::pg::connection> c;
  constexpr int per_batch = 100;
  for (int first = 0; first < count;) {
    if (!c || !c->is_open()) {
      auto opened = keel::pg::connection::connect(conninfo);
      if (!opened) {
        std::this_thread::sleep_for(50ms);  // Postgres restarting: try again
        continue;
      }
      c.emplace(std::move(*opened));
    }
    const auto stream = "acct-" + std::to_string(writer) + "_" + std::to_string((first / per_batch) % 50);
    std::vector<ev::new_event> batch;
    for (int i = first; i < first + per_batch && i < count; ++i) {
      batch.push_back({.id = event_id(writer, i),
                       .type = "deposited",
                       .data = R"({"n": )" + std::to_string(i % 1000) + "}"});
    }
    auto appended = store.append(*c, stream, ev::expected_version::any(), batch);
    if (!appended) {
      std::this_thread::sleep_for(10ms);
      continue;  // the same batch again, same ids
    }
    first += static_cast<int>(batch.size());
  }
  return 0;
}

int project(const std::string& conninfo) {
  ev::projection totals(
      {.conninfo = conninfo,
       .name = "totals",
       .category = "acct",
       .batch_size = 1000,
       .poll_interval = 100ms,
       .min_retry_delay = 10ms,
       .max_retry_delay = 500ms},
      [](keel::pg::connection& c, std::span<const ev::recorded_event> batch) -> keel::result<void> {
        // Set-based: one statement per batch, as a fast read model would do it.
        std::vector<std::string> streams, data;
        for (const auto& e : batch) {
          streams.push_back(e.stream);
          data.push_back(e.data);
        }
        auto done = c.query(R"sql(
          INSERT INTO test_totals AS t (stream, events, total)
          SELECT s, count(*), sum((d::jsonb ->> 'n')::bigint) FROM unnest($1::text[], $2::text[]) AS x(s, d) GROUP BY s
          ON CONFLICT (stream) DO UPDATE SET events = t.events + excluded.events, total = t.total + excluded.total)sql",
                            streams, data);
        if (!done) return done.error();
        return {};
      });
  if (auto started = totals.start(); !started) {
    std::fprintf(stderr, "projector did not start: %s\n", started.error().message().c_str());
    return 2;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  while (!terminate_requested.load()) std::this_thread::sleep_for(20ms);
  totals.stop();
  return 0;
}

int consume(const std::string& conninfo, const std::string& member) {
  auto c = keel::pg::connection::connect(conninfo);
  if (!c) return 2;
  ev::consumer worker({.conninfo = conninfo,
                       .group = "workers",
                       .member = member,
                       .partitions = 8,
                       .session_timeout = 1500ms,
                       .heartbeat_interval = 100ms,
                       .page_size = 25,
                       .poll_interval = 100ms},
                      [&](const ev::recorded_event& e) -> keel::result<void> {
                        // The handler's connection is the process's own: it records, in order.
                        auto done = c->query(
                            "INSERT INTO test_consumed (member, stream, version) VALUES ($1, $2, $3)", member,
                            e.stream, e.version);
                        if (!done) return done.error();
                        return {};
                      });
  if (auto started = worker.start(); !started) {
    std::fprintf(stderr, "consumer %s did not start: %s\n", member.c_str(),
                 started.error().message().c_str());
    return 2;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  while (!terminate_requested.load()) std::this_thread::sleep_for(20ms);
  worker.stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGTERM, [](int) { terminate_requested = true; });
  if (argc >= 5 && std::string(argv[1]) == "write")
    return write(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  if (argc >= 3 && std::string(argv[1]) == "project") return project(argv[2]);
  if (argc >= 4 && std::string(argv[1]) == "consume") return consume(argv[2], argv[3]);
  std::fprintf(
      stderr,
      "usage: %s write <conninfo> <writer> <events> | project <conninfo> | consume <conninfo> <member>\n",
      argv[0]);
  return 64;
}
