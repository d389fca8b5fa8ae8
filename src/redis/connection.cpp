#include <keel/core/log.hpp>
#include <keel/redis/connection.hpp>

#include "endpoint.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <chrono>

namespace keel::redis {
namespace asio = boost::asio;

// Synchronous calls with deadlines: each operation is started asynchronously on the
// connection's own io_context, which is then run until it completes or the deadline passes
// (then the socket is closed and the connection marked unhealthy).
struct connection::impl {
  asio::io_context io{1};
  asio::ip::tcp::socket socket{io};
  std::string input;  // bytes read but not parsed yet
  bool healthy = true;
  std::chrono::milliseconds command_timeout{500};

  // Runs the io_context until `done` or the deadline; false on timeout.
  bool run_until(const bool& done, std::chrono::steady_clock::time_point deadline) {
    io.restart();
    while (!done) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline || io.run_one_for(deadline - now) == 0) {
        if (done) break;
        healthy = false;
        error_code ignored;
        socket.close(ignored);
        io.restart();
        io.run();  // let the cancelled operation finish before its buffers go away
        return false;
      }
    }
    return true;
  }

  result<void> write_all(std::string_view bytes, std::chrono::steady_clock::time_point deadline) {
    bool done = false;
    error_code result_ec;
    asio::async_write(socket, asio::buffer(bytes.data(), bytes.size()), [&](error_code ec, std::size_t) {
      result_ec = ec;
      done = true;
    });
    if (!run_until(done, deadline)) return errc::timeout;
    if (result_ec) {
      healthy = false;
      return errc::connection_lost;
    }
    return {};
  }

  result<resp_value> read_reply(std::chrono::steady_clock::time_point deadline) {
    char buffer[16 * 1024];
    while (true) {
      resp_value value;
      std::size_t consumed = 0;
      switch (resp_parser::parse(input, consumed, value)) {
        case resp_parser::status::complete:
          input.erase(0, consumed);
          return value;
        case resp_parser::status::malformed:
          healthy = false;
          log::warn("malformed reply from Redis; closing the connection",
                    {{"bytes", input.substr(0, std::min<std::size_t>(input.size(), 64))}});
          return errc::protocol_error;
        case resp_parser::status::incomplete:
          break;
      }
      bool done = false;
      error_code result_ec;
      std::size_t got = 0;
      socket.async_read_some(asio::buffer(buffer, sizeof buffer), [&](error_code ec, std::size_t n) {
        result_ec = ec;
        got = n;
        done = true;
      });
      if (!run_until(done, deadline)) return errc::timeout;
      if (result_ec) {
        healthy = false;
        // The server went away, possibly in the middle of a reply.
        return input.empty() ? errc::connection_lost : errc::protocol_error;
      }
      input.append(buffer, got);
    }
  }
};

connection::connection(std::unique_ptr<impl> i) noexcept : impl_(std::move(i)) {}
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;
connection::~connection() = default;

result<connection> connection::connect(const options& options) {
  auto c = std::make_unique<impl>();
  c->command_timeout = options.command_timeout;
  if (const auto failed = detail::connect_socket(*c, options)) return failed;
  connection conn(std::move(c));
  if (!options.password.empty()) {
    auto auth = conn.command({"AUTH", options.password});
    if (!auth) return auth.error();
    if (auth->is_error()) {
      log::warn("Redis refused AUTH", {{"reply", auth->text}});
      return errc::server_error;
    }
  }
  return conn;
}

result<resp_value> connection::command(std::span<const std::string_view> args) {
  if (args.empty()) return errc::invalid_argument;
  std::string encoded;
  append_command(encoded, args);
  auto replies = pipeline(encoded, 1);
  if (!replies) return replies.error();
  return std::move(replies->front());
}

result<std::vector<resp_value>> connection::pipeline(std::string_view encoded, std::size_t count) {
  if (!impl_->healthy) return errc::unavailable;
  const auto deadline = std::chrono::steady_clock::now() + impl_->command_timeout;
  if (auto written = impl_->write_all(encoded, deadline); !written) return written.error();
  std::vector<resp_value> replies;
  replies.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto reply = impl_->read_reply(deadline);
    if (!reply) return reply.error();
    replies.push_back(std::move(*reply));
  }
  return replies;
}

bool connection::healthy() const noexcept {
  return impl_ && impl_->healthy;
}

}  // namespace keel::redis
