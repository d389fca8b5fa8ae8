#pragma once
// Child processes: one test case of the current test binary, for what a test cannot observe in
// its own process (start-up behaviour, aborts), helper processes tests start and kill, and
// commands whose output a test reads (CLIs, node scripts, promtool).
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace keel::test {

struct command_outcome {
  int status = -1;     ///< the exit status; -1 when the command was killed by a signal
  std::string output;  ///< its stdout and stderr, together
};

/// Runs `command` with the shell, `input` on its stdin (from a temporary file), and returns its
/// exit status and output. The command is the test's own text, never a user's.
inline command_outcome run_command(const std::string& command, const std::string& input = {}) {
  static std::atomic<int> counter{0};
  const auto path = std::filesystem::temp_directory_path() /
                    ("keel_test_input_" + std::to_string(::getpid()) + "_" + std::to_string(++counter));
  {
    std::ofstream in(path, std::ios::binary);
    in << input;
  }
  command_outcome out;
  const std::string full = command + " < '" + path.string() + "' 2>&1";
  if (FILE* pipe = ::popen(full.c_str(), "r")) {
    std::array<char, 4096> buffer{};
    for (std::size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0;)
      out.output.append(buffer.data(), n);
    const int status = ::pclose(pipe);
    out.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::filesystem::remove(path);
  return out;
}

struct child_outcome {
  int wait_status = 0;  ///< as from waitpid(): use WIFEXITED / WIFSIGNALED
  std::string stderr_text;
};

/// Runs `test_case` of this binary with `environment` added to (or replacing in) the current
/// environment; stdout goes to /dev/null, stderr is returned.
inline child_outcome run_test_case_in_child(
    const std::string& test_case, const std::vector<std::pair<std::string, std::string>>& environment = {}) {
  std::array<int, 2> pipe_fds{};
  REQUIRE(::pipe(pipe_fds.data()) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    bool replaced = false;
    for (const auto& [name, value] : environment) replaced = replaced || entry.starts_with(name + "=");
    if (!replaced) env_strings.emplace_back(entry);
  }
  for (const auto& [name, value] : environment) env_strings.push_back(name + "=" + value);
  std::vector<char*> env;
  for (auto& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  std::string self = "/proc/self/exe";
  std::string filter = "--test-case=" + test_case;
  std::array<char*, 3> argv{self.data(), filter.data(), nullptr};
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  REQUIRE(spawned == 0);
  child_outcome out;
  std::array<char, 4096> buffer{};
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer.data(), buffer.size())) > 0;) {
    out.stderr_text.append(buffer.data(), static_cast<std::size_t>(n));
  }
  ::close(pipe_fds[0]);
  REQUIRE(::waitpid(pid, &out.wait_status, 0) == pid);
  return out;
}

/// A helper process (a test worker) started with `args`, killed with SIGKILL and reaped if the
/// test did not wait for it.
class child_process {
 public:
  child_process(std::string exe, std::vector<std::string> args) {
    std::vector<char*> argv{exe.data()};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(::posix_spawn(&pid_, exe.c_str(), nullptr, nullptr, argv.data(), environ) == 0);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      (void)wait();
    }
  }
  void kill(int signal) const { ::kill(pid_, signal); }
  /// Waits for it to end. @returns the status as from waitpid().
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
};

}  // namespace keel::test
