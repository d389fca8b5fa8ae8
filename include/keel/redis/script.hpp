#pragma once
/// @file keel/redis/script.hpp
/// @brief A Lua script run by EVALSHA, loaded again (SCRIPT LOAD) whenever Redis answers
/// NOSCRIPT: after a restart, a failover or a SCRIPT FLUSH.
#include <keel/core/result.hpp>
#include <keel/redis/resp.hpp>

#include <span>
#include <string>
#include <string_view>

namespace keel::redis {

class connection;
class client;

/// A Lua script and its SHA-1, computed once here so that the first call needs no SCRIPT LOAD
/// round trip. Cheap to share, not to copy (it holds the body): keep one per script, e.g. a
/// member or a function-local static.
class script {
 public:
  explicit script(std::string body);

  [[nodiscard]] std::string_view body() const noexcept { return body_; }
  /// Lower-case hex, as EVALSHA takes it.
  [[nodiscard]] std::string_view sha1() const noexcept { return sha1_; }

  /// Appends `EVALSHA <sha1> <#keys> keys... args...` to `out` (for client::submit_script and
  /// pipelines of several calls).
  void append_call(std::string& out, std::span<const std::string_view> keys,
                   std::span<const std::string_view> args) const;

  /// Runs the script on `c` and returns its reply (a Lua error is an error value, as for any
  /// command). On NOSCRIPT the script is loaded and run once more: NOSCRIPT means it did not run.
  [[nodiscard]] result<resp_value> run(connection& c, std::span<const std::string_view> keys,
                                       std::span<const std::string_view> args) const;
  /// The same on a client (blocking the calling thread, not the client's I/O thread).
  [[nodiscard]] result<resp_value> run(client& c, std::span<const std::string_view> keys,
                                       std::span<const std::string_view> args) const;

  /// True for Redis's answer to an EVALSHA of a script it does not hold.
  [[nodiscard]] static bool is_noscript(const resp_value& reply) noexcept;

 private:
  std::string body_;
  std::string sha1_;
};

}  // namespace keel::redis
