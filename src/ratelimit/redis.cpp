#include <keel/core/log.hpp>
#include <keel/ratelimit/redis.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <openssl/sha.h>

#include <array>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace keel::ratelimit {
namespace asio = boost::asio;

// ---- RESP2 ---------------------------------------------------------------------------------

namespace {

enum class line_status : std::uint8_t { found, incomplete, malformed };

// The line at `pos` up to CRLF. A bare CR or LF inside a header line is malformed.
line_status read_line(std::string_view data, std::size_t pos, std::string_view& line, std::size_t& next) {
  for (std::size_t i = pos; i < data.size(); ++i) {
    if (data[i] == '\r') {
      if (i + 1 == data.size()) return line_status::incomplete;
      if (data[i + 1] != '\n') return line_status::malformed;
      line = data.substr(pos, i - pos);
      next = i + 2;
      return line_status::found;
    }
    if (data[i] == '\n') return line_status::malformed;
  }
  return line_status::incomplete;
}

bool parse_integer(std::string_view text, std::int64_t& out) {
  if (text.empty() || (text.size() > 1 && text[0] == '+')) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

resp_parser::status parse_at(std::string_view data, std::size_t pos, std::size_t& next, resp_value& out,
                             int depth) {
  using status = resp_parser::status;
  if (depth > resp_parser::max_depth) return status::malformed;
  if (pos >= data.size()) return status::incomplete;
  const char type = data[pos];
  std::string_view line;
  std::size_t after = 0;
  switch (const auto found = read_line(data, pos + 1, line, after); found) {
    case line_status::incomplete:
      return status::incomplete;
    case line_status::malformed:
      return status::malformed;
    case line_status::found:
      break;
  }
  switch (type) {
    case '+':
      out = {.type = resp_value::kind::simple_string, .text = std::string(line)};
      next = after;
      return status::complete;
    case '-':
      out = {.type = resp_value::kind::error, .text = std::string(line)};
      next = after;
      return status::complete;
    case ':': {
      std::int64_t v = 0;
      if (!parse_integer(line, v)) return status::malformed;
      out = {.type = resp_value::kind::integer, .integer = v};
      next = after;
      return status::complete;
    }
    case '$': {
      std::int64_t length = 0;
      if (!parse_integer(line, length) || length < -1 ||
          length > static_cast<std::int64_t>(resp_parser::max_bulk_bytes)) {
        return status::malformed;
      }
      if (length == -1) {
        out = {.type = resp_value::kind::null};
        next = after;
        return status::complete;
      }
      const auto size = static_cast<std::size_t>(length);
      if (data.size() < after + size + 2) return status::incomplete;
      if (data[after + size] != '\r' || data[after + size + 1] != '\n') return status::malformed;
      out = {.type = resp_value::kind::bulk_string, .text = std::string(data.substr(after, size))};
      next = after + size + 2;
      return status::complete;
    }
    case '*': {
      std::int64_t count = 0;
      if (!parse_integer(line, count) || count < -1 ||
          count > static_cast<std::int64_t>(resp_parser::max_array_elements)) {
        return status::malformed;
      }
      if (count == -1) {
        out = {.type = resp_value::kind::null};
        next = after;
        return status::complete;
      }
      resp_value array{.type = resp_value::kind::array};
      std::size_t at = after;
      for (std::int64_t i = 0; i < count; ++i) {
        resp_value element;
        if (const auto s = parse_at(data, at, at, element, depth + 1); s != status::complete) return s;
        array.elements.push_back(std::move(element));
      }
      out = std::move(array);
      next = at;
      return status::complete;
    }
    default:
      return status::malformed;
  }
}

}  // namespace

resp_parser::status resp_parser::parse(std::string_view data, std::size_t& consumed, resp_value& out) {
  std::size_t next = 0;
  const status s = parse_at(data, 0, next, out, 0);
  if (s == status::complete) consumed = next;
  return s;
}

void append_command(std::string& out, std::span<const std::string_view> args) {
  out += '*';
  out += std::to_string(args.size());
  out += "\r\n";
  for (const auto a : args) {
    out += '$';
    out += std::to_string(a.size());
    out += "\r\n";
    out += a;
    out += "\r\n";
  }
}

// ---- connection ------------------------------------------------------------------------------
// Synchronous calls with deadlines: each operation is started asynchronously on the
// connection's own io_context, which is then run until it completes or the deadline passes
// (then the socket is closed and the connection marked unhealthy).

struct redis_connection::impl {
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
      return errc::backend_unavailable;
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
        return input.empty() ? errc::backend_unavailable : errc::protocol_error;
      }
      input.append(buffer, got);
    }
  }
};

redis_connection::redis_connection(std::unique_ptr<impl> i) noexcept : impl_(std::move(i)) {}
redis_connection::redis_connection(redis_connection&&) noexcept = default;
redis_connection& redis_connection::operator=(redis_connection&&) noexcept = default;
redis_connection::~redis_connection() = default;

result<redis_connection> redis_connection::connect(const redis_options& options) {
  auto c = std::make_unique<impl>();
  c->command_timeout = options.command_timeout;
  error_code ec;
  const auto address = asio::ip::make_address(options.host, ec);
  asio::ip::tcp::endpoint endpoint;
  if (!ec) {
    endpoint = {address, options.port};
  } else {
    asio::ip::tcp::resolver resolver(c->io);
    const auto found = resolver.resolve(options.host, std::to_string(options.port), ec);
    if (ec || found.empty()) return errc::backend_unavailable;
    endpoint = *found.begin();
  }
  bool done = false;
  error_code connect_ec;
  c->socket.async_connect(endpoint, [&](error_code e) {
    connect_ec = e;
    done = true;
  });
  if (!c->run_until(done, std::chrono::steady_clock::now() + options.connect_timeout)) return errc::timeout;
  if (connect_ec) return errc::backend_unavailable;
  c->socket.set_option(asio::ip::tcp::no_delay(true), ec);
  redis_connection conn(std::move(c));
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

result<resp_value> redis_connection::command(std::span<const std::string_view> args) {
  std::string encoded;
  append_command(encoded, args);
  auto replies = pipeline(encoded, 1);
  if (!replies) return replies.error();
  return std::move(replies->front());
}

result<std::vector<resp_value>> redis_connection::pipeline(std::string_view encoded, std::size_t count) {
  if (!impl_->healthy) return errc::backend_unavailable;
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

bool redis_connection::healthy() const noexcept {
  return impl_ && impl_->healthy;
}

// ---- the backend -------------------------------------------------------------------------------

namespace {

// KEYS: one per limit. ARGV: cost, then per limit: algorithm, count, period (µs), capacity,
// block (µs). Returns 4 integers per limit: allowed, remaining, reset (µs), retry-after (µs).
// Times come from Redis's own clock. token_bucket is kept as its GCRA equivalent (one
// timestamp): the two decide identically. Nothing is written unless every limit allows, except
// the block marker of a limit that denied.
constexpr std::string_view script = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local n = #KEYS
local out = {}
local commit_a, commit_b, commit_c = {}, {}, {}
local all = true
for i = 1, n do
  local b = 1 + (i - 1) * 5
  local algo, count, period = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local cap, block = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local key = KEYS[i]
  local allowed, remaining, reset, retry = 1, 0, 0, 0
  local blocked_until = nil
  if block > 0 then blocked_until = tonumber(redis.call('GET', key .. ':blk')) end
  if blocked_until and blocked_until > now then
    allowed, remaining, reset, retry = 0, 0, blocked_until - now, blocked_until - now
  elseif algo >= 2 then
    local interval = period / count
    local tolerance = interval * cap
    local base = tonumber(redis.call('GET', key)) or now
    if base < now then base = now end
    local new_tat = base + interval * cost
    local allow_at = new_tat - tolerance
    if now < allow_at then
      allowed, retry = 0, allow_at - now
      remaining, reset = math.floor((now + tolerance - base) / interval + 1e-9), base - now
    else
      remaining, reset = math.floor((now + tolerance - new_tat) / interval + 1e-9), new_tat - now
      commit_a[i] = new_tat
    end
  elseif algo == 1 then
    local w = math.floor(now / period)
    local v = redis.call('HMGET', key, 'w', 'p', 'c')
    local sw, sp, sc = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
    local prev, cur = 0, 0
    if sw == w then prev, cur = sp, sc elseif sw == w - 1 then prev = sc end
    local elapsed = now - w * period
    local carried = prev * (period - elapsed) / period
    local to_end = period - elapsed
    if carried + cur + cost <= count then
      remaining = math.floor(count - carried - cur - cost + 1e-9)
      reset = to_end + period
      commit_a[i], commit_b[i], commit_c[i] = w, prev, cur + cost
    else
      allowed = 0
      remaining = math.max(0, math.floor(count - carried - cur + 1e-9))
      if cur > 0 then reset = to_end + period else reset = to_end end
      if cur + cost <= count then
        retry = math.max(period - math.floor((count - cur - cost) * period / prev) - elapsed, 1)
      else
        retry = to_end + math.max(0, period - math.floor((count - cost) * period / cur))
      end
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
    local used = redis.call('ZCARD', key)
    if used + cost <= count then
      remaining, reset = count - used - cost, period
      commit_a[i] = true
    else
      allowed = 0
      remaining = math.max(0, count - used)
      local oldest = redis.call('ZRANGE', key, used + cost - count - 1, used + cost - count - 1, 'WITHSCORES')
      retry = tonumber(oldest[2]) + period - now
      local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
      reset = tonumber(newest[2]) + period - now
    end
  end
  if allowed == 0 then
    all = false
    if block > 0 and not (blocked_until and blocked_until > now) then
      redis.call('SET', key .. ':blk', string.format('%.0f', now + block), 'PX', math.ceil(block / 1000))
      retry, reset, remaining = math.max(retry, block), math.max(reset, block), 0
    end
  end
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.ceil(retry)
end
for i = 1, n do
  if all then
    local b = 1 + (i - 1) * 5
    local algo, period = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 3])
    local key = KEYS[i]
    if algo >= 2 then
      redis.call('SET', key, string.format('%.0f', commit_a[i]), 'PX', math.ceil((commit_a[i] - now) / 1000) + 1)
    elseif algo == 1 then
      redis.call('HSET', key, 'w', commit_a[i], 'p', commit_b[i], 'c', commit_c[i])
      redis.call('PEXPIRE', key, math.ceil((period - (now - commit_a[i] * period) + period) / 1000) + 1)
    elseif cost > 0 then
      local seq = redis.call('INCRBY', key .. ':seq', cost)
      redis.call('PEXPIRE', key .. ':seq', math.ceil(period / 1000) + 1)
      for j = 1, cost do
        redis.call('ZADD', key, now, string.format('%.0f-%d', now, seq - j))
      end
      redis.call('PEXPIRE', key, math.ceil(period / 1000) + 1)
    end
  elseif out[(i - 1) * 4 + 1] == 1 then
    out[(i - 1) * 4 + 2] = out[(i - 1) * 4 + 2] + cost
  end
end
return out
)lua";

// ARGV: algorithm, count, period (µs), capacity, points. Penalty (> 0) or reward (< 0).
constexpr std::string_view adjust_script = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local algo, count, period = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, points = tonumber(ARGV[4]), tonumber(ARGV[5])
local key = KEYS[1]
if algo == 2 or algo == 3 then
  local interval = period / count
  local tat = tonumber(redis.call('GET', key)) or now
  if points >= 0 then tat = math.max(tat, now) + points * interval else tat = math.max(now, tat + points * interval) end
  if tat > now then
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  else
    redis.call('DEL', key)
  end
elseif algo == 1 then
  local w = math.floor(now / period)
  local v = redis.call('HMGET', key, 'w', 'p', 'c')
  local sw, sp, sc = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
  local prev, cur = 0, 0
  if sw == w then prev, cur = sp, sc elseif sw == w - 1 then prev = sc end
  if points >= 0 then cur = cur + points else
    local give = -points
    local c = math.min(give, cur); cur = cur - c; give = give - c
    prev = prev - math.min(give, prev)
  end
  redis.call('HSET', key, 'w', w, 'p', prev, 'c', cur)
  redis.call('PEXPIRE', key, math.ceil(2 * period / 1000) + 1)
else
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  if points >= 0 then
    local seq = redis.call('INCRBY', key .. ':seq', points)
    for j = 1, points do redis.call('ZADD', key, now, string.format('%.0f-%d', now, seq - j)) end
    redis.call('PEXPIRE', key, math.ceil(period / 1000) + 1)
  elseif -points > 0 then
    redis.call('ZPOPMAX', key, -points)
  end
end
return 1
)lua";

int algorithm_code(algorithm a) noexcept {
  switch (a) {
    case algorithm::sliding_log:
      return 0;
    case algorithm::sliding_window:
      return 1;
    case algorithm::gcra:
      return 2;
    case algorithm::token_bucket:
      return 3;
  }
  return 2;
}

std::int64_t micros(std::chrono::nanoseconds d) noexcept {
  return (d.count() + 999) / 1000;
}

// Appends one RESP bulk string holding `v` in decimal.
void append_number(std::string& out, std::int64_t v) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, v);
  const auto size = static_cast<std::size_t>(end - digits);
  out += '$';
  char length[4];
  const auto [length_end, length_ec] = std::to_chars(length, length + sizeof length, size);
  out.append(length, static_cast<std::size_t>(length_end - length));
  out += "\r\n";
  out.append(digits, size);
  out += "\r\n";
}

void append_bulk(std::string& out, std::string_view text) {
  char length[24];
  const auto [end, ec] = std::to_chars(length, length + sizeof length, text.size());
  out += '$';
  out.append(length, static_cast<std::size_t>(end - length));
  out += "\r\n";
  out += text;
  out += "\r\n";
}

// EVALSHA sha numkeys key... cost (algorithm count period capacity block)..., encoded straight
// into the output buffer: no temporary strings per argument.
void append_decide(std::string& out, std::string_view sha, std::span<const keyed_limit> limits,
                   std::uint64_t cost) {
  const std::size_t arguments = 4 + limits.size() * 6;
  char count[24];
  const auto [end, ec] = std::to_chars(count, count + sizeof count, arguments);
  out += '*';
  out.append(count, static_cast<std::size_t>(end - count));
  out += "\r\n";
  append_bulk(out, "EVALSHA");
  append_bulk(out, sha);
  append_number(out, static_cast<std::int64_t>(limits.size()));
  for (const auto& l : limits) append_bulk(out, l.key);
  append_number(out, static_cast<std::int64_t>(cost));
  for (const auto& l : limits) {
    const limit& r = *l.rule;
    append_number(out, algorithm_code(r.algorithm));
    append_number(out, static_cast<std::int64_t>(r.count));
    append_number(out, micros(r.period));
    append_number(out, static_cast<std::int64_t>(r.capacity()));
    append_number(out, micros(r.block));
  }
}

result<void> read_decisions(const resp_value& reply, std::span<const keyed_limit> limits,
                            std::span<decision> out) {
  if (reply.is_error()) {
    log::warn("Redis rate-limit script failed", {{"reply", reply.text}});
    return errc::server_error;
  }
  if (reply.type != resp_value::kind::array || reply.elements.size() != 4 * limits.size()) {
    return errc::protocol_error;
  }
  for (std::size_t i = 0; i < limits.size(); ++i) {
    const auto* e = &reply.elements[4 * i];
    for (int j = 0; j < 4; ++j) {
      if (e[j].type != resp_value::kind::integer || e[j].integer < 0) return errc::protocol_error;
    }
    out[i] = {.allowed = e[0].integer == 1,
              .limit = limits[i].rule->capacity(),
              .remaining = static_cast<std::uint64_t>(e[1].integer),
              .reset = std::chrono::microseconds(e[2].integer),
              .retry_after = std::chrono::microseconds(e[3].integer)};
  }
  return {};
}

bool is_noscript(const resp_value& v) noexcept {
  return v.is_error() && v.text.starts_with("NOSCRIPT");
}

// One connection carrying many requests at once: whatever callers submit while a write is in
// flight is coalesced into the next write, and replies are matched to requests in order (RESP
// answers in order). Runs on the backend's I/O thread; callers only post to it. Any failure
// (refused, reset, malformed reply, a request past its deadline) fails every request waiting
// on it and the connection is replaced on next use — except that when an established
// connection is lost (closed or reset: a killed client, an idle timeout, a proxy restart) the
// requests not written to it yet are handed to `resubmit`, to go out on another connection.
// One whose write had begun is never sent again: Redis may have run it and only the reply been
// lost, and a decision run twice spends twice. It fails, and the caller's failure policy
// (fail open, closed, insurance) decides, as for any other unanswered request.
class mux : public std::enable_shared_from_this<mux> {
 public:
  using callback = std::function<void(error_code, std::vector<resp_value>)>;
  using resubmit_fn =
      std::function<void(std::string encoded, std::size_t replies, callback done, int retries)>;

  mux(asio::io_context& io, const redis_options& options, resubmit_fn resubmit = {})
      : strand_(asio::make_strand(io)),
        socket_(strand_),
        timer_(strand_),
        options_(options),
        resubmit_(std::move(resubmit)) {}

  /// `retries`: how many times the request may be resubmitted elsewhere when the connection
  /// it went out on is lost.
  void submit(std::string encoded, std::size_t replies, callback done, int retries) {
    asio::post(strand_,
               [self = shared_from_this(), encoded = std::move(encoded), replies, done = std::move(done),
                retries]() mutable { self->enqueue(std::move(encoded), replies, std::move(done), retries); });
  }
  [[nodiscard]] bool dead() const noexcept { return dead_.load(std::memory_order_acquire); }

 private:
  struct request {
    std::size_t replies;
    callback done;
    std::chrono::steady_clock::time_point deadline;
    std::vector<resp_value> got{};
    std::string retry_with{};  // the encoded commands when the request may be resubmitted
    int retries = 0;
    bool written = false;  // its bytes went into a write: Redis may have run it
  };
  enum class phase : std::uint8_t { fresh, connecting, connected, failed };

  void enqueue(std::string encoded, std::size_t replies, callback done, int retries) {
    if (phase_ == phase::failed) {
      // Lost before anything was sent here: not an attempt, so it keeps its retries. The pool
      // replaces a failed connection, so this ends on a live or a fresh one.
      if (resubmit_) return resubmit_(std::move(encoded), replies, std::move(done), retries);
      return done(errc::backend_unavailable, {});
    }
    const auto deadline =
        std::chrono::steady_clock::now() + options_.command_timeout +
        (phase_ == phase::connected ? std::chrono::milliseconds(0) : options_.connect_timeout);
    outgoing_ += encoded;
    waiting_.push_back(
        {replies, std::move(done), deadline, {}, retries > 0 ? std::move(encoded) : std::string(), retries});
    arm_timer();
    if (phase_ == phase::fresh) return connect();
    if (phase_ == phase::connected) write();
  }

  void connect() {
    phase_ = phase::connecting;
    error_code ec;
    const auto address = asio::ip::make_address(options_.host, ec);
    asio::ip::tcp::endpoint endpoint;
    if (!ec) {
      endpoint = {address, options_.port};
    } else {
      asio::ip::tcp::resolver resolver(strand_);
      const auto found = resolver.resolve(options_.host, std::to_string(options_.port), ec);
      if (ec || found.empty()) return fail(errc::backend_unavailable);
      endpoint = *found.begin();
    }
    if (!options_.password.empty()) {
      // AUTH goes first, ahead of everything already queued.
      std::string auth;
      const std::string_view args[] = {"AUTH", options_.password};
      append_command(auth, args);
      outgoing_.insert(0, auth);
      waiting_.push_front({1,
                           [weak = weak_from_this()](error_code e, std::vector<resp_value> r) {
                             if (e || r.empty() || !r.front().is_error()) return;
                             log::warn("Redis refused AUTH", {{"reply", r.front().text}});
                             if (auto self = weak.lock()) self->fail(errc::server_error);
                           },
                           waiting_.front().deadline});
    }
    socket_.async_connect(endpoint, [self = shared_from_this()](error_code e) {
      if (self->phase_ == phase::failed) return;
      if (e) return self->fail(errc::backend_unavailable);
      self->phase_ = phase::connected;
      error_code ignored;
      self->socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
      self->write();
      self->read();
    });
  }

  void write() {
    if (writing_ || outgoing_.empty()) return;
    writing_ = true;
    // outgoing_ holds exactly the requests not written yet: the newest ones.
    for (auto r = waiting_.rbegin(); r != waiting_.rend() && !r->written; ++r) r->written = true;
    in_flight_.swap(outgoing_);
    asio::async_write(socket_, asio::buffer(in_flight_),
                      [self = shared_from_this()](error_code e, std::size_t) {
                        self->writing_ = false;
                        self->in_flight_.clear();
                        if (self->phase_ == phase::failed) return;
                        if (e) return self->fail(errc::backend_unavailable);
                        self->write();
                      });
  }

  void read() {
    socket_.async_read_some(asio::buffer(buffer_), [self = shared_from_this()](error_code e, std::size_t n) {
      if (self->phase_ == phase::failed) return;
      if (e) return self->fail(self->input_.empty() ? errc::backend_unavailable : errc::protocol_error);
      self->input_.append(self->buffer_.data(), n);
      std::size_t at = 0;
      while (at < self->input_.size()) {
        resp_value value;
        std::size_t used = 0;
        const auto parsed = resp_parser::parse(std::string_view(self->input_).substr(at), used, value);
        if (parsed == resp_parser::status::incomplete) break;
        if (parsed == resp_parser::status::malformed || self->waiting_.empty()) {
          log::warn("malformed or unexpected reply from Redis; closing the connection",
                    {{"bytes", self->input_.substr(at, 64)}});
          return self->fail(errc::protocol_error);
        }
        at += used;
        auto& front = self->waiting_.front();
        front.got.push_back(std::move(value));
        if (front.got.size() == front.replies) {
          request done = std::move(front);
          self->waiting_.pop_front();
          done.done({}, std::move(done.got));
        }
      }
      self->input_.erase(0, at);
      self->read();
    });
  }

  void arm_timer() {
    if (timer_armed_ || waiting_.empty()) return;
    timer_armed_ = true;
    timer_.expires_at(waiting_.front().deadline);
    timer_.async_wait([self = shared_from_this()](error_code) {
      self->timer_armed_ = false;
      if (self->phase_ == phase::failed || self->waiting_.empty()) return;
      if (self->waiting_.front().deadline <= std::chrono::steady_clock::now())
        return self->fail(errc::timeout);
      self->arm_timer();
    });
  }

  void fail(errc why) {
    if (phase_ == phase::failed) return;
    // Only a connection that was up and then lost is worth retrying elsewhere at once: a
    // refused connect means Redis is down (another connection would be refused too), a
    // timeout or a malformed reply mean it is unhealthy, and retrying would only add load.
    const bool lost = why == errc::backend_unavailable && phase_ == phase::connected;
    phase_ = phase::failed;
    dead_.store(true, std::memory_order_release);
    error_code ignored;
    socket_.close(ignored);
    timer_.cancel();
    auto waiting = std::move(waiting_);
    waiting_.clear();
    outgoing_.clear();
    for (auto& r : waiting) {
      if (lost && resubmit_ && !r.retry_with.empty() && !r.written) {
        resubmit_(std::move(r.retry_with), r.replies, std::move(r.done), r.retries - 1);
      } else {
        r.done(why, {});
      }
    }
  }

  asio::strand<asio::io_context::executor_type> strand_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  redis_options options_;
  resubmit_fn resubmit_;
  phase phase_ = phase::fresh;
  std::atomic<bool> dead_{false};
  std::deque<request> waiting_;
  std::string outgoing_;
  std::string in_flight_;
  bool writing_ = false;
  bool timer_armed_ = false;
  std::string input_;
  std::array<char, 64 * 1024> buffer_{};
};

// SHA-1 of a script, as EVALSHA wants it: computed here so that the first request needs no
// SCRIPT LOAD round trip.
std::string sha1_hex(std::string_view text) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  ::SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : digest) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

// Waits for one callback: the synchronous API on top of the asynchronous one.
struct waiter {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  error_code ec;
  std::vector<resp_value> replies;

  mux::callback callback() {
    return [this](error_code e, std::vector<resp_value> r) {
      std::lock_guard guard(mutex);
      ec = e;
      replies = std::move(r);
      done = true;
      cv.notify_one();
    };
  }
  result<std::vector<resp_value>> wait() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [this] { return done; });
    if (ec) return ec;
    return std::move(replies);
  }
};

}  // namespace

struct redis_backend::impl {
  redis_options options;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread io_thread;
  std::mutex mutex;
  std::vector<std::shared_ptr<mux>> connections;
  std::size_t next = 0;
  const std::string decide_sha = sha1_hex(script);
  const std::string adjust_sha = sha1_hex(adjust_script);

  explicit impl(redis_options o) : options(std::move(o)) {
    connections.resize(std::max<std::size_t>(options.max_connections, 1));
    io_thread = std::thread([this] { io.run(); });
  }
  ~impl() {
    work.reset();
    io.stop();
    io_thread.join();
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  // Round robin over the connections; a failed one is replaced here.
  std::shared_ptr<mux> pick() {
    std::lock_guard guard(mutex);
    auto& slot = connections[next++ % connections.size()];
    if (!slot || slot->dead()) {
      // A request not yet written to a lost connection goes out on the next one.
      slot = std::make_shared<mux>(
          io, options, [this](std::string encoded, std::size_t replies, mux::callback done, int retries) {
            pick()->submit(std::move(encoded), replies, std::move(done), retries);
          });
    }
    return slot;
  }

  // Sends `encoded` (`count` EVALSHAs of `script_body`); when Redis has lost the script (it was
  // restarted) loads it and sends them once more (NOSCRIPT: nothing ran).
  void call(std::string encoded, std::size_t count, std::string_view script_body, mux::callback done) {
    auto connection = pick();
    const int tries = retries();
    connection->submit(
        encoded, count,
        [this, encoded, count, script_body, tries, done = std::move(done)](
            error_code ec, std::vector<resp_value> r) mutable {
          if (ec || r.empty() || !is_noscript(r.front())) return done(ec, std::move(r));
          std::string again;
          const std::string_view load[] = {"SCRIPT", "LOAD", script_body};
          append_command(again, load);
          again += encoded;
          pick()->submit(
              std::move(again), count + 1,
              [done = std::move(done)](error_code e, std::vector<resp_value> replies) {
                if (e) return done(e, {});
                if (replies.front().is_error()) {
                  log::warn("Redis refused SCRIPT LOAD", {{"reply", replies.front().text}});
                  return done(errc::server_error, {});
                }
                replies.erase(replies.begin());
                done({}, std::move(replies));
              },
              tries);
        },
        tries);
  }

  // A request on a lost connection goes out again on another; with every connection of the
  // pool lost at once (Redis closed them all) it may take one try per connection.
  [[nodiscard]] int retries() const noexcept { return static_cast<int>(connections.size()); }
};

redis_backend::redis_backend(redis_options options) : impl_(std::make_unique<impl>(std::move(options))) {}
redis_backend::~redis_backend() = default;

std::string_view redis_backend::decide_script() noexcept {
  return script;
}

result<void> redis_backend::decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                   std::span<decision> out) {
  const batch_request one{limits, cost, out};
  return decide_batch({&one, 1});
}

result<void> redis_backend::decide_batch(std::span<const batch_request> batch) {
  for (const auto& r : batch) {
    if (auto checked = check_request(r.limits, r.cost, r.out); !checked) return checked;
  }
  if (batch.empty()) return {};
  std::string encoded;
  for (const auto& r : batch) append_decide(encoded, impl_->decide_sha, r.limits, r.cost);
  waiter w;
  impl_->call(std::move(encoded), batch.size(), script, w.callback());
  auto replies = w.wait();
  if (!replies) return replies.error();
  if (replies->size() != batch.size()) return errc::protocol_error;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (auto read = read_decisions((*replies)[i], batch[i].limits, batch[i].out); !read) return read;
  }
  return {};
}

void redis_backend::async_decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                 std::span<decision> out, std::function<void(error_code)> done) {
  if (auto checked = check_request(limits, cost, out); !checked) {
    asio::post(impl_->io, [done = std::move(done), ec = checked.error()] { done(ec); });
    return;
  }
  std::string encoded;
  append_decide(encoded, impl_->decide_sha, limits, cost);
  impl_->call(std::move(encoded), 1, script,
              [limits, out, done = std::move(done)](error_code ec, std::vector<resp_value> replies) {
                if (ec) return done(ec);
                if (replies.size() != 1) return done(errc::protocol_error);
                auto read = read_decisions(replies.front(), limits, out);
                done(read ? error_code{} : read.error());
              });
}

result<void> redis_backend::adjust(const keyed_limit& limit, std::int64_t points) {
  const ratelimit::limit& r = *limit.rule;
  const std::string numbers[] = {std::to_string(algorithm_code(r.algorithm)), std::to_string(r.count),
                                 std::to_string(micros(r.period)), std::to_string(r.capacity()),
                                 std::to_string(points)};
  const std::string_view args[] = {"EVALSHA",  impl_->adjust_sha, "1",        limit.key, numbers[0],
                                   numbers[1], numbers[2],        numbers[3], numbers[4]};
  std::string encoded;
  append_command(encoded, args);
  waiter w;
  impl_->call(std::move(encoded), 1, adjust_script, w.callback());
  auto reply = w.wait();
  if (!reply) return reply.error();
  if (reply->empty() || reply->front().is_error()) {
    log::warn("Redis rate-limit adjust script failed",
              {{"reply", reply->empty() ? "" : reply->front().text}});
    return errc::server_error;
  }
  return {};
}

}  // namespace keel::ratelimit
