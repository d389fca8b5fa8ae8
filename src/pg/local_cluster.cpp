#include <keel/core/log.hpp>
#include <keel/pg/connection.hpp>
#include <keel/pg/local_cluster.hpp>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace keel::pg {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// Runs the watchdog's shell script: when the owning process goes away (its end of the pipe on
// stdin closes, however it died), stop the server and remove the temporary directory.
constexpr const char* watchdog_script = R"sh(
while read -r _; do :; done
pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -INT "$pid"
  i=0
  while [ -e "$1/postmaster.pid" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -rf "$2"
)sh";

std::string read_tail(const fs::path& path, std::size_t max_bytes = 3000) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto text = buffer.str();
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  return text;
}

// Runs argv to completion with stdout and stderr appended to `log`. @returns the exit status.
int run(const std::vector<std::string>& argv, const fs::path& log) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t child = 0;
  const int spawned = posix_spawnp(&child, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return 127;
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

// A process that exited is gone, or a zombie nobody reaped (containers without an init).
bool alive(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close_paren = line.rfind(')');
  return close_paren == std::string::npos || close_paren + 2 >= line.size() || line[close_paren + 2] != 'Z';
}

int read_pid(const fs::path& data_dir) {
  std::ifstream in(data_dir / "postmaster.pid");
  int pid = 0;
  in >> pid;
  return pid;
}

}  // namespace

struct local_cluster::state {
  cluster_options options;
  fs::path root;  ///< private temporary directory: socket, logs, and the data when temporary
  fs::path data_dir;
  std::uint16_t port = 0;
  int pid = 0;
  bool as_root = false;
  uid_t uid = 0;
  gid_t gid = 0;
  int watchdog_pipe = -1;
  pid_t watchdog = -1;

  [[nodiscard]] fs::path command_log() const { return root / "commands.log"; }
  [[nodiscard]] fs::path server_log() const { return root / "server.log"; }

  // Prefixes a command with runuser when root, since Postgres refuses to run as root.
  [[nodiscard]] std::vector<std::string> as_server_user(std::vector<std::string> argv) const {
    if (as_root) argv.insert(argv.begin(), {"runuser", "-u", options.os_user, "--"});
    return argv;
  }

  void give_to_server_user(const fs::path& path) const {
    if (as_root && ::chown(path.c_str(), uid, gid) != 0) {
      log::warn("could not chown a cluster directory", {{"path", path.string()}});
    }
  }

  [[nodiscard]] error_code failure(std::string_view what) const {
    log::error("local postgres cluster failed", {{"step", what},
                                                 {"data_dir", data_dir.string()},
                                                 {"commands_log", read_tail(command_log())},
                                                 {"server_log", read_tail(server_log())}});
    return errc::cluster_failed;
  }

  result<void> init_if_needed() {
    if (fs::exists(data_dir / "PG_VERSION")) return {};
    std::error_code ec;
    fs::create_directories(data_dir, ec);
    if (ec) return failure("create the data directory");
    fs::permissions(data_dir, fs::perms::owner_all, ec);
    give_to_server_user(data_dir);
    const int status =
        run(as_server_user({(options.bin_dir / "initdb").string(), "-D", data_dir.string(), "-U", "postgres",
                            "--auth=trust", "-E", "UTF8", "--locale=C", "-N"}),
            command_log());
    if (status != 0) return failure("initdb");
    return {};
  }

  /// Starts the server on `fixed_port`, or on options.port, or on a free port when both are 0.
  result<void> start_server(std::uint16_t fixed_port = 0) {
    if (int running = read_pid(data_dir); running > 0 && alive(running)) {
      log::error("a postgres server already runs on this data directory",
                 {{"data_dir", data_dir.string()}, {"pid", running}});
      return errc::cluster_failed;
    }
    for (int attempt = 0; attempt < 3; ++attempt) {
      port = fixed_port != 0 ? fixed_port : options.port != 0 ? options.port : free_port();
      std::string settings =
          "-p " + std::to_string(port) + " -k " + root.string() +
          " -c listen_addresses=127.0.0.1 -c max_connections=" + std::to_string(options.max_connections);
      if (!options.durable) settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off";
      const int status =
          run(as_server_user({(options.bin_dir / "pg_ctl").string(), "-D", data_dir.string(), "-l",
                              server_log().string(), "-w", "-t",
                              std::to_string(options.start_timeout.count()), "-s", "-o", settings, "start"}),
              command_log());
      if (status == 0) {
        pid = read_pid(data_dir);
        return {};
      }
      if (fixed_port != 0 || options.port != 0) break;  // a chosen port that is taken stays taken
    }
    return failure("pg_ctl start");
  }

  void stop_server() noexcept {
    if (!alive(pid)) return;
    ::kill(pid, SIGINT);  // fast shutdown: roll back open transactions, terminate sessions
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (alive(pid) && fs::exists(data_dir / "postmaster.pid") &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    if (alive(pid) && fs::exists(data_dir / "postmaster.pid")) {
      log::warn("postgres did not stop in 30 s; killing it", {{"pid", pid}});
      ::kill(pid, SIGKILL);
    }
  }

  void start_watchdog() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[0], 0);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    // Its own process group, so a Ctrl-C aimed at the owner does not take the watchdog too.
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attributes, 0);
    const std::string data = data_dir.string(), dir = root.string();
    const char* argv[] = {"/bin/sh",    "-c",        watchdog_script, "keel-pg-watchdog",
                          data.c_str(), dir.c_str(), nullptr};
    const int spawned =
        posix_spawn(&watchdog, "/bin/sh", &actions, &attributes, const_cast<char* const*>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    ::close(fds[0]);
    if (spawned != 0) {
      ::close(fds[1]);
      watchdog = -1;
      return;
    }
    watchdog_pipe = fds[1];
  }

  void stop() noexcept {
    stop_server();
    pid = 0;
    std::error_code ec;
    fs::remove_all(root, ec);
    if (watchdog_pipe >= 0) {
      ::close(watchdog_pipe);
      watchdog_pipe = -1;
      int status = 0;
      while (::waitpid(watchdog, &status, 0) < 0 && errno == EINTR) {
      }
      watchdog = -1;
    }
  }
};

result<local_cluster> local_cluster::start(cluster_options options) {
  auto s = std::make_unique<state>();
  s->options = std::move(options);
  s->as_root = ::geteuid() == 0;
  if (s->as_root) {
    // getpwnam_r: tests start clusters from several threads at once.
    passwd entry{};
    passwd* user = nullptr;
    std::vector<char> buffer(std::size_t{16} * 1024);
    if (::getpwnam_r(s->options.os_user.c_str(), &entry, buffer.data(), buffer.size(), &user) != 0 ||
        user == nullptr) {
      log::error(
          "the OS user to run postgres as does not exist; install postgresql or set cluster_options::os_user",
          {{"user", s->options.os_user}});
      return errc::cluster_failed;
    }
    s->uid = user->pw_uid;
    s->gid = user->pw_gid;
  }
  std::string root_template = (fs::temp_directory_path() / "keel-pg-XXXXXX").string();
  if (::mkdtemp(root_template.data()) == nullptr) return errc::cluster_failed;
  s->root = root_template;
  s->give_to_server_user(s->root);
  s->data_dir = s->options.data_dir.empty() ? s->root / "data" : fs::absolute(s->options.data_dir);
  s->start_watchdog();

  if (auto r = s->init_if_needed(); !r) {
    s->stop();
    return r.error();
  }
  if (auto r = s->start_server(); !r) {
    s->stop();
    return r.error();
  }
  local_cluster cluster(std::move(s));
  if (cluster.state_->options.database != "postgres") {
    auto created = cluster.create_database(cluster.state_->options.database);
    if (!created && created.error() != errc::unique_violation) return created.error();
  }
  log::debug("local postgres cluster started",
             {{"data_dir", cluster.data_dir().string()}, {"port", cluster.port()}, {"pid", cluster.pid()}});
  return cluster;
}

local_cluster::local_cluster(std::unique_ptr<state> s) noexcept : state_(std::move(s)) {}
local_cluster::local_cluster(local_cluster&&) noexcept = default;
local_cluster& local_cluster::operator=(local_cluster&& other) noexcept {
  if (this != &other) {
    stop();
    state_ = std::move(other.state_);
  }
  return *this;
}
local_cluster::~local_cluster() {
  stop();
}

std::string local_cluster::conninfo() const {
  return conninfo(state_->options.database);
}

std::string local_cluster::conninfo(std::string_view database) const {
  // Values are quoted for libpq's key=value syntax; paths and names never contain quotes here.
  return "host='" + state_->root.string() + "' port=" + std::to_string(state_->port) +
         " user=postgres dbname='" + std::string(database) + "'";
}

std::string local_cluster::tcp_conninfo() const {
  return "host=127.0.0.1 port=" + std::to_string(state_->port) + " user=postgres dbname='" +
         state_->options.database + "'";
}

std::uint16_t local_cluster::port() const noexcept {
  return state_->port;
}
int local_cluster::pid() const noexcept {
  return state_->pid;
}
const fs::path& local_cluster::data_dir() const noexcept {
  return state_->data_dir;
}

result<std::string> local_cluster::create_database(std::string_view name) {
  auto admin = connection::connect(conninfo("postgres"));
  if (!admin) return admin.error();
  auto exists = admin->query("SELECT 1 FROM pg_database WHERE datname = $1", name);
  if (!exists) return exists.error();
  if (!exists->empty()) return errc::unique_violation;
  auto quoted = admin->quote_identifier(name);
  if (!quoted) return quoted.error();
  // CREATE DATABASE takes no parameters; the name is quoted as an identifier.
  if (auto r = admin->execute("CREATE DATABASE " + *quoted); !r) return r.error();
  return conninfo(name);
}

result<void> local_cluster::restart() {
  state_->stop_server();
  return state_->start_server(state_->port);  // clients keep their connection strings
}

void local_cluster::stop() noexcept {
  if (state_) state_->stop();
}

result<server_from_env> local_cluster::from_env(cluster_options options) {
  server_from_env out;
  // getenv is read once here, at start-up of whoever asks; nothing sets it concurrently.
  const char* url = std::getenv("KEEL_DATABASE_URL");  // NOLINT(concurrency-mt-unsafe): see above
  if (url != nullptr && *url != '\0') {
    out.conninfo = url;
    return out;
  }
  auto started = start(std::move(options));
  if (!started) return started.error();
  out.conninfo = started->conninfo();
  out.cluster.emplace(std::move(*started));
  return out;
}

}  // namespace keel::pg
