#pragma once
// A stand-in for a misbehaving Redis: a TCP server on 127.0.0.1 for client tests.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace keel::test {

// A TCP server on 127.0.0.1 that answers the first request on one connection with `reply`,
// sent in chunks of `chunk` bytes, then either closes or stays silent.
class fake_server {
 public:
  fake_server(std::string reply, std::size_t chunk, bool close_after) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_, 4) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, reply = std::move(reply), chunk, close_after] {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      char buf[4096];
      if (::read(fd, buf, sizeof buf) <= 0) return (void)::close(fd);
      for (std::size_t at = 0; at < reply.size(); at += chunk) {
        const auto n = std::min(chunk, reply.size() - at);
        if (::write(fd, reply.data() + at, n) != static_cast<ssize_t>(n)) break;
        if (chunk < reply.size()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      if (!close_after) {
        std::unique_lock lock(mutex_);
        stopping_.wait(lock, [this] { return done_; });
      }
      ::close(fd);
    });
  }
  ~fake_server() {
    {
      std::lock_guard guard(mutex_);
      done_ = true;
    }
    stopping_.notify_one();
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    thread_.join();
  }
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }

 private:
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::mutex mutex_;
  std::condition_variable stopping_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace keel::test
