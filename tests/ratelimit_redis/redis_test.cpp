// The Redis backend against bad servers (unit) and against a real redis-server started by the
// test (redis): algorithms, atomicity, threads, two processes, and killing Redis mid-run.
#include <keel/core/metrics.hpp>
#include <keel/ratelimit.hpp>
#include <keel/ratelimit_redis/redis.hpp>
#include <keel/redis/connection.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <poll.h>
#include <ratelimit/store_checks.hpp>
#include <support/fake_server.hpp>
#include <support/redis.hpp>
#include <support/result.hpp>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace rl = keel::ratelimit;
using namespace std::chrono_literals;

namespace {

// A proxy on 127.0.0.1 in front of Redis that loses replies. It forwards requests as they come
// and replies one whole RESP value at a time. Replies that allow a decision are numbered from 1
// over all connections (in the order the proxy reads them, which need not be the order Redis ran
// them: hence only allowing ones count); those whose numbers are in `lose` are read from Redis
// but never delivered: the proxy closes that client's connection instead. To the client this is
// a connection cut after its request spent quota and before the answer came back.
class reply_losing_proxy {
 public:
  reply_losing_proxy(std::uint16_t redis_port, std::vector<std::int64_t> lose)
      : redis_port_(redis_port), lose_(std::move(lose)) {
    REQUIRE(::pipe(wake_) == 0);
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = loopback(0);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_, 16) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~reply_losing_proxy() {
    const char stop = 's';
    (void)::write(wake_[1], &stop, 1);
    thread_.join();
    ::close(listener_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  reply_losing_proxy(const reply_losing_proxy&) = delete;
  reply_losing_proxy& operator=(const reply_losing_proxy&) = delete;

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  /// Replies lost so far (each one cost a connection).
  [[nodiscard]] int lost() const noexcept { return lost_.load(); }

 private:
  struct link {
    int client;
    int server;
    std::string from_server{};
    bool open = true;
  };

  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    return addr;
  }
  static bool write_all(int fd, const char* data, std::size_t size) {
    while (size > 0) {
      const ssize_t n = ::write(fd, data, size);
      if (n <= 0) return false;
      data += n;
      size -= static_cast<std::size_t>(n);
    }
    return true;
  }
  static void close_link(link& l) {
    ::close(l.client);
    ::close(l.server);
    l.open = false;
  }

  // Forwards what Redis sent, value by value, unless a value is one to lose.
  void relay_replies(link& l) {
    std::size_t at = 0;
    while (l.open) {
      keel::redis::resp_value value;
      std::size_t used = 0;
      const auto parsed =
          keel::redis::resp_parser::parse(std::string_view(l.from_server).substr(at), used, value);
      if (parsed != keel::redis::resp_parser::status::complete) break;
      const bool allows = value.type == keel::redis::resp_value::kind::array && !value.elements.empty() &&
                          value.elements.front().type == keel::redis::resp_value::kind::integer &&
                          value.elements.front().integer == 1;
      if (allows && std::find(lose_.begin(), lose_.end(), ++allowing_replies_) != lose_.end()) {
        ++lost_;
        return close_link(l);
      }
      if (!write_all(l.client, l.from_server.data() + at, used)) return close_link(l);
      at += used;
    }
    l.from_server.erase(0, at);
  }

  void run() {
    std::vector<link> links;
    std::vector<pollfd> fds;
    char buffer[64 * 1024];
    for (;;) {
      fds.assign({{wake_[0], POLLIN, 0}, {listener_, POLLIN, 0}});
      for (const auto& l : links) {
        fds.push_back({l.client, POLLIN, 0});
        fds.push_back({l.server, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;  // interrupted
      if (fds[0].revents != 0) break;
      const std::size_t polled = links.size();
      for (std::size_t i = 0; i < polled; ++i) {
        auto& l = links[i];
        if (l.open && fds[2 + 2 * i].revents != 0) {
          const ssize_t n = ::read(l.client, buffer, sizeof buffer);
          if (n <= 0 || !write_all(l.server, buffer, static_cast<std::size_t>(n))) close_link(l);
        }
        if (l.open && fds[3 + 2 * i].revents != 0) {
          const ssize_t n = ::read(l.server, buffer, sizeof buffer);
          if (n <= 0) {
            close_link(l);
          } else {
            l.from_server.append(buffer, static_cast<std::size_t>(n));
            relay_replies(l);
          }
        }
      }
      std::erase_if(links, [](const link& l) { return !l.open; });
      if ((fds[1].revents & POLLIN) != 0) {
        const int client = ::accept(listener_, nullptr, nullptr);
        if (client >= 0) {
          const int server = ::socket(AF_INET, SOCK_STREAM, 0);
          sockaddr_in addr = loopback(redis_port_);
          if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
            links.push_back({client, server});
          } else {
            ::close(client);
            ::close(server);
          }
        }
      }
    }
    for (auto& l : links) {
      if (l.open) close_link(l);
    }
  }

  std::uint16_t redis_port_;
  std::vector<std::int64_t> lose_;
  int wake_[2] = {-1, -1};
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::int64_t allowing_replies_ = 0;  // the proxy thread's alone
  std::atomic<int> lost_{0};
  std::thread thread_;
};

rl::verdict check_n(rl::limiter& l, const rl::request_attributes& r, int n, int& allowed) {
  rl::verdict last;
  for (int i = 0; i < n; ++i) {
    last = l.check(r);
    allowed += last.allowed() ? 1 : 0;
  }
  return last;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("redis backend: bad replies are errors, never decisions") {
    const rl::limit l{};
    const rl::keyed_limit k{"k", &l};
    const std::pair<std::string, std::pair<bool, rl::errc>> cases[] = {
        {"+this is not an array\r\n", {true, rl::errc::protocol_error}},
        {"*4\r\n:1\r\n:2\r\n:3\r\n$1\r\nx\r\n", {true, rl::errc::protocol_error}},  // wrong element type
        {"*4\r\n:1\r\n:-2\r\n:3\r\n:4\r\n", {true, rl::errc::protocol_error}},      // negative remaining
        {"-ERR something broke\r\n", {true, rl::errc::server_error}},
        {"*4\r\n:1\r\n:9", {true, rl::errc::protocol_error}},  // cut off mid-reply
        {"*4\r\n:1\r\n", {false, rl::errc::timeout}},          // half a reply, then silence
        {"&1\r\n", {true, rl::errc::protocol_error}},          // not RESP2
    };
    for (const auto& one_case : cases) {
      const std::string& reply = one_case.first;
      const auto& expected = one_case.second;
      keel::test::fake_server s(reply, 3, expected.first);
      rl::redis_backend store({.port = s.port(), .command_timeout = 300ms});
      rl::decision d{.allowed = false, .remaining = 77};
      const auto r = store.decide({&k, 1}, 1, {&d, 1});
      INFO(reply);
      REQUIRE_FALSE(r);
      CHECK(r.error() == expected.second);
      CHECK(d.remaining == 77);  // untouched
    }
  }
}

TEST_SUITE("redis") {
  TEST_CASE("redis backend: each algorithm allows exactly its limit, with retry-after") {
    keel::test::redis_server server;
    rl::redis_backend store({.port = server.port()});
    for (const auto a : {rl::algorithm::gcra, rl::algorithm::token_bucket, rl::algorithm::sliding_window,
                         rl::algorithm::sliding_log}) {
      const auto d = keel::test::check_exact_limit(store, a);
      if (a == rl::algorithm::gcra) CHECK(d.retry_after > 5min);  // one emission interval, 6 min
    }
    // A cost over the burst is an error before any round trip.
    const rl::limit small{.count = 3, .period = 1s};
    const rl::keyed_limit k{"small", &small};
    rl::decision d;
    CHECK(store.decide({&k, 1}, 4, {&d, 1}).error() == rl::errc::cost_exceeds_burst);
  }

  TEST_CASE("redis backend: several limits are all or nothing; block; penalties and rewards") {
    keel::test::redis_server server;
    rl::redis_backend store({.port = server.port()});
    keel::test::check_all_or_nothing(store);

    const rl::limit blocking{.algorithm = rl::algorithm::gcra, .count = 1, .period = 1s, .block = 1h};
    const rl::limit same_unblocked{.algorithm = rl::algorithm::gcra, .count = 1, .period = 1s};
    const rl::keyed_limit b{"blocked", &blocking};
    const rl::keyed_limit twin{"unblocked", &same_unblocked};
    rl::decision d;
    REQUIRE(store.decide({&b, 1}, 1, {&d, 1}));
    CHECK(d.allowed);
    REQUIRE(store.decide({&twin, 1}, 1, {&d, 1}));
    CHECK(d.allowed);
    REQUIRE(store.decide({&b, 1}, 1, {&d, 1}));
    CHECK_FALSE(d.allowed);
    CHECK(d.retry_after >= 59min);
    // The same limit without a block, spent after this one, allows again once Redis's clock says
    // a period has passed (each try waits out the retry-after the previous one was told).
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    for (;;) {
      REQUIRE(store.decide({&twin, 1}, 1, {&d, 1}));
      if (d.allowed) break;
      REQUIRE(std::chrono::steady_clock::now() < give_up);
      std::this_thread::sleep_for(d.retry_after);
    }
    // The limit itself has recovered; the block has not.
    REQUIRE(store.decide({&b, 1}, 1, {&d, 1}));
    CHECK_FALSE(d.allowed);

    keel::test::check_penalty_and_reward(store, rl::algorithm::gcra);
  }

  TEST_CASE("redis backend: N threads on one key allow exactly the limit") {
    keel::test::redis_server server;
    rl::redis_backend store({.port = server.port(), .max_connections = 4});
    const rl::limit l{.algorithm = rl::algorithm::sliding_log, .count = 300, .period = 1h};
    const auto outcome = keel::test::decide_from_threads(store, l, 6, 100);
    CHECK(outcome.failed == 0);
    CHECK(outcome.allowed == 300);
  }

  TEST_CASE("redis backend: async decisions from many callers share one pipelined connection, exactly") {
    keel::test::redis_server server;
    rl::redis_backend store({.port = server.port(), .max_connections = 1});
    const rl::limit l{.algorithm = rl::algorithm::sliding_window, .count = 1000, .period = 1h};
    const std::string key = "async";
    const rl::keyed_limit k{key, &l};
    constexpr int requests = 3000;
    std::vector<rl::decision> out(requests);
    std::atomic<int> allowed{0};
    std::atomic<int> failed{0};
    std::mutex mutex;
    std::condition_variable cv;
    int finished = 0;
    for (int i = 0; i < requests; ++i) {
      store.async_decide({&k, 1}, 1, {&out[static_cast<std::size_t>(i)], 1}, [&, i](keel::error_code ec) {
        if (ec) {
          ++failed;
        } else if (out[static_cast<std::size_t>(i)].allowed) {
          ++allowed;
        }
        std::lock_guard guard(mutex);
        if (++finished == requests) cv.notify_one();
      });
    }
    std::unique_lock lock(mutex);
    REQUIRE(cv.wait_for(lock, 30s, [&] { return finished == requests; }));
    CHECK(failed == 0);
    CHECK(allowed == 1000);
    // A cost over the burst is reported through the callback too, never inside the call.
    keel::error_code error;
    bool called = false;
    rl::decision d;
    store.async_decide({&k, 1}, 5000, {&d, 1}, [&](keel::error_code ec) {
      std::lock_guard guard(mutex);
      error = ec;
      called = true;
      cv.notify_one();
    });
    REQUIRE(cv.wait_for(lock, 5s, [&] { return called; }));
    CHECK(error == rl::errc::cost_exceeds_burst);
  }

  TEST_CASE("redis backend: a killed connection fails what was written to it; the rest goes out on another") {
    keel::test::redis_server server;
    rl::redis_backend store({.port = server.port(), .max_connections = 2, .command_timeout = 5s});
    auto admin = keel::redis::connection::connect({.port = server.port()});
    REQUIRE(admin);
    const rl::limit l{.algorithm = rl::algorithm::sliding_window, .count = 1'000'000, .period = 1h};
    const rl::keyed_limit k{"retried", &l};
    constexpr int requests = 20'000;
    constexpr int in_flight = 256;
    std::vector<rl::decision> out(requests);
    std::mutex mutex;
    std::condition_variable cv;
    int finished = 0;
    int failed = 0;
    int allowed = 0;
    std::int64_t killed = 0;
    for (int i = 0; i < requests; ++i) {
      {
        std::unique_lock lock(mutex);
        REQUIRE(cv.wait_for(lock, 30s, [&] { return i - finished < in_flight; }));
      }
      auto& o = out[static_cast<std::size_t>(i)];
      store.async_decide({&k, 1}, 1, {&o, 1}, [&](keel::error_code ec) {
        std::lock_guard guard(mutex);
        failed += ec ? 1 : 0;
        allowed += !ec && o.allowed ? 1 : 0;
        ++finished;
        cv.notify_one();
      });
      if (i % 2000 == 1000) {
        // Every client but this one: both connections of the pool, with requests in flight.
        auto reply = admin->command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
        REQUIRE(reply);
        killed += reply->integer;
      }
    }
    std::unique_lock lock(mutex);
    REQUIRE(cv.wait_for(lock, 30s, [&] { return finished == requests; }));
    CHECK(killed >= 10);
    // Only requests in flight at a kill fail (at most the in-flight window per kill); whatever
    // was still queued went out on another connection.
    CHECK(failed <= 10 * in_flight);
    CHECK(allowed + failed == requests);
    // Redis counted each allowed request once, and a failed one at most once: nothing twice.
    auto counted = admin->command({"HMGET", "retried", "p", "c"});
    REQUIRE(counted);
    REQUIRE(counted->elements.size() == 2);
    std::int64_t spent = 0;
    for (const auto& e : counted->elements)
      spent += e.type == keel::redis::resp_value::kind::null ? 0 : std::stoll(e.text);
    CHECK(spent >= allowed);
    CHECK(spent <= allowed + failed);
    MESSAGE(failed << " of " << requests << " requests were in flight at a kill and failed");
  }

  TEST_CASE(
      "redis backend: a decision whose reply was lost is not sent again; failing open, the limit holds") {
    keel::test::redis_server server;
    // The script is loaded beforehand so that every reply through the proxy is a decision.
    auto admin = keel::redis::connection::connect({.port = server.port()});
    REQUIRE(admin);
    const auto loaded = admin->command({"SCRIPT", "LOAD", rl::redis_backend::decide_script()});
    REQUIRE(loaded);
    REQUIRE_FALSE(loaded->is_error());
    constexpr int limit = 10;
    constexpr int requests = 30;
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = limit, .period = 1h};

    SUBCASE("decide through a limiter that fails open") {
      reply_losing_proxy proxy(server.port(), {3, 6, 9});
      rl::redis_backend store({.port = proxy.port(), .max_connections = 4, .command_timeout = 5s});
      rl::limiter limiter(store, {.retry_store_after = 0ms});  // ask Redis again at once
      rl::policy_set set;
      set.policies.push_back({.name = "lost-reply",
                              .key_by = {rl::attribute::ip},
                              .limits = {l},
                              .on_failure = rl::failure_mode::open});
      REQUIRE(limiter.set_policies(set));
      int allowed = 0;
      int failed_open = 0;
      for (int i = 0; i < requests; ++i) {
        const auto v = limiter.check({.path = "/", .ip = "192.0.2.1"});
        allowed += v.allowed() ? 1 : 0;
        failed_open += v.source == rl::source::failed_open ? 1 : 0;
      }
      CHECK(proxy.lost() == 3);
      CHECK(failed_open == 3);  // the three whose replies were lost: spent in Redis, let through here
      CHECK(allowed == limit);
    }

    SUBCASE("async_decide, all in flight at once on the pool") {
      reply_losing_proxy proxy(server.port(), {2, 5, 8});
      rl::redis_backend store({.port = proxy.port(), .max_connections = 4, .command_timeout = 5s});
      const rl::keyed_limit k{"lost-reply:async", &l};
      std::vector<rl::decision> out(requests);
      std::mutex mutex;
      std::condition_variable cv;
      int finished = 0;
      int failed = 0;
      int allowed = 0;
      for (auto& o : out) {
        store.async_decide({&k, 1}, 1, {&o, 1}, [&](keel::error_code ec) {
          std::lock_guard guard(mutex);
          failed += ec ? 1 : 0;
          allowed += !ec && o.allowed ? 1 : 0;
          ++finished;
          cv.notify_one();
        });
      }
      std::unique_lock lock(mutex);
      REQUIRE(cv.wait_for(lock, 30s, [&] { return finished == requests; }));
      CHECK(proxy.lost() >= 1);
      CHECK(failed >= proxy.lost());
      // Each unit Redis spent was either answered as allowed or failed, never spent again by a
      // resend: the allowed ones and the failed ones together cover the whole limit.
      CHECK(allowed + failed >= limit);
      CHECK(allowed <= limit);
      rl::decision d;
      REQUIRE(rl::redis_backend({.port = server.port()}).decide({&k, 1}, 1, {&d, 1}));
      CHECK_FALSE(d.allowed);  // and the limit is spent
    }
  }

  TEST_CASE("redis backend: two processes share one limit") {
    keel::test::redis_server server;
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 250, .period = 1h};
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    auto run = [&] {
      rl::redis_backend store({.port = server.port()});
      const rl::keyed_limit k{"two-processes", &l};
      rl::decision d;
      int allowed = 0;
      for (int i = 0; i < 200; ++i) {
        if (store.decide({&k, 1}, 1, {&d, 1}) && d.allowed) ++allowed;
      }
      return allowed;
    };
    if (child == 0) {
      const int mine = run();
      (void)::write(fds[1], &mine, sizeof mine);
      ::_exit(0);
    }
    const int mine = run();
    int theirs = -1;
    REQUIRE(::read(fds[0], &theirs, sizeof theirs) == sizeof theirs);
    int status = 0;
    ::waitpid(child, &status, 0);
    ::close(fds[0]);
    ::close(fds[1]);
    CHECK(theirs > 0);
    CHECK(mine > 0);
    CHECK(mine + theirs == 250);
  }

  TEST_CASE("redis backend killed mid-run: fail open, fail closed, insurance, then recovery and NOSCRIPT") {
    keel::test::redis_server server;
    rl::redis_backend store({.port = server.port(), .connect_timeout = 200ms, .command_timeout = 200ms});
    rl::limiter limiter(store, {.retry_store_after = 300ms});
    rl::policy_set set;
    for (const auto& [name, mode] :
         {std::pair{"open", rl::failure_mode::open}, std::pair{"closed", rl::failure_mode::closed},
          std::pair{"insured", rl::failure_mode::insurance}}) {
      set.policies.push_back(
          {.name = name,
           .key_by = {rl::attribute::ip},
           .routes = {std::string("/") + name},
           .limits = {{.algorithm = rl::algorithm::sliding_window, .count = 20, .period = 1h}},
           .on_failure = mode,
           .insurance_divisor = 4});
    }
    REQUIRE(limiter.set_policies(set));
    const rl::request_attributes open{.path = "/open", .ip = "10.0.0.1"};
    const rl::request_attributes closed{.path = "/closed", .ip = "10.0.0.1"};
    const rl::request_attributes insured{.path = "/insured", .ip = "10.0.0.1"};
    int allowed = 0;
    CHECK(check_n(limiter, insured, 3, allowed).source == rl::source::store);
    CHECK(allowed == 3);

    server.stop();
    const auto o = limiter.check(open);
    CHECK(o.allowed());
    CHECK(o.source == rl::source::failed_open);
    CHECK(limiter.store_down());
    const auto c = limiter.check(closed);
    CHECK_FALSE(c.allowed());
    CHECK(c.source == rl::source::failed_closed);
    allowed = 0;
    CHECK(check_n(limiter, insured, 10, allowed).source == rl::source::insurance);
    CHECK(allowed == 5);  // 20 / 4, in this process alone
    const auto metrics = limiter.metrics().expose();
    CHECK(metrics.find(R"(ratelimit_decisions_total{policy="insured",outcome="insurance"} 10)") !=
          std::string::npos);
    CHECK(metrics.find(R"(ratelimit_store_up{backend="redis"} 0)") != std::string::npos);

    // Back on the same port, empty (no scripts, no state): the next try after retry_store_after
    // reconnects, gets NOSCRIPT, loads the script again and decides.
    server.start();
    // Until retry_store_after has passed the limiter keeps to its insurance without asking
    // Redis; the first check after that asks again, and is answered by the store.
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    rl::verdict back = limiter.check(insured);
    while (back.source == rl::source::insurance && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::yield();
      back = limiter.check(insured);
    }
    CHECK(back.source == rl::source::store);
    CHECK(back.allowed());
    CHECK_FALSE(limiter.store_down());
    allowed = 0;
    check_n(limiter, insured, 30, allowed);
    CHECK(allowed == 19);  // Redis restarted empty: 20 per hour, one spent just above
  }
}
