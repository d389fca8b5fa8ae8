#include <keel/core/log.hpp>
#include <keel/ratelimit_redis/redis.hpp>
#include <keel/redis/client.hpp>
#include <keel/redis/script.hpp>

#include <charconv>
#include <condition_variable>
#include <mutex>

namespace keel::ratelimit {

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

std::int64_t micros(std::chrono::nanoseconds d) noexcept {
  return (d.count() + 999) / 1000;
}

// EVALSHA sha numkeys key... cost (algorithm count period capacity block)..., encoded straight
// into the output buffer: no temporary strings per argument.
void append_decide(std::string& out, std::string_view sha, std::span<const keyed_limit> limits,
                   std::uint64_t cost) {
  redis::append_array_header(out, 4 + limits.size() * 6);
  redis::append_bulk(out, "EVALSHA");
  redis::append_bulk(out, sha);
  redis::append_bulk(out, static_cast<std::int64_t>(limits.size()));
  for (const auto& l : limits) redis::append_bulk(out, l.key);
  redis::append_bulk(out, static_cast<std::int64_t>(cost));
  for (const auto& l : limits) {
    const limit& r = *l.rule;
    redis::append_bulk(out, storage_code(r.algorithm));
    redis::append_bulk(out, static_cast<std::int64_t>(r.count));
    redis::append_bulk(out, micros(r.period));
    redis::append_bulk(out, static_cast<std::int64_t>(r.capacity()));
    redis::append_bulk(out, micros(r.block));
  }
}

result<void> read_decisions(const redis::resp_value& reply, std::span<const keyed_limit> limits,
                            std::span<decision> out) {
  if (reply.is_error()) {
    log::warn("Redis rate-limit script failed", {{"reply", reply.text}});
    return errc::server_error;
  }
  if (reply.type != redis::resp_value::kind::array || reply.elements.size() != 4 * limits.size()) {
    return errc::protocol_error;
  }
  for (std::size_t i = 0; i < limits.size(); ++i) {
    const auto* e = &reply.elements[4 * i];
    for (int j = 0; j < 4; ++j) {
      if (e[j].type != redis::resp_value::kind::integer || e[j].integer < 0) return errc::protocol_error;
    }
    out[i] = {.allowed = e[0].integer == 1,
              .limit = limits[i].rule->capacity(),
              .remaining = static_cast<std::uint64_t>(e[1].integer),
              .reset = std::chrono::microseconds(e[2].integer),
              .retry_after = std::chrono::microseconds(e[3].integer)};
  }
  return {};
}

// keel::redis's errors as the ratelimit errors every backend reports (the limiter's failure
// modes key on them).
error_code store_error(error_code ec) noexcept {
  if (ec.category() != redis::redis_category()) return ec;
  switch (static_cast<redis::errc>(ec.value())) {
    case redis::errc::unavailable:
    case redis::errc::connection_lost:
    case redis::errc::closed:
      return errc::backend_unavailable;
    case redis::errc::timeout:
      return errc::timeout;
    case redis::errc::server_error:
      return errc::server_error;
    case redis::errc::protocol_error:
    case redis::errc::invalid_argument:
      return errc::protocol_error;
  }
  return errc::protocol_error;
}

// Waits for one callback: the blocking API on top of the asynchronous one.
struct waiter {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  error_code ec;
  std::vector<redis::resp_value> replies;

  redis::client::reply_handler callback() {
    return [this](error_code e, std::vector<redis::resp_value> r) {
      std::lock_guard guard(mutex);
      ec = e;
      replies = std::move(r);
      done = true;
      cv.notify_one();
    };
  }
  result<std::vector<redis::resp_value>> wait() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [this] { return done; });
    if (ec) return store_error(ec);
    return std::move(replies);
  }
};

}  // namespace

struct redis_backend::impl {
  // The scripts first: the client's I/O thread may still run a NOSCRIPT reload of one of them
  // until the client (declared after them, so destroyed first) has stopped it.
  const redis::script decide{std::string(script)};
  const redis::script adjust{std::string(adjust_script)};
  redis::client client;

  explicit impl(redis_options o) : client(std::move(o)) {}
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
  for (const auto& r : batch) append_decide(encoded, impl_->decide.sha1(), r.limits, r.cost);
  waiter w;
  impl_->client.submit_script(impl_->decide, std::move(encoded), batch.size(), w.callback());
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
    impl_->client.post([done = std::move(done), ec = checked.error()] { done(ec); });
    return;
  }
  std::string encoded;
  append_decide(encoded, impl_->decide.sha1(), limits, cost);
  impl_->client.submit_script(
      impl_->decide, std::move(encoded), 1,
      [limits, out, done = std::move(done)](error_code ec, std::vector<redis::resp_value> replies) {
        if (ec) return done(store_error(ec));
        if (replies.size() != 1) return done(errc::protocol_error);
        auto read = read_decisions(replies.front(), limits, out);
        done(read ? error_code{} : read.error());
      });
}

result<void> redis_backend::adjust(const keyed_limit& limit, std::int64_t points) {
  const ratelimit::limit& r = *limit.rule;
  const std::string numbers[] = {std::to_string(storage_code(r.algorithm)), std::to_string(r.count),
                                 std::to_string(micros(r.period)), std::to_string(r.capacity()),
                                 std::to_string(points)};
  const std::string_view keys[] = {limit.key};
  const std::string_view args[] = {numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]};
  std::string encoded;
  impl_->adjust.append_call(encoded, keys, args);
  waiter w;
  impl_->client.submit_script(impl_->adjust, std::move(encoded), 1, w.callback());
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
