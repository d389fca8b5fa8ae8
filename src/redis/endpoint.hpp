#pragma once
// Where to connect: options' host as an address, or resolved (blocking) when it is a name.
#include <keel/core/result.hpp>
#include <keel/redis/error.hpp>
#include <keel/redis/options.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <string>

namespace keel::redis::detail {

template <class Executor>
result<boost::asio::ip::tcp::endpoint> resolve(const Executor& executor, const options& o) {
  error_code ec;
  const auto address = boost::asio::ip::make_address(o.host, ec);
  if (!ec) return boost::asio::ip::tcp::endpoint{address, o.port};
  boost::asio::ip::tcp::resolver resolver(executor);
  const auto found = resolver.resolve(o.host, std::to_string(o.port), ec);
  if (ec || found.empty()) return errc::unavailable;
  return *found.begin();
}

// Connects `session.socket` to `o`'s endpoint within o.connect_timeout, driving the session's
// own io_context with `session.run_until(done, deadline)`; turns Nagle off (commands are
// small and answered one by one). Shared by the connection and the subscriber.
template <class Session>
error_code connect_socket(Session& session, const options& o) {
  const auto endpoint = resolve(session.io.get_executor(), o);
  if (!endpoint) return endpoint.error();
  bool done = false;
  error_code connect_ec;
  session.socket.async_connect(*endpoint, [&](error_code e) {
    connect_ec = e;
    done = true;
  });
  if (!session.run_until(done, std::chrono::steady_clock::now() + o.connect_timeout)) return errc::timeout;
  if (connect_ec) return errc::unavailable;
  error_code ignored;
  session.socket.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
  return {};
}

}  // namespace keel::redis::detail
