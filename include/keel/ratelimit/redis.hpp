#pragma once
/// @file keel/ratelimit/redis.hpp
/// @brief The Redis backend: every decision is one atomic Lua script (EVALSHA, loaded again
/// after a Redis restart), sent over keel's own small RESP2 client on Asio with pipelining and
/// a connection pool. No Asio header is included here.
#include <keel/core/result.hpp>
#include <keel/ratelimit/backend.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::ratelimit {

/// Where Redis is and how long to wait for it.
struct redis_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  /// Sent with AUTH after connecting when not empty.
  std::string password{};
  /// Connections, used in turn; each carries any number of requests in flight.
  std::size_t max_connections = 4;
  std::chrono::milliseconds connect_timeout = std::chrono::milliseconds(500);
  /// For one command or one pipeline, from the first byte sent to the last byte read.
  std::chrono::milliseconds command_timeout = std::chrono::milliseconds(500);
};

/// One RESP2 value.
struct resp_value {
  enum class kind : std::uint8_t { simple_string, error, integer, bulk_string, null, array };
  kind type = kind::null;
  std::string text{};  ///< simple_string, error, bulk_string
  std::int64_t integer = 0;
  std::vector<resp_value> elements{};

  [[nodiscard]] bool is_error() const noexcept { return type == kind::error; }
};

/// An incremental RESP2 reader: strict about the grammar, bounded in sizes and nesting.
class resp_parser {
 public:
  enum class status : std::uint8_t { complete, incomplete, malformed };
  /// Tries to read one value from the front of `data`. On `complete`, `out` is the value and
  /// `consumed` its length in bytes; on `incomplete` more bytes are needed; on `malformed` the
  /// stream cannot be trusted any more (close the connection).
  [[nodiscard]] static status parse(std::string_view data, std::size_t& consumed, resp_value& out);
  /// Bulk strings longer than this are malformed (Redis itself allows 512 MB; we never need it).
  static constexpr std::size_t max_bulk_bytes = 64 * 1024 * 1024;
  static constexpr std::size_t max_array_elements = 1 << 20;
  static constexpr int max_depth = 8;
};

/// Encodes a command as a RESP array of bulk strings.
void append_command(std::string& out, std::span<const std::string_view> args);

/// One connection to Redis. Not thread-safe; the backend pools them.
class redis_connection {
 public:
  /// Connects (and AUTHs). @returns errc::backend_unavailable, timeout or server_error.
  [[nodiscard]] static result<redis_connection> connect(const redis_options& options);
  redis_connection(redis_connection&&) noexcept;
  redis_connection& operator=(redis_connection&&) noexcept;
  ~redis_connection();

  /// Sends one command and reads its reply. A Redis error reply is a value (`is_error()`).
  [[nodiscard]] result<resp_value> command(std::span<const std::string_view> args);
  [[nodiscard]] result<resp_value> command(std::initializer_list<std::string_view> args) {
    return command(std::span<const std::string_view>(args.begin(), args.size()));
  }
  /// Writes `encoded` (several commands built with append_command) at once and reads `count`
  /// replies: one round trip for all of them.
  [[nodiscard]] result<std::vector<resp_value>> pipeline(std::string_view encoded, std::size_t count);
  /// False after a timeout, a malformed reply or a broken connection: do not reuse it.
  [[nodiscard]] bool healthy() const noexcept;

  struct impl;

 private:
  explicit redis_connection(std::unique_ptr<impl> i) noexcept;
  std::unique_ptr<impl> impl_;
};

/// Limit state in Redis, shared by every process that uses the same Redis and keys. Requests
/// run on `max_connections` connections driven by one I/O thread of the backend's own; each
/// connection carries many requests at once (pipelined, answered in order). Time is
/// Redis's own clock (TIME inside the script), so hosts with skewed clocks agree. Keys expire
/// by themselves once their state is idle. All keys of one decision must live on one Redis
/// (no Redis Cluster slot routing).
class redis_backend final : public backend {
 public:
  explicit redis_backend(redis_options options = {});
  ~redis_backend() override;
  redis_backend(const redis_backend&) = delete;
  redis_backend& operator=(const redis_backend&) = delete;

  [[nodiscard]] result<void> decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                    std::span<decision> out) override;
  /// Several independent decisions (each atomic on its own) in one round trip on one connection.
  [[nodiscard]] result<void> decide_batch(std::span<const batch_request> batch);
  /// decide() without blocking: `done(error)` runs on the backend's I/O thread once `out` is
  /// filled (or with the error). `limits` (with their keys) and `out` must stay valid until then.
  /// Requests from all callers share the connections and are pipelined: what arrives while a
  /// write is in flight goes out in the next one.
  void async_decide(std::span<const keyed_limit> limits, std::uint64_t cost, std::span<decision> out,
                    std::function<void(error_code)> done);
  [[nodiscard]] result<void> adjust(const keyed_limit& limit, std::int64_t points) override;
  [[nodiscard]] std::string_view name() const noexcept override { return "redis"; }

  /// The Lua script every decision runs (for `redis-benchmark`-style comparisons and review).
  [[nodiscard]] static std::string_view decide_script() noexcept;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::ratelimit
