// keel::sync's Yjs rooms driven by real Yjs clients (npm yjs + y-websocket in node,
// tests/sync/yjs_clients.cjs) against a keel::net server on a real Postgres: convergence of
// clients that drop and regain their connection, awareness removed when a socket drops,
// read-only and denied clients, malformed and oversized messages, a room that survives a
// server restart (its tail compacted or not) and a Postgres restart, and two server processes
// serving one room, one of them SIGKILLed mid-session.
#include <keel/crdt/yjs.hpp>
#include <keel/sync.hpp>

#include "support/pg.hpp"
#include "support/subprocess.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace sync = keel::sync;

std::filesystem::path clients_dir() {
  if (const char* dir = std::getenv("KEEL_TEST_CLIENTS_DIR")) return dir;
  return KEEL_TEST_CLIENTS_DIR;
}

// Tokens in the `token` query parameter: w edits, r reads, anything else is denied.
sync::access by_token(std::string_view, const keel::net::request& upgrade) {
  const auto token = upgrade.query_param("token");
  if (token == "w") return sync::access::read_write;
  if (token == "r") return sync::access::read_only;
  return sync::access::denied;
}

// A keel server with the rooms mounted, on a port of its own, over one schema's tables.
struct sync_server {
  keel::pg::pool pool;
  // Messages up to 256 KiB, so that the oversized one is refused while it is all in flight.
  keel::net::server server{
      {.address = "127.0.0.1", .port = 0, .threads = 2, .websocket = {.max_message_bytes = 256 * 1024}}};
  std::shared_ptr<sync::rooms> rooms;

  explicit sync_server(const std::string& conninfo, std::size_t compact_after = 200)
      : pool({.conninfo = conninfo, .max_size = 4}) {
    rooms = sync::rooms::mount(server,
                               {.authorize = by_token, .pool = &pool, .compact_after_updates = compact_after})
                .value();
    REQUIRE(server.start());
  }
  ~sync_server() {
    server.stop();
    server.wait();
  }
  sync_server(const sync_server&) = delete;
  sync_server& operator=(const sync_server&) = delete;

  [[nodiscard]] std::string url() const {
    return "ws://127.0.0.1:" + std::to_string(server.port()) + "/sync";
  }
};

boost::json::object run_clients(const std::string& arguments) {
  const auto ran = keel::test::run_command("KEEL_TEST_CLIENTS_DIR='" + clients_dir().string() + "' node '" +
                                           KEEL_TEST_SOURCE_DIR "/sync/yjs_clients.cjs' " + arguments);
  INFO("yjs_clients.cjs " << arguments << " said:\n" << ran.output.substr(0, 3000));
  REQUIRE(ran.status == 0);
  const auto line = ran.output.rfind("\n{");
  const auto start = line == std::string::npos ? ran.output.find('{') : line + 1;
  REQUIRE(start != std::string::npos);
  return boost::json::parse(std::string_view(ran.output).substr(start)).as_object();
}

std::string text_of(const boost::json::object& o, const char* field) {
  return std::string(o.at(field).as_string());
}

// A process with its stdin and stdout (and stderr) on pipes to the test: a sync server process
// (examples/sync/yjs_server.cpp), or node running a scenario the test steps through. A thread
// reads what it writes as it comes, so that it never blocks on a full pipe. Killed with SIGKILL
// and reaped if the test did not wait for it.
class piped_process {
 public:
  explicit piped_process(std::vector<std::string> args) {
    std::array<int, 2> to_child{}, from_child{};
    REQUIRE(::pipe(to_child.data()) == 0);
    REQUIRE(::pipe(from_child.data()) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], 0);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], 1);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], 2);
    posix_spawn_file_actions_addclose(&actions, to_child[1]);
    posix_spawn_file_actions_addclose(&actions, from_child[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int spawned = ::posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(to_child[0]);
    ::close(from_child[1]);
    input_ = to_child[1];
    REQUIRE(spawned == 0);
    reader_ = std::thread([this, output = from_child[0]] {
      std::array<char, 4096> chunk{};
      for (ssize_t n; (n = ::read(output, chunk.data(), chunk.size())) > 0;) {
        const std::lock_guard guard(lock_);
        said_.append(chunk.data(), static_cast<std::size_t>(n));
        arrived_.notify_all();
      }
      ::close(output);
      const std::lock_guard guard(lock_);
      ended_ = true;
      arrived_.notify_all();
    });
  }
  piped_process(const piped_process&) = delete;
  piped_process& operator=(const piped_process&) = delete;
  ~piped_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      (void)wait();
    }
    ::close(input_);
    reader_.join();  // the pipe ends with the process
  }

  // The next line it writes that starts with `prefix`, or "" if none came within `timeout` or
  // it ended first.
  std::string line_starting(std::string_view prefix,
                            std::chrono::seconds timeout = std::chrono::seconds(60)) {
    std::unique_lock guard(lock_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      for (auto end = said_.find('\n', read_); end != std::string::npos; end = said_.find('\n', read_)) {
        auto line = said_.substr(read_, end - read_);
        read_ = end + 1;
        if (line.starts_with(prefix)) return line;
      }
      if (ended_ || arrived_.wait_until(guard, deadline) == std::cv_status::timeout) return {};
    }
  }
  // Everything it wrote so far, for failure messages.
  std::string said() {
    const std::lock_guard guard(lock_);
    return said_;
  }
  void write_line(const std::string& line) const {
    const auto text = line + "\n";
    REQUIRE(::write(input_, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  }
  void kill(int signal) const { ::kill(pid_, signal); }
  // Waits for it to end. @returns the status as from waitpid().
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
  int input_ = -1;
  std::thread reader_;
  std::mutex lock_;
  std::condition_variable arrived_;
  std::string said_;
  std::size_t read_ = 0;
  bool ended_ = false;
};

#ifdef KEEL_SYNC_SERVER
// A sync server process on `conninfo`: its URL once it listens.
std::string started_url(piped_process& server) {
  const auto line = server.line_starting("listening on ");
  INFO("the sync server process said:\n" << server.said());
  REQUIRE(!line.empty());
  return "ws://127.0.0.1:" + line.substr(std::string_view("listening on ").size()) + "/sync";
}
#endif

}  // namespace

TEST_SUITE("node") {
  TEST_CASE(
      "three y-websocket clients edit one text, dropping and regaining their connection: they converge") {
    keel::test::scratch_schema schema;
    sync_server s(schema.conninfo, 50);
    for (int seed = 1; seed <= 3; ++seed) {
      CAPTURE(seed);
      const auto room = "converge-" + std::to_string(seed);
      const auto out = run_clients("converge '" + s.url() + "' " + room + " 3 " + std::to_string(seed));
      CHECK(out.at("equal").as_bool());
      CHECK(out.at("length").to_number<int>() > 20);
      CHECK(out.at("disconnects").to_number<int>() > 0);
      // What the server keeps is what the clients hold: a new client reads the same text.
      CHECK(text_of(run_clients("read '" + s.url() + "' " + room), "text") == text_of(out, "text"));
    }
    CHECK(s.rooms->stats().compactions > 0);
    CHECK(s.rooms->stats().messages_refused == 0);
  }

  TEST_CASE("a room survives a server restart: from its tail, and from its compacted document") {
    keel::test::scratch_schema schema;
    {
      sync_server first(schema.conninfo);
      CHECK(text_of(run_clients("write '" + first.url() + "' notes 'kept across restarts'"), "text") ==
            "kept across restarts");
    }
    {
      sync_server second(schema.conninfo);
      CHECK(text_of(run_clients("read '" + second.url() + "' notes"), "text") == "kept across restarts");
      CHECK(second.rooms->stats().rooms_loaded >= 1);
      CHECK(text_of(run_clients("write '" + second.url() + "' notes ', twice'"), "text") ==
            "kept across restarts, twice");
      REQUIRE(second.rooms->compact_now());
      auto c = schema.connect();
      CHECK(c.query("SELECT count(*) FROM keel_sync_updates").value()[0].get<std::int64_t>(0).value() == 0);
    }
    sync_server third(schema.conninfo);
    CHECK(text_of(run_clients("read '" + third.url() + "' notes"), "text") == "kept across restarts, twice");
    // The document, as one Yjs update, from the library too.
    const auto document = third.rooms->document("notes").value();
    CHECK(keel::crdt::yjs::decode_update(document).has_value());
  }

  TEST_CASE("awareness: a cursor reaches the others, and is removed for them when its socket drops") {
    keel::test::scratch_schema schema;
    sync_server s(schema.conninfo);
    const auto out = run_clients("awareness '" + s.url() + "' cursors");
    CHECK(out.at("seen_ms").to_number<double>() >= 0);
    CHECK(out.at("b_states").to_number<int>() == 1);  // its own state only
  }

  TEST_CASE("access per room: read-only edits are dropped and the client told; a denied client is closed") {
    keel::test::scratch_schema schema;
    sync_server s(schema.conninfo);
    const auto out = run_clients("read_only '" + s.url() + "' shared");
    CHECK(text_of(out, "probe") == "from the writer");
    CHECK(text_of(out, "told").find("read-only") != std::string::npos);
    CHECK(s.rooms->stats().updates_dropped_read_only >= 1);
    const auto denied = run_clients("denied '" + s.url() + "' secret");
    CHECK(denied.at("code").to_number<int>() == 1008);
    CHECK(denied.at("told").as_bool());
  }

  TEST_CASE("malformed and oversized messages close their sender with a clear code; the room goes on") {
    keel::test::scratch_schema schema;
    sync_server s(schema.conninfo);
    const auto out = run_clients("malformed '" + s.url() + "' sturdy");
    CHECK(out.at("bad_update").at("code").to_number<int>() == 1002);
    CHECK(std::string(out.at("bad_update").at("reason").as_string()) == "a Yjs update that does not decode");
    CHECK(out.at("truncated").at("code").to_number<int>() == 1002);
    CHECK(out.at("unknown_type").at("code").to_number<int>() == 1002);
    CHECK(out.at("text_frame").at("code").to_number<int>() == 1002);
    CHECK(out.at("oversized").at("code").to_number<int>() == 1009);
    CHECK(text_of(out, "text") == "before after");
  }

#ifdef KEEL_SYNC_SERVER
  TEST_CASE(
      "two server processes serve one room; one is SIGKILLed mid-session and its clients converge on the "
      "other") {
    keel::test::scratch_schema schema;
    for (int seed = 1; seed <= 2; ++seed) {
      CAPTURE(seed);
      const auto room = "processes-" + std::to_string(seed);
      piped_process a({KEEL_SYNC_SERVER, schema.conninfo});
      piped_process b({KEEL_SYNC_SERVER, schema.conninfo});
      const auto url_a = started_url(a);
      const auto url_b = started_url(b);
      const auto out = run_clients("processes '" + url_a + "' '" + url_b + "' " + room + " " +
                                   std::to_string(seed) + " " + std::to_string(a.pid()));
      const auto killed = a.wait();
      // The relay table carried the large ones (kept a while for slow readers).
      CHECK(schema.connect()
                .query("SELECT count(*) FROM keel_sync_relay")
                .value()[0]
                .get<std::int64_t>(0)
                .value() >= 2);
      CHECK((WIFSIGNALED(killed) && WTERMSIG(killed) == SIGKILL));
      CHECK(out.at("equal").as_bool());
      // What A stored, and what its clients typed while it was gone.
      CHECK(text_of(out, "marks") == "offline on A. stored by A.");
      CHECK(out.at("length").to_number<int>() > 20);
      CHECK(out.at("disconnects").to_number<int>() > 0);
      MESSAGE("awareness across the processes in " << out.at("awareness_across_ms").to_number<double>()
                                                   << " ms; a killed process's cursors gone in "
                                                   << out.at("awareness_gone_ms").to_number<double>()
                                                   << " ms");
      b.kill(SIGTERM);
      const auto drained = b.wait();
      INFO("B said:\n" << b.said());
      CHECK((WIFEXITED(drained) && WEXITSTATUS(drained) == 0));
      // Everything is in Postgres: a server started afresh serves the converged text.
      sync_server fresh(schema.conninfo);
      CHECK(text_of(run_clients("read '" + fresh.url() + "' " + room), "text") == text_of(out, "text"));
    }
  }
#endif

  TEST_CASE("Postgres restarts under a session: the room goes on, and what was typed on both sides is kept") {
    auto* cluster = keel::test::cluster();
    if (cluster == nullptr) {
      MESSAGE("KEEL_DATABASE_URL names the server: not restarting it");
      return;
    }
    keel::test::scratch_schema schema;
    std::string text;
    {
      sync_server s(schema.conninfo);
      ::setenv("KEEL_TEST_CLIENTS_DIR", clients_dir().c_str(), 1);
      piped_process clients(
          {"node", KEEL_TEST_SOURCE_DIR "/sync/yjs_clients.cjs", "restart", s.url(), "outage"});
      INFO("yjs_clients.cjs restart said:\n" << clients.said());
      REQUIRE(clients.line_starting("{\"ready\"") != "");
      REQUIRE(cluster->restart());
      clients.write_line("go");
      const auto line = clients.line_starting("{\"text\"");
      REQUIRE(!line.empty());
      text = text_of(boost::json::parse(line).as_object(), "text");
      CHECK(text == "before the restart, after it");
      CHECK((WIFEXITED(clients.wait())));
      // The listener for the other processes came back and caught the open room up.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (s.rooms->stats().catch_ups == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
      CHECK(s.rooms->stats().catch_ups >= 1);
    }
    sync_server again(schema.conninfo);
    CHECK(text_of(run_clients("read '" + again.url() + "' outage"), "text") == text);
  }
}
