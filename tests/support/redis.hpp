#pragma once
// A private redis-server for `redis` tests: started on 127.0.0.1 on a free port, nothing saved
// to disk, stopped (by pid) when the test is done. stop()/start() let a test kill it mid-run
// and bring it back on the same port.
#include <doctest/doctest.h>

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

namespace keel::test {

/// A port nothing listens on right now (the kernel's pick for port 0).
inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class redis_server {
 public:
  explicit redis_server(std::uint16_t port = free_port()) : port_(port) { start(); }
  ~redis_server() { stop(); }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  [[nodiscard]] bool running() const noexcept { return pid_ > 0; }

  /// Starts redis-server and waits until it answers PING (up to 10 s).
  void start() {
    REQUIRE(pid_ <= 0);
    const std::string port = std::to_string(port_);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      const int quiet = ::open("/dev/null", O_WRONLY);  // its start-up banner would drown the test output
      ::dup2(quiet, 1);
      ::dup2(quiet, 2);
      ::execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      if (ping()) return;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL(
            "redis-server exited at start (is the redis-server package installed? ./keel setup installs it)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL("redis-server did not answer PING on port " << port_ << " within 10 s");
  }

  /// Kills it (SIGKILL: like a crash, nothing saved) and waits for it to be gone.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  /// True when a PING on a fresh connection is answered +PONG.
  [[nodiscard]] bool ping() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port_);
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      const char ping_command[] = "PING\r\n";
      if (::write(fd, ping_command, sizeof ping_command - 1) == sizeof ping_command - 1) {
        char reply[16] = {};
        ok = ::read(fd, reply, sizeof reply) >= 5 && std::string(reply, 5) == "+PONG";
      }
    }
    ::close(fd);
    return ok;
  }

 private:
  std::uint16_t port_;
  pid_t pid_ = -1;
};

}  // namespace keel::test
