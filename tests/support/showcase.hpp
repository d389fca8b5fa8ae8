#pragma once
// The showcase executable (examples/showcase) as a child process on a free port, against a
// given database, as `./keel demo` would run it; for tests that drive its pages in a browser.
// KEEL_SHOWCASE_EXECUTABLE names the binary (set by tests/CMakeLists.txt).
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace keel::test {

// The showcase on a free port; its first line of output names the port.
struct showcase_process {
  pid_t pid = -1;
  std::FILE* output = nullptr;
  std::string url;

  // `data_dir` holds the showcase's state (the ledger's signing key, the keyring); a fresh
  // temporary directory, removed afterwards, when empty.
  explicit showcase_process(const std::string& database_url, const std::string& data_dir = {}) {
    std::string state = data_dir;
    if (state.empty()) {
      std::string made = (std::filesystem::temp_directory_path() / "keel-showcase-XXXXXX").string();
      REQUIRE(::mkdtemp(made.data()) != nullptr);
      own_state_dir = made;
      state = made + "/pg";
    }
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string_view(*e).starts_with("KEEL_DATABASE_URL=")) continue;
      env_strings.emplace_back(*e);
    }
    env_strings.push_back("KEEL_DATABASE_URL=" + database_url);
    env_strings.emplace_back("KEEL_LOG=warn");
    std::vector<char*> env;
    for (auto& s : env_strings) env.push_back(s.data());
    env.push_back(nullptr);
    std::string exe = KEEL_SHOWCASE_EXECUTABLE;
    std::string port_flag = "--port", port = "0", dir_flag = "--data-dir", dir = state;
    std::vector<char*> argv{exe.data(), port_flag.data(), port.data()};
    if (!dir.empty()) {
      argv.push_back(dir_flag.data());
      argv.push_back(dir.data());
    }
    argv.push_back(nullptr);
    REQUIRE(::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), env.data()) == 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    output = ::fdopen(pipe_fds[0], "r");
    char line[512];
    while (std::fgets(line, sizeof line, output) != nullptr) {
      const std::string text = line;
      if (const auto at = text.find("http://"); at != std::string::npos) {
        url = text.substr(at, text.find('/', at + 7) - at);
        break;
      }
    }
    REQUIRE_MESSAGE(!url.empty(), "the showcase did not start");
  }
  showcase_process(const showcase_process&) = delete;
  showcase_process& operator=(const showcase_process&) = delete;
  ~showcase_process() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
    if (output != nullptr) std::fclose(output);
    if (!own_state_dir.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(own_state_dir, ignored);
    }
  }
  std::string own_state_dir;
};

}  // namespace keel::test
