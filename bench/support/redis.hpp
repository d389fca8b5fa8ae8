#pragma once
// The redis-server a benchmark runs against: started once per binary on 127.0.0.1 on a free
// port, nothing saved to disk, stopped (by pid) when the benchmark exits. Benchmarks that need
// it skip with `error` when it cannot start.
#include <keel/redis/connection.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <string>
#include <thread>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace keel::bench {

class redis_process {
 public:
  /// The one server of this binary, started on first use.
  static redis_process& shared() {
    static redis_process instance;
    return instance;
  }

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  /// Empty when the server answers; otherwise why it does not.
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

  redis_process(const redis_process&) = delete;
  redis_process& operator=(const redis_process&) = delete;
  ~redis_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }

 private:
  redis_process() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                       ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
    ::close(fd);
    if (!bound) {
      error_ = "no free port on 127.0.0.1";
      return;
    }
    port_ = ntohs(addr.sin_port);
    const std::string port_text = std::to_string(port_);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int quiet = ::open("/dev/null", O_WRONLY);  // its banner would drown the results
      ::dup2(quiet, 1);
      ::dup2(quiet, 2);
      ::execlp("redis-server", "redis-server", "--port", port_text.c_str(), "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Polled: there is no event for "accepts connections" but answering one.
    for (int i = 0; i < 200; ++i) {
      if (auto c = redis::connection::connect({.port = port_})) {
        if (auto pong = c->command({"PING"}); pong && pong->text == "PONG") return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    error_ = "redis-server did not start (is the redis-server package installed? ./keel setup installs it)";
  }

  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  std::string error_;
};

}  // namespace keel::bench
