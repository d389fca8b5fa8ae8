#include <keel/core/log.hpp>
#include <keel/redis/client.hpp>
#include <keel/redis/connection.hpp>
#include <keel/redis/script.hpp>

#include <openssl/sha.h>

#include <condition_variable>
#include <mutex>

namespace keel::redis {
namespace {

// SHA-1 of a script, as EVALSHA wants it.
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

}  // namespace

script::script(std::string body) : body_(std::move(body)), sha1_(sha1_hex(body_)) {}

bool script::is_noscript(const resp_value& reply) noexcept {
  return reply.is_error() && reply.text.starts_with("NOSCRIPT");
}

void script::append_call(std::string& out, std::span<const std::string_view> keys,
                         std::span<const std::string_view> args) const {
  append_array_header(out, 3 + keys.size() + args.size());
  append_bulk(out, "EVALSHA");
  append_bulk(out, sha1_);
  append_bulk(out, static_cast<std::int64_t>(keys.size()));
  for (const auto k : keys) append_bulk(out, k);
  for (const auto a : args) append_bulk(out, a);
}

result<resp_value> script::run(connection& c, std::span<const std::string_view> keys,
                               std::span<const std::string_view> args) const {
  std::string call;
  append_call(call, keys, args);
  auto reply = c.pipeline(call, 1);
  if (!reply) return reply.error();
  if (!is_noscript(reply->front())) return std::move(reply->front());
  std::string again;
  append_command(again, {"SCRIPT", "LOAD", body_});
  again += call;
  auto replies = c.pipeline(again, 2);
  if (!replies) return replies.error();
  if ((*replies)[0].is_error()) {
    log::warn("Redis refused SCRIPT LOAD", {{"reply", (*replies)[0].text}});
    return errc::server_error;
  }
  return std::move((*replies)[1]);
}

result<resp_value> script::run(client& c, std::span<const std::string_view> keys,
                               std::span<const std::string_view> args) const {
  std::string call;
  append_call(call, keys, args);
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  result<resp_value> out = errc::unavailable;
  c.submit_script(*this, std::move(call), 1, [&](error_code ec, std::vector<resp_value> r) {
    std::lock_guard guard(mutex);
    if (ec) {
      out = ec;
    } else {
      out = std::move(r.front());
    }
    done = true;
    cv.notify_one();
  });
  std::unique_lock lock(mutex);
  cv.wait(lock, [&] { return done; });
  return out;
}

}  // namespace keel::redis
