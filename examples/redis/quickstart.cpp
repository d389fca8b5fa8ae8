// docs/redis.md quotes this file; tests/cmake checks they agree.
#include <keel/redis.hpp>

#include <cstdio>
#include <string>

int main() {
  keel::redis::client redis({.host = "127.0.0.1", .port = 6379});

  // One command, blocking; a Redis error reply would be a value (reply->is_error()).
  auto reply = redis.command({"INCR", "visits"});
  if (!reply) return std::fprintf(stderr, "%s\n", reply.error().message().c_str()), 1;
  std::printf("visits: %lld\n", static_cast<long long>(reply->integer));

  // A Lua script by EVALSHA; after a Redis restart (NOSCRIPT) it is loaded and run again.
  static const keel::redis::script add("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  const std::string_view keys[] = {"visits"};
  const std::string_view args[] = {"10"};
  if (auto added = add.run(redis, keys, args))
    std::printf("after the script: %lld\n", static_cast<long long>(added->integer));

  // Pub/sub on a connection of its own; handlers run on the subscriber's I/O thread.
  auto news =
      keel::redis::subscriber::connect({.port = 6379}, {.on_message = [](const keel::redis::message& m) {
                                         std::printf("%s: %s\n", m.channel.c_str(), m.payload.c_str());
                                       }});
  if (!news || !news->subscribe({"news"})) return std::fprintf(stderr, "cannot subscribe\n"), 1;
  auto receivers = redis.command({"PUBLISH", "news", "hello"});  // 1: the subscriber above
  return receivers && receivers->integer == 1 ? 0 : 1;
}
