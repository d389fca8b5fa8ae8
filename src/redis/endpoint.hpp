#pragma once
// Where to connect: options' host as an address, or resolved (blocking) when it is a name.
#include <keel/core/result.hpp>
#include <keel/redis/error.hpp>
#include <keel/redis/options.hpp>

#include <boost/asio/ip/tcp.hpp>

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

}  // namespace keel::redis::detail
