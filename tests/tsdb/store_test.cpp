// The Postgres store: persistence, ordering policies, label selection, rollups against raw data,
// summaries, retention, compaction, concurrent writers, damaged blocks.
#include <keel/core/byte_io.hpp>
#include <keel/tsdb/maintenance.hpp>
#include <keel/tsdb/store.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include <signal.h>
#include <spawn.h>
#include <support/pg.hpp>
#include <support/random.hpp>
#include <support/result.hpp>
#include <sys/wait.h>
#include <unistd.h>

namespace tsdb = keel::tsdb;
using keel::test::uniform;
using namespace std::chrono_literals;

namespace {

tsdb::store open_store(const keel::test::scratch_schema& schema, tsdb::store_options options = {}) {
  auto c = schema.connect();
  REQUIRE(tsdb::migrate(c));
  return tsdb::store::open(schema.conninfo, std::move(options)).value();
}

struct points {
  std::vector<std::int64_t> times;
  std::vector<double> values;
};

points random_points(std::size_t n, std::int64_t start, std::int64_t step) {
  points p;
  std::int64_t t = start;
  for (std::size_t i = 0; i < n; ++i) {
    t += uniform(0, 20) == 0 ? step * uniform<std::int64_t>(2, 30) : step;  // gaps
    p.times.push_back(t);
    p.values.push_back(uniform(0, 100) == 0 ? std::nan("")
                                            : static_cast<double>(uniform(-10000, 10000)) / 100.0);
  }
  return p;
}

points read_all(tsdb::store& s, std::int64_t id, std::int64_t from, std::int64_t to) {
  points p;
  auto scan = s.scan(id, from, to);
  REQUIRE(scan);
  scan->drain(p.times, p.values);
  REQUIRE_FALSE(scan->error());
  return p;
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 8) == 0);
}

bool close(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || std::fabs(a - b) <= 1e-9 * std::max(1.0, std::fabs(b));
}

void check_buckets_equal(const std::vector<tsdb::bucket>& got, const std::vector<tsdb::bucket>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i].start == want[i].start);
    REQUIRE(got[i].count == want[i].count);
    if (want[i].count == 0) continue;
    CHECK(close(got[i].sum, want[i].sum));
    CHECK(got[i].min == want[i].min);
    CHECK(got[i].max == want[i].max);
    CHECK(got[i].first == want[i].first);
    CHECK(got[i].last == want[i].last);
    CHECK(close(got[i].stddev(), want[i].stddev()));
  }
}

// The points of the version 1 database the migration tests start from (times in ms).
const std::vector<std::int64_t> v1_times{0, 10'000, 70'000};
const std::vector<double> v1_values{1, 2, 4};

// A version 1 database as it was (only the first migration, rows written by hand): one series
// with `policy`, one block of v1_times/v1_values, and two 1-minute rollup rows: the one at 0
// with `first_bucket` (count, sum, sum of squares, min, max, first, last and their times) and
// the exact one at 60,000.
std::int64_t version_1_series(keel::pg::connection& c, int policy, std::string_view first_bucket) {
  REQUIRE(keel::pg::migrate(c, "tsdb", tsdb::migrations().first(1)));
  REQUIRE(
      c.query("INSERT INTO tsdb_series (key, metric, label_names, label_values, policy) VALUES ('old{}', "
              "'old', '{}', '{}', $1::int2)",
              static_cast<std::int16_t>(policy)));
  const auto id = c.query("SELECT id FROM tsdb_series").value().value<std::int64_t>().value();
  const auto block = tsdb::encode_block(v1_times, v1_values).value();
  REQUIRE(
      c.query("INSERT INTO tsdb_blocks (series_id, first_time, last_time, count, value_count, min, max, sum, "
              "sum_squares, first, last, data) VALUES ($1, 0, 70000, 3, 3, 1, 4, 7, 21, 1, 4, $2)",
              id, keel::bytes_view(block)));
  REQUIRE(c.query("INSERT INTO tsdb_rollups VALUES ($1, 60000, 0, " + std::string(first_bucket) +
                      "), ($1, 60000, 60000, 1, 4, 16, 4, 4, 4, 4, 70000, 70000)",
                  id));
  return id;
}

// A version 2 database as the releases before the keel_tsdb_* names left it (the first two
// migrations, rows written by hand as their store wrote them): series old_cpu{host="a"} with
// `points` in one block, their 1-minute rollup segment, its newest time and a retention rule.
std::int64_t version_2_series(keel::pg::connection& c, const points& p) {
  REQUIRE(keel::pg::migrate(c, "tsdb", tsdb::migrations().first(2)));
  REQUIRE(
      c.query("INSERT INTO tsdb_series (key, metric, label_names, label_values, policy, newest_time) VALUES "
              "('old_cpu{host=\"a\"}', 'old_cpu', '{host}', '{a}', 0, $1)",
              p.times.back()));
  const auto id = c.query("SELECT id FROM tsdb_series").value().value<std::int64_t>().value();
  const auto block = tsdb::encode_block(p.times, p.values).value();
  const auto summary = tsdb::summarize(p.times, p.values);
  double sum_squares = 0;
  for (const double v : p.values) sum_squares += v * v;
  REQUIRE(c.query(
      "INSERT INTO tsdb_blocks (series_id, first_time, last_time, count, value_count, min, max, sum, "
      "sum_squares, first, last, data) VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11)",
      id, summary.first_time, summary.last_time, static_cast<std::int32_t>(summary.count), summary.min,
      summary.max, summary.sum, sum_squares, summary.first, summary.last, keel::bytes_view(block)));
  // Format 0: the 80-byte big-endian records as they are.
  keel::bytes segment{0};
  keel::byte_writer records(segment);
  const auto buckets = tsdb::aggregate(p.times, p.values, 0, p.times.back() + 1, 60'000);
  for (const auto& b : buckets) {
    records.be(b.start);
    records.be(b.count);
    for (const double d : {b.sum, b.sum_squares, b.min, b.max, b.first, b.last})
      records.be(std::bit_cast<std::uint64_t>(d));
    records.be(b.first_time);
    records.be(b.last_time);
  }
  REQUIRE(
      c.query("INSERT INTO tsdb_rollup_segments (series_id, resolution, first_bucket, last_bucket, replaces, "
              "data) VALUES ($1, 60000, $2, $3, false, $4)",
              id, buckets.front().start, buckets.back().start, keel::bytes_view(segment)));
  REQUIRE(c.query("INSERT INTO tsdb_retention (metric, max_age) VALUES ('old_cpu', 3600000)"));
  return id;
}

// A writer in a process of its own (tests/tsdb/test_writer.cpp), driven a line at a time.
struct writer_process {
  pid_t pid = -1;
  FILE* to = nullptr;
  FILE* from = nullptr;

  explicit writer_process(const std::string& conninfo) {
    int in[2];
    int out[2];
    REQUIRE(::pipe(in) == 0);
    REQUIRE(::pipe(out) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    for (const int fd : {in[0], in[1], out[0], out[1]}) posix_spawn_file_actions_addclose(&actions, fd);
    std::string exe = KEEL_TSDB_TEST_WRITER;
    std::string info = conninfo;
    char* argv[] = {exe.data(), info.data(), nullptr};
    REQUIRE(::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    to = ::fdopen(in[1], "w");
    from = ::fdopen(out[0], "r");
  }
  writer_process(const writer_process&) = delete;
  writer_process& operator=(const writer_process&) = delete;

  /// Sends one command and returns the reply line ("" when the process has gone).
  std::string ask(const std::string& command) {
    std::fprintf(to, "%s\n", command.c_str());
    std::fflush(to);
    char line[4096];
    if (std::fgets(line, sizeof line, from) == nullptr) return "";
    std::string reply(line);
    if (!reply.empty() && reply.back() == '\n') reply.pop_back();
    return reply;
  }

  /// SIGKILL: no destructor, no flush, no goodbye to Postgres.
  void kill() {
    REQUIRE(::kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
    pid = -1;
  }

  ~writer_process() {
    if (to != nullptr) std::fclose(to);
    if (from != nullptr) std::fclose(from);
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

std::string joined(const std::vector<std::int64_t>& items) {
  std::string out;
  for (const auto t : items) out += (out.empty() ? "" : ",") + std::to_string(t);
  return out;
}

std::string error_reply(tsdb::errc e) {
  return "error " + std::to_string(static_cast<int>(e));
}

/// Polls `done` until it holds or 30 s pass; false on the deadline.
template <class F>
bool eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

double exposed(const keel::metrics::registry& r, const std::string& name) {
  const std::string text = r.expose();
  const auto at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + name.size() + 2));
}

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("maintenance: one elected scheduler runs retention and compaction; another takes over") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema);
    // 1970: older than a day by any wall clock.
    const auto expiring = s.series("expiring").value();
    REQUIRE(s.buffer(expiring, std::vector<std::int64_t>{1000, 2000}, std::vector<double>{1, 2}));
    REQUIRE(s.flush());
    REQUIRE(s.set_retention("expiring", 86'400'000));
    // Five small blocks for compaction to merge.
    const auto fragmented = s.series("fragmented").value();
    for (std::int64_t i = 0; i < 5; ++i) {
      REQUIRE(s.buffer(fragmented, std::vector<std::int64_t>{i * 10, i * 10 + 1}, std::vector<double>{1, 2}));
      REQUIRE(s.flush());
    }
    auto c = schema.connect();
    auto blocks_of = [&](std::int64_t id) {
      return c.query("SELECT count(*)::int8 FROM keel_tsdb_blocks WHERE series_id = $1", id)
          .value()
          .value<std::int64_t>()
          .value();
    };
    REQUIRE(blocks_of(fragmented) == 5);

    // A registry each, as two processes would have.
    keel::metrics::registry first_metrics;
    keel::metrics::registry second_metrics;
    auto first = tsdb::maintenance::start(
                     {.conninfo = schema.conninfo, .interval = 50ms, .store = {}, .metrics = &first_metrics})
                     .value();
    auto second =
        tsdb::maintenance::start(
            {.conninfo = schema.conninfo, .interval = 50ms, .store = {}, .metrics = &second_metrics})
            .value();
    REQUIRE(eventually([&] { return first.stats().runs + second.stats().runs >= 2; }));
    const bool first_leads = first.stats().leader;
    auto& leader = first_leads ? first : second;
    auto& follower = first_leads ? second : first;
    auto& leader_metrics = first_leads ? first_metrics : second_metrics;
    auto& follower_metrics = first_leads ? second_metrics : first_metrics;
    CHECK(leader.stats().leader);
    CHECK_FALSE(follower.stats().leader);
    CHECK(follower.stats().runs == 0);
    CHECK(blocks_of(expiring) == 0);
    CHECK(blocks_of(fragmented) == 1);
    CHECK(read_all(s, fragmented, 0, 100).times.size() == 10);
    CHECK(leader.stats().blocks_dropped == 1);
    CHECK(leader.stats().blocks_compacted == 4);
    CHECK(exposed(leader_metrics, "tsdb_maintenance_runs_total") >= 2);
    CHECK(exposed(leader_metrics, "tsdb_maintenance_leader") == 1);
    CHECK(exposed(leader_metrics, "tsdb_maintenance_last_duration_seconds") > 0);
    CHECK(exposed(follower_metrics, "tsdb_maintenance_runs_total") == 0);
    CHECK(exposed(follower_metrics, "tsdb_maintenance_leader") == 0);

    // The leader goes away: the other is elected at its next attempt and runs.
    leader.stop();
    REQUIRE(eventually([&] { return follower.stats().leader && follower.stats().runs >= 1; }));

    // A run that fails is counted and retried.
    REQUIRE(c.execute("ALTER TABLE keel_tsdb_retention RENAME TO keel_tsdb_retention_away"));
    follower.wake();
    REQUIRE(eventually([&] { return follower.stats().failures >= 1; }));
    CHECK(exposed(follower_metrics, "tsdb_maintenance_failures_total") >= 1);
    REQUIRE(c.execute("ALTER TABLE keel_tsdb_retention_away RENAME TO keel_tsdb_retention"));
    const auto runs = follower.stats().runs;
    follower.wake();
    REQUIRE(eventually([&] { return follower.stats().runs > runs; }));
  }

  TEST_CASE("points survive a writer process killed with SIGKILL after flush() returned") {
    keel::test::scratch_schema schema;
    auto reader = open_store(schema);
    writer_process writer(schema.conninfo);
    const auto id = writer.ask("series durable reject");
    REQUIRE(id == std::to_string(reader.series("durable").value()));
    std::vector<std::int64_t> times;
    for (std::int64_t t = 1; t <= 500; ++t) times.push_back(t * 1000);
    const std::string values = joined(std::vector<std::int64_t>(times.size(), 7));
    REQUIRE(writer.ask("buffer " + id + " " + joined(times) + " " + values) == "ok");
    REQUIRE(writer.ask("flush") == "ok");
    REQUIRE(writer.ask("buffer " + id + " 600000,601000 1,2") == "ok");
    writer.kill();
    // Every flushed point, from another process; the two buffered after it were in the killed
    // process's memory only, as buffer() says.
    const auto stored = read_all(reader, std::stoll(id), 0, 1'000'000);
    CHECK(stored.times == times);
    CHECK(stored.values == std::vector<double>(times.size(), 7));
    // The series goes on: a new writer continues after what was flushed.
    writer_process next(schema.conninfo);
    REQUIRE(next.ask("series durable reject") == id);
    CHECK(next.ask("buffer " + id + " 500000 1") == error_reply(tsdb::errc::duplicate_timestamp));
    REQUIRE(next.ask("buffer " + id + " 600000 1") == "ok");
    REQUIRE(next.ask("flush") == "ok");
    CHECK(read_all(reader, std::stoll(id), 0, 1'000'000).times.back() == 600000);
  }

  TEST_CASE("points survive a new store: sealed by count and span, read back bit for bit") {
    keel::test::scratch_schema schema;
    const auto p = random_points(5000, 1'700'000'000'000, 10'000);
    {
      auto s = open_store(schema, {.seal_count = 1000});
      const auto id = s.series("cpu", {{"host", "a"}, {"dc", "x"}}).value();
      REQUIRE(s.buffer(id, p.times, p.values));
      REQUIRE(s.flush());
    }
    auto s = open_store(schema);
    const auto id = s.series("cpu", {{"dc", "x"}, {"host", "a"}}).value();  // label order does not matter
    const auto back =
        read_all(s, id, std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max());
    CHECK(back.times == p.times);
    CHECK(same_bits(back.values, p.values));
    auto blocks = s.connection().query("SELECT count(*), max(count) FROM keel_tsdb_blocks").value();
    CHECK(blocks[0].get<std::int64_t>(0).value() >= 5);
    CHECK(blocks[0].get<std::int32_t>(1).value() <= 1000);
    // A sub-range.
    const auto mid = read_all(s, id, p.times[1234], p.times[4321]);
    CHECK(mid.times == std::vector<std::int64_t>(p.times.begin() + 1234, p.times.begin() + 4321));
  }

  TEST_CASE("ordering policies: reject refuses the whole batch, last write wins, keep both") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema, {.seal_count = 4});
    const auto strict = s.series("m", {{"p", "reject"}}, tsdb::ordering::reject).value();
    REQUIRE(s.buffer(strict, std::vector<std::int64_t>{10, 20, 30}, std::vector<double>{1, 2, 3}));
    CHECK(s.buffer(strict, std::vector<std::int64_t>{40, 25}, std::vector<double>{4, 5}).error() ==
          tsdb::errc::out_of_order);
    CHECK(s.buffer(strict, std::vector<std::int64_t>{30}, std::vector<double>{9}).error() ==
          tsdb::errc::duplicate_timestamp);
    REQUIRE(s.flush());
    CHECK(read_all(s, strict, 0, 100).values == std::vector<double>{1, 2, 3});  // 40 was not kept either
    CHECK(s.buffer(strict, std::vector<std::int64_t>{15}, std::vector<double>{9}).error() ==
          tsdb::errc::out_of_order);

    const auto lww = s.series("m", {{"p", "lww"}}, tsdb::ordering::last_write_wins).value();
    REQUIRE(s.buffer(lww, std::vector<std::int64_t>{10, 20, 30, 40, 50}, std::vector<double>{1, 2, 3, 4, 5}));
    REQUIRE(s.flush());
    REQUIRE(
        s.buffer(lww, std::vector<std::int64_t>{20, 60, 20}, std::vector<double>{7, 6, 8}));  // rewrite twice
    auto got = read_all(s, lww, 0, 100);  // the rewrite still in the head
    CHECK(got.times == std::vector<std::int64_t>{10, 20, 30, 40, 50, 60});
    CHECK(got.values == std::vector<double>{1, 8, 3, 4, 5, 6});
    REQUIRE(s.flush());
    got = read_all(s, lww, 0, 100);  // now across blocks
    CHECK(got.values == std::vector<double>{1, 8, 3, 4, 5, 6});
    const auto buckets = s.aggregate(lww, {.from = 0, .to = 120, .width = 60}).value();
    CHECK(buckets[0].count == 5);
    CHECK(buckets[0].sum == 1 + 8 + 3 + 4 + 5);
    REQUIRE(s.compact(lww, 100));
    CHECK(read_all(s, lww, 0, 100).values == std::vector<double>{1, 8, 3, 4, 5, 6});

    // Rewrites inside a head that overlaps no block.
    const auto fresh = s.series("m", {{"p", "lww-head"}}, tsdb::ordering::last_write_wins).value();
    REQUIRE(s.buffer(fresh, std::vector<std::int64_t>{30, 10, 30}, std::vector<double>{1, 2, 3}));
    got = read_all(s, fresh, 0, 100);
    CHECK(got.times == std::vector<std::int64_t>{10, 30});
    CHECK(got.values == std::vector<double>{2, 3});

    const auto both = s.series("m", {{"p", "both"}}, tsdb::ordering::keep_both).value();
    REQUIRE(s.buffer(both, std::vector<std::int64_t>{10, 20, 20, 5}, std::vector<double>{1, 2, 3, 4}));
    REQUIRE(s.flush());
    got = read_all(s, both, 0, 100);
    CHECK(got.times == std::vector<std::int64_t>{5, 10, 20, 20});
    CHECK(got.values == std::vector<double>{4, 1, 2, 3});
  }

  TEST_CASE("label selection: =, !=, =~, !~ with parameters only") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema);
    const auto a = s.series("http_requests", {{"method", "GET"}, {"code", "200"}}).value();
    const auto b = s.series("http_requests", {{"method", "POST"}, {"code", "500"}}).value();
    const auto c =
        s.series("http_requests", {{"method", "GET"}, {"code", "404"}, {"path", "'; DROP TABLE x; --"}})
            .value();
    (void)s.series("other", {{"method", "GET"}}).value();
    auto ids = [&](std::vector<tsdb::matcher> m) {
      std::vector<std::int64_t> out;
      for (const auto& info : s.select("http_requests", m).value()) out.push_back(info.id);
      return out;
    };
    CHECK(ids({}) == std::vector<std::int64_t>{a, b, c});
    CHECK(ids({{"method", tsdb::match::equal, "GET"}}) == std::vector<std::int64_t>{a, c});
    CHECK(ids({{"method", tsdb::match::not_equal, "GET"}}) == std::vector<std::int64_t>{b});
    CHECK(ids({{"code", tsdb::match::regex, "[45].."}}) == std::vector<std::int64_t>{b, c});
    CHECK(ids({{"code", tsdb::match::regex, "4"}}).empty());  // anchored
    CHECK(ids({{"code", tsdb::match::not_regex, "5.*"}, {"method", tsdb::match::equal, "GET"}}) ==
          std::vector<std::int64_t>{a, c});
    CHECK(ids({{"path", tsdb::match::equal, ""}}) == std::vector<std::int64_t>{a, b});  // missing reads as ""
    CHECK(ids({{"path", tsdb::match::equal, "'; DROP TABLE x; --"}}) == std::vector<std::int64_t>{c});
    CHECK(s.select("http_requests", std::vector<tsdb::matcher>{{"code", tsdb::match::regex, "("}}).error() ==
          tsdb::errc::invalid_label_matcher);
    CHECK(s.select("http_requests", std::vector<tsdb::matcher>{{"", tsdb::match::equal, "x"}}).error() ==
          tsdb::errc::invalid_label_matcher);
    const auto info =
        s.select("http_requests", std::vector<tsdb::matcher>{{"code", tsdb::match::equal, "404"}}).value();
    REQUIRE(info.size() == 1);
    CHECK(info[0].labels.size() == 3);
    CHECK(info[0].labels[0].name == "code");
  }

  TEST_CASE("aggregates from rollups, summaries and raw blocks equal the reference on raw points") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema, {.seal_count = 700, .rollups = {60'000, 3'600'000}});
    const auto id = s.series("temp", {}, tsdb::ordering::keep_both).value();
    const auto p = random_points(20000, 1'700'000'000'000, 10'000);
    for (std::size_t at = 0; at < p.times.size(); at += 3000) {  // several batches, several seals
      const std::size_t n = std::min<std::size_t>(3000, p.times.size() - at);
      REQUIRE(s.buffer(id, std::span(p.times).subspan(at, n), std::span(p.values).subspan(at, n)));
    }
    REQUIRE(s.flush());
    // A few more points left in the head: queries must include them.
    const std::int64_t late = p.times.back() + 10'000;
    REQUIRE(s.buffer(id, std::vector<std::int64_t>{late}, std::vector<double>{12.5}));
    auto all = p;
    all.times.push_back(late);
    all.values.push_back(12.5);
    for (int round = 0; round < 12; ++round) {
      const bool aligned = round % 2 == 0;
      const std::int64_t width =
          aligned ? 3'600'000 * uniform<std::int64_t>(1, 3) : uniform<std::int64_t>(7'000, 9'000'000);
      std::int64_t from = all.times.front() + uniform<std::int64_t>(-1'000'000, 50'000'000);
      std::int64_t to = from + uniform<std::int64_t>(10'000'000, 300'000'000);
      if (aligned) {
        from = tsdb::bucket_start(from, 3'600'000);
        to = tsdb::bucket_start(to, 3'600'000);
      }
      const bool percentiles = round % 3 == 1;
      tsdb::query_plan plan;
      const auto got =
          s.aggregate(id, {.from = from, .to = to, .width = width, .percentiles = percentiles}, &plan)
              .value();
      const auto want = tsdb::aggregate(all.times, all.values, from, to, width, percentiles);
      CAPTURE(round);
      if (aligned && !percentiles) {
        CHECK(plan.rollup == 3'600'000);
        CHECK(plan.blocks_decoded == 0);
      } else {
        CHECK(plan.rollup == 0);
      }
      check_buckets_equal(got, want);
    }
    // Wide buckets on raw blocks: most blocks answered by their summary alone.
    tsdb::query_plan plan;
    const auto wide =
        s.aggregate(id, {.from = all.times.front() - 7, .to = all.times.back() + 11, .width = 86'400'000 + 3},
                    &plan)
            .value();
    CHECK(plan.blocks_summarized > plan.blocks_decoded);
    check_buckets_equal(wide, tsdb::aggregate(all.times, all.values, all.times.front() - 7,
                                              all.times.back() + 11, 86'400'000 + 3));
  }

  TEST_CASE("gapfill works on rollup answers as on raw ones") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema, {.rollups = {60'000}, .points_per_rollup_row = 0});  // always the rollup
    const auto id = s.series("gappy").value();
    points p;
    for (std::int64_t minute = 0; minute < 600; ++minute) {
      if (minute % 37 >= 30) continue;   // 7-minute holes
      if (minute % 101 == 50) continue;  // single missing minutes
      for (std::int64_t k = 0; k < 6; ++k) {
        p.times.push_back(minute * 60'000 + k * 10'000);
        p.values.push_back(static_cast<double>(uniform(0, 1000)) / 10.0);
      }
    }
    REQUIRE(s.buffer(id, p.times, p.values));
    REQUIRE(s.flush());
    for (const auto how : {tsdb::fill::locf, tsdb::fill::linear}) {
      for (const std::size_t max_gap : {std::size_t{0}, std::size_t{1}, std::size_t{5}}) {
        tsdb::query_plan plan;
        const auto got = s.aggregate(id, {.from = 0, .to = 600 * 60'000, .width = 60'000}, &plan).value();
        CHECK(plan.rollup == 60'000);
        const auto want = tsdb::aggregate(p.times, p.values, 0, 600 * 60'000, 60'000);
        std::vector<double> got_avg;
        std::vector<double> want_avg;
        for (const auto& b : got) got_avg.push_back(b.avg());
        for (const auto& b : want) want_avg.push_back(b.avg());
        const auto a = tsdb::gapfill(got_avg, how, max_gap);
        const auto b = tsdb::gapfill(want_avg, how, max_gap);
        REQUIRE(a.size() == b.size());
        std::size_t filled = 0;
        for (std::size_t i = 0; i < a.size(); ++i) {
          CHECK(close(a[i], b[i]));
          if (std::isnan(got_avg[i]) && !std::isnan(a[i])) ++filled;
        }
        if (max_gap != 1) CHECK(filled > 0);
      }
    }
  }

  TEST_CASE("retention drops whole old blocks and their rollups; compaction keeps every point") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema, {.seal_count = 100, .rollups = {60'000}});
    const auto old_metric = s.series("short_lived").value();
    const auto kept = s.series("kept").value();
    const auto p = random_points(1000, 0, 1000);
    REQUIRE(s.buffer(old_metric, p.times, p.values));
    REQUIRE(s.buffer(kept, p.times, p.values));
    REQUIRE(s.flush());
    REQUIRE(s.set_retention("short_lived", 200'000));
    const std::int64_t now = p.times.back();
    const auto dropped = s.apply_retention(now).value();
    CHECK(dropped > 0);
    const auto rest = read_all(s, old_metric, 0, now + 1);
    REQUIRE_FALSE(rest.times.empty());
    // Whole blocks only: what remains starts at a block boundary at most one block before the cutoff.
    CHECK(rest.times.back() == p.times.back());
    CHECK(rest.times.front() <= now - 200'000 + 100 * 1000 * 30);
    // Whole segments before the cutoff are gone, straddling ones rewritten to start after it.
    auto stale = s.connection()
                     .query(
                         "SELECT count(*) FROM keel_tsdb_rollup_segments WHERE series_id = $1 AND "
                         "first_bucket + resolution <= $2",
                         old_metric, now - 200'000)
                     .value();
    CHECK(stale.value<std::int64_t>().value() == 0);
    CHECK(read_all(s, kept, 0, now + 1).times == p.times);
    // The rewritten segments still answer queries, before and after compaction folds them.
    {
      auto reader =
          tsdb::store::open(schema.conninfo, {.rollups = {60'000}, .points_per_rollup_row = 0}).value();
      const std::int64_t from = (now - 200'000) / 60'000 * 60'000 + 60'000;
      const std::int64_t to = (now / 60'000 + 1) * 60'000;
      std::vector<std::int64_t> in_t;
      std::vector<double> in_v;
      for (std::size_t i = 0; i < rest.times.size(); ++i)
        if (rest.times[i] >= from && rest.times[i] < to) {
          in_t.push_back(rest.times[i]);
          in_v.push_back(rest.values[i]);
        }
      for (int round = 0; round < 2; ++round) {
        tsdb::query_plan plan;
        const auto got = reader.aggregate(old_metric, {.from = from, .to = to, .width = 60'000}, &plan);
        REQUIRE_MESSAGE(got, got.error().message());
        CHECK(plan.rollup == 60'000);
        check_buckets_equal(*got, tsdb::aggregate(in_t, in_v, from, to, 60'000));
        REQUIRE(reader.compact(old_metric, 1'000'000, 8192));
      }
    }

    // Compaction: many tiny blocks become few.
    auto small = open_store(schema, {.seal_count = 10});
    const auto id = small.series("tiny").value();
    const auto q = random_points(500, 0, 1000);
    REQUIRE(small.buffer(id, q.times, q.values));
    REQUIRE(small.flush());
    const auto removed = small.compact(id, 50).value();
    CHECK(removed > 40);
    const auto back = read_all(small, id, 0, std::numeric_limits<std::int64_t>::max());
    CHECK(back.times == q.times);
    CHECK(same_bits(back.values, q.values));
  }

  TEST_CASE("retention waits for a compaction in progress, so what it rewrote from old data goes too") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema, {.seal_count = 100, .rollups = {60'000}});
    const auto id = s.series("short_lived").value();
    const auto p = random_points(1000, 0, 1000);
    REQUIRE(s.buffer(id, p.times, p.values));
    REQUIRE(s.flush());
    REQUIRE(s.set_retention("short_lived", 200'000));
    const std::int64_t now = p.times.back();
    const std::int64_t cutoff = now - 200'000;
    // Another process compacting the series: it holds the series row, as compaction does,
    // and will write back a copy of the oldest block and segment (made from data retention drops).
    auto compactor = schema.connect();
    const std::string tables[] = {"keel_tsdb_blocks", "keel_tsdb_rollup_segments"};
    for (const auto& table : tables) {
      const std::string order = table == "keel_tsdb_blocks" ? "first_time" : "first_bucket";
      REQUIRE(compactor.query("CREATE TEMP TABLE saved_" + table + " AS SELECT * FROM " + table +
                                  " WHERE series_id = $1 ORDER BY " + order + " LIMIT 1",
                              id));
    }
    REQUIRE(compactor.execute("BEGIN"));
    REQUIRE(compactor.query("SELECT id FROM keel_tsdb_series WHERE id = $1 FOR UPDATE", id));
    std::atomic<bool> retained{false};
    std::thread retention([&] {
      auto other = tsdb::store::open(schema.conninfo, {.rollups = {60'000}}).value();
      REQUIRE(other.apply_retention(now));
      retained = true;
    });
    // Until retention's connection waits for the series row (a sleep could pass by chance).
    // Asked outside the open transaction: inside one, pg_stat_activity stays a snapshot.
    bool waiting = false;
    for (int polls = 0; polls < 1000 && !waiting && !retained; ++polls) {
      auto waiters = s.connection().query(
          "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
          "datname = current_database() AND query LIKE '%FROM keel_tsdb_series WHERE id = $1 FOR UPDATE%'");
      waiting = waiters.value().value<std::int64_t>().value() > 0;
      if (!waiting) std::this_thread::sleep_for(10ms);
    }
    CHECK(waiting);
    CHECK_FALSE(retained);
    // New rows, as compaction inserts them: every column but the id.
    for (const auto& table : tables) {
      auto columns =
          compactor
              .query(
                  "SELECT string_agg(column_name, ', ') FROM information_schema.columns "
                  "WHERE table_schema = current_schema() AND table_name = $1 AND column_name <> 'id'",
                  table)
              .value()
              .value<std::string>()
              .value();
      REQUIRE(compactor.execute("INSERT INTO " + table + " (" + columns + ") SELECT " + columns +
                                " FROM saved_" + table));
    }
    REQUIRE(compactor.execute("COMMIT"));
    retention.join();
    CHECK(retained);
    auto old_blocks =
        s.connection()
            .query("SELECT count(*) FROM keel_tsdb_blocks WHERE series_id = $1 AND last_time < $2", id,
                   cutoff)
            .value();
    CHECK(old_blocks.value<std::int64_t>().value() == 0);
    auto old_segments = s.connection()
                            .query(
                                "SELECT count(*) FROM keel_tsdb_rollup_segments WHERE series_id = $1 AND "
                                "first_bucket + resolution <= $2",
                                id, cutoff)
                            .value();
    CHECK(old_segments.value<std::int64_t>().value() == 0);
  }

  TEST_CASE("several writers into one database lose nothing") {
    keel::test::scratch_schema schema;
    { (void)open_store(schema); }
    constexpr int writers = 3;
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back([&, w] {
        auto s = tsdb::store::open(schema.conninfo, {.seal_count = 333}).value();
        const auto shared = s.series("shared", {}, tsdb::ordering::keep_both);
        const auto own = s.series("own", {{"writer", std::to_string(w)}});
        if (!shared || !own) {
          ++failures;
          return;
        }
        for (std::int64_t i = 0; i < 2000; ++i) {
          const std::vector<std::int64_t> t{i * 10 + w};
          const std::vector<double> v{static_cast<double>(w)};
          if (!s.buffer(*shared, t, v) || !s.buffer(*own, t, v)) ++failures;
        }
        if (!s.flush()) ++failures;
      });
    }
    for (auto& t : threads) t.join();
    CHECK(failures == 0);
    auto s = open_store(schema);
    const auto shared = s.series("shared", {}, tsdb::ordering::keep_both).value();
    CHECK(read_all(s, shared, 0, 1'000'000).times.size() == 2000 * writers);
    const auto buckets =
        s.aggregate(shared, {.from = 0, .to = 20'000 + 60'000 - 20'000, .width = 60'000}).value();
    CHECK(buckets[0].count == 2000 * writers);  // from the rollup, merged by all three writers
    CHECK(s.select("own").value().size() == writers);
  }

  TEST_CASE(
      "compaction folds rollups into aligned windows; a later fold rewrites only windows that changed") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema, {.seal_count = 500, .rollups = {60'000}, .points_per_rollup_row = 0});
    const auto id = s.series("windows", {}, tsdb::ordering::keep_both).value();
    constexpr std::int64_t minute = 60'000;
    constexpr std::int64_t span = 3000 * minute;  // 3 windows of 1,024 one-minute buckets
    std::vector<std::int64_t> times;
    std::vector<double> values;
    for (std::int64_t t = 0; t < span; t += 10'000) {
      times.push_back(t);
      values.push_back(static_cast<double>(t % 7'000'000) / 1000.0);
    }
    for (std::size_t at = 0; at < times.size(); at += 2000) {
      const std::size_t n = std::min<std::size_t>(2000, times.size() - at);
      REQUIRE(s.buffer(id, std::span(times).subspan(at, n), std::span(values).subspan(at, n)));
      REQUIRE(s.flush());
    }
    auto check = [&] {
      for (const auto& query :
           {std::tuple{std::int64_t{0}, span, minute}, std::tuple{std::int64_t{0}, span, 60 * minute},
            std::tuple{1000 * minute, 1100 * minute, minute}}) {
        const auto from = std::get<0>(query);
        const auto to = std::get<1>(query);
        const auto width = std::get<2>(query);
        CAPTURE(from);
        CAPTURE(width);
        tsdb::query_plan plan;
        const auto got = s.aggregate(id, {.from = from, .to = to, .width = width}, &plan).value();
        CHECK(plan.rollup == minute);
        check_buckets_equal(got, tsdb::aggregate(times, values, from, to, width));
      }
    };
    check();
    const auto segments = [&] {
      std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>> out;  // id, first, last
      auto rows = s.connection()
                      .query(
                          "SELECT id, first_bucket, last_bucket FROM keel_tsdb_rollup_segments "
                          "WHERE series_id = $1 ORDER BY first_bucket",
                          id)
                      .value();
      for (const auto row : rows)
        out.emplace_back(row.get<std::int64_t>(0).value(), row.get<std::int64_t>(1).value(),
                         row.get<std::int64_t>(2).value());
      return out;
    };
    CHECK(segments().size() > 3);  // one per seal (and window)
    (void)s.compact(id, 100'000).value();
    auto folded = segments();
    REQUIRE(folded.size() == 3);
    for (std::size_t w = 0; w < folded.size(); ++w) {
      const auto window = static_cast<std::int64_t>(w) * 1024 * minute;
      CHECK(std::get<1>(folded[w]) == window);
      CHECK(std::get<2>(folded[w]) == std::min(window + 1023 * minute, span - minute));
    }
    check();
    // More points in the middle window only: the next fold rewrites that window alone.
    const std::vector<std::int64_t> more_t{1500 * minute + 1, 1500 * minute + 2};
    const std::vector<double> more_v{100, 200};
    REQUIRE(s.buffer(id, more_t, more_v));
    REQUIRE(s.flush());
    const auto at = std::upper_bound(times.begin(), times.end(), more_t[0]) - times.begin();
    times.insert(times.begin() + at, more_t.begin(), more_t.end());
    values.insert(values.begin() + at, more_v.begin(), more_v.end());
    (void)s.compact(id, 100'000).value();
    const auto refolded = segments();
    REQUIRE(refolded.size() == 3);
    CHECK(std::get<0>(refolded[0]) == std::get<0>(folded[0]));
    CHECK(std::get<0>(refolded[1]) != std::get<0>(folded[1]));
    CHECK(std::get<0>(refolded[2]) == std::get<0>(folded[2]));
    check();
    // A segment over several windows, as versions before windows wrote them: the next fold
    // rewrites every window of its resolution, one segment each.
    REQUIRE(s.connection().query("UPDATE keel_tsdb_rollup_segments SET last_bucket = $2 WHERE id = $1",
                                 std::get<0>(refolded[0]), span - minute));
    (void)s.compact(id, 100'000).value();
    const auto legacy_folded = segments();
    REQUIRE(legacy_folded.size() == 3);
    for (std::size_t w = 0; w < legacy_folded.size(); ++w) {
      CHECK(std::get<0>(legacy_folded[w]) != std::get<0>(refolded[w]));
      CHECK(std::get<1>(legacy_folded[w]) == static_cast<std::int64_t>(w) * 1024 * minute);
    }
    check();
  }

  TEST_CASE("rollups stay exact under last_write_wins with random overwrites, and compaction folds them") {
    keel::test::scratch_schema schema;
    auto s =
        open_store(schema, {.seal_count = 300, .rollups = {60'000, 3'600'000}, .points_per_rollup_row = 0});
    const auto id = s.series("lww", {}, tsdb::ordering::last_write_wins).value();
    constexpr std::int64_t span = 6 * 3'600'000;
    std::map<std::int64_t, double> reference;  // the last write per timestamp
    auto check = [&](bool expect_rollup) {
      std::vector<std::int64_t> times;
      std::vector<double> values;
      for (const auto& [t, v] : reference) {
        times.push_back(t);
        values.push_back(v);
      }
      for (const std::int64_t width : {60'000LL, 300'000LL, 3'600'000LL, 2 * 3'600'000LL}) {
        CAPTURE(width);
        tsdb::query_plan plan;
        const auto got = s.aggregate(id, {.from = 0, .to = span, .width = width}, &plan).value();
        CHECK((plan.rollup != 0) == expect_rollup);
        check_buckets_equal(got, tsdb::aggregate(times, values, 0, span, width));
      }
      CHECK(read_all(s, id, 0, span).times == times);
    };
    for (int round = 0; round < 25; ++round) {
      std::vector<std::int64_t> times;
      std::vector<double> values;
      const auto n = uniform(1, 400);
      for (int i = 0; i < n; ++i) {
        // Mostly new times late in the range, often rewrites of old ones, sometimes NaN.
        const std::int64_t t = uniform<std::int64_t>(0, span / 10'000 - 1) * 10'000;
        times.push_back(t);
        values.push_back(uniform(0, 30) == 0 ? std::nan("")
                                             : static_cast<double>(uniform(-5000, 5000)) / 10.0);
      }
      REQUIRE(s.buffer(id, times, values));
      for (std::size_t i = 0; i < times.size(); ++i) reference[times[i]] = values[i];
      if (round % 3 == 2) {
        REQUIRE(s.flush());
        check(true);
      }
    }
    REQUIRE(s.flush());
    check(true);
    // A head rewriting sealed points: the rollups would count both, so the query merges instead.
    const std::vector<std::int64_t> rewrite{10'000, 20'000};
    const std::vector<double> rewritten{1.5, 2.5};
    REQUIRE(s.buffer(id, rewrite, rewritten));
    reference[10'000] = 1.5;
    reference[20'000] = 2.5;
    check(false);
    REQUIRE(s.flush());
    check(true);
    // A small block overwritten by a later big one keeps losing after compaction.
    {
      auto small = open_store(schema, {.seal_count = 5000, .rollups = {}});
      const auto order = small.series("lww_compact", {}, tsdb::ordering::last_write_wins).value();
      REQUIRE(small.buffer(order, std::vector<std::int64_t>{1, 2}, std::vector<double>{1, 1}));
      REQUIRE(small.flush());
      std::vector<std::int64_t> big_t;
      std::vector<double> big_v;
      for (std::int64_t t = 2; t < 2000; ++t) {
        big_t.push_back(t);
        big_v.push_back(2);
      }
      REQUIRE(small.buffer(order, big_t, big_v));
      REQUIRE(small.flush());
      REQUIRE(small.buffer(order, std::vector<std::int64_t>{5000}, std::vector<double>{3}));
      REQUIRE(small.flush());
      CHECK(small.compact(order, 100).value() == 0);  // {1, 2} overlaps the big block: left alone
      CHECK(read_all(small, order, 0, 3).values == std::vector<double>{1, 2});
    }
    // Compaction folds the segments into one per resolution; the answers do not change.
    (void)s.compact(id, 100'000).value();
    auto segments = s.connection()
                        .query("SELECT count(*) FROM keel_tsdb_rollup_segments WHERE series_id = $1", id)
                        .value();
    CHECK(segments.value<std::int64_t>().value() == 2);
    check(true);
    // A head after every sealed point that rewrites itself: the rollups answer, each time once.
    const auto fresh = s.series("lww_fresh", {}, tsdb::ordering::last_write_wins).value();
    REQUIRE(s.buffer(fresh, std::vector<std::int64_t>{0, 10'000}, std::vector<double>{1, 2}));
    REQUIRE(s.flush());
    REQUIRE(s.buffer(fresh, std::vector<std::int64_t>{70'000, 70'000, 80'000}, std::vector<double>{5, 6, 7}));
    tsdb::query_plan plan;
    const auto got = s.aggregate(fresh, {.from = 0, .to = 120'000, .width = 60'000}, &plan).value();
    CHECK(plan.rollup == 60'000);
    check_buckets_equal(got, tsdb::aggregate(std::vector<std::int64_t>{0, 10'000, 70'000, 80'000},
                                             std::vector<double>{1, 2, 6, 7}, 0, 120'000, 60'000));
  }

  TEST_CASE("reject holds across processes: a seal behind another writer's is refused, nothing lost") {
    keel::test::scratch_schema schema;
    auto a = open_store(schema);
    writer_process b(schema.conninfo);  // the other writer runs in a process of its own
    const auto id = a.series("strict", {}, tsdb::ordering::reject).value();
    const auto b_id = std::to_string(id);
    REQUIRE(b.ask("series strict reject") == b_id);
    // Both opened the series empty; each buffers what looks in order to it.
    const std::vector<std::int64_t> a_times{100, 200, 300};
    const std::vector<double> a_values{1, 2, 3};
    REQUIRE(a.buffer(id, a_times, a_values));
    REQUIRE(b.ask("buffer " + b_id + " 150,250 7,8") == "ok");
    REQUIRE(a.flush());
    CHECK(b.ask("flush") == error_reply(tsdb::errc::out_of_order));
    CHECK(b.ask("rejected") == b_id + " 150,250");
    CHECK(b.ask("rejected") == "none");
    CHECK(read_all(a, id, 0, 1000).times == a_times);  // only a's points were stored
    // b now knows the newest sealed time: its next batch is checked against it up front.
    CHECK(b.ask("buffer " + b_id + " 300 9") == error_reply(tsdb::errc::duplicate_timestamp));
    CHECK(b.ask("rejected") == "none");
    REQUIRE(b.ask("buffer " + b_id + " 400 4") == "ok");
    REQUIRE(b.ask("flush") == "ok");
    // A head that starts exactly at the stored newest time is a duplicate.
    REQUIRE(a.buffer(id, std::vector<std::int64_t>{400, 500}, std::vector<double>{5, 6}));
    CHECK(a.flush().error() == tsdb::errc::duplicate_timestamp);
    CHECK(a.take_rejected().at(0).times == std::vector<std::int64_t>{400, 500});
    CHECK(read_all(a, id, 0, 1000).times == std::vector<std::int64_t>{100, 200, 300, 400});
    // Other series in the same flush are written.
    const auto other = a.series("other").value();
    REQUIRE(a.buffer(id, std::vector<std::int64_t>{350}, std::vector<double>{1}).error() ==
            tsdb::errc::out_of_order);  // a knows 400 now
    REQUIRE(b.ask("buffer " + b_id + " 600 1") == "ok");
    REQUIRE(a.buffer(id, std::vector<std::int64_t>{550}, std::vector<double>{1}));
    REQUIRE(a.buffer(other, std::vector<std::int64_t>{1}, std::vector<double>{1}));
    REQUIRE(b.ask("flush") == "ok");
    CHECK(a.flush().error() == tsdb::errc::out_of_order);
    CHECK(read_all(a, other, 0, 10).times.size() == 1);
    CHECK(a.take_rejected().at(0).times == std::vector<std::int64_t>{550});
    CHECK(read_all(a, id, 0, 1000).times == std::vector<std::int64_t>{100, 200, 300, 400, 600});
  }

  TEST_CASE("a database migrated from version 1 keeps its rollups and newest times") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    const auto id = version_1_series(c, 0, "2, 3, 5, 1, 2, 1, 2, 0, 10000");
    REQUIRE(tsdb::migrate(c));
    auto s = tsdb::store::open(schema.conninfo, {.rollups = {60'000}, .points_per_rollup_row = 0}).value();
    tsdb::query_plan plan;
    const auto got = s.aggregate(id, {.from = 0, .to = 120'000, .width = 60'000}, &plan).value();
    CHECK(plan.rollup == 60'000);
    check_buckets_equal(got, tsdb::aggregate(v1_times, v1_values, 0, 120'000, 60'000));
    CHECK(s.buffer(id, std::vector<std::int64_t>{70'000}, std::vector<double>{1}).error() ==
          tsdb::errc::duplicate_timestamp);
  }

  TEST_CASE("version 1 rollups of a last_write_wins series are not trusted after the migration") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    // Policy 1 (last_write_wins): version 1 counted the overwritten point at 10,000 twice.
    const auto id = version_1_series(c, 1, "3, 8, 29, 1, 5, 1, 2, 0, 10000");
    REQUIRE(tsdb::migrate(c));
    auto s = tsdb::store::open(schema.conninfo, {.rollups = {60'000}, .points_per_rollup_row = 0}).value();
    tsdb::query_plan plan;
    const auto got = s.aggregate(id, {.from = 0, .to = 120'000, .width = 60'000}, &plan).value();
    CHECK(plan.rollup == 0);  // read from the blocks
    check_buckets_equal(got, tsdb::aggregate(v1_times, v1_values, 0, 120'000, 60'000));
    // Buckets sealed after the migration are exact again and come from the rollups.
    std::vector<std::int64_t> later{180'000, 190'000};
    std::vector<double> later_values{7, 8};
    REQUIRE(s.buffer(id, later, later_values));
    REQUIRE(s.flush());
    const auto fresh = s.aggregate(id, {.from = 120'000, .to = 240'000, .width = 60'000}, &plan).value();
    CHECK(plan.rollup == 60'000);
    check_buckets_equal(fresh, tsdb::aggregate(later, later_values, 120'000, 240'000, 60'000));
  }

  TEST_CASE(
      "a database with the tsdb_* tables is renamed to keel_tsdb_* in place: points, rollups, ids kept") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    points old;
    for (std::int64_t i = 0; i < 100; ++i) {
      old.times.push_back(i * 10'000);
      old.values.push_back(static_cast<double>(i % 17) / 4);
    }
    const auto id = version_2_series(c, old);
    const auto migrated = tsdb::migrate(c);
    REQUIRE(migrated);
    CHECK(migrated->applied == std::vector<std::int64_t>{3});
    CHECK(migrated->already_applied == 2);
    // Nothing of the schema keeps an old name: tables, sequences, indexes, constraints.
    const auto relations = c.query(
                                "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE "
                                "relnamespace = current_schema()::regnamespace AND relname LIKE 'tsdb%'")
                               .value();
    CHECK_FALSE(relations.value<std::optional<std::string>>().value().has_value());
    const auto constraints = c.query(
                                  "SELECT count(*)::int8 FROM pg_constraint WHERE connamespace = "
                                  "current_schema()::regnamespace AND conname LIKE 'tsdb%'")
                                 .value();
    CHECK(constraints.value<std::int64_t>().value() == 0);
    const auto renamed = c.query(
                              "SELECT count(*)::int8 FROM pg_class WHERE relnamespace = "
                              "current_schema()::regnamespace AND relname LIKE 'keel_tsdb%'")
                             .value();
    CHECK(renamed.value<std::int64_t>().value() == 15);  // 4 tables, 3 sequences, 8 indexes

    auto s = tsdb::store::open(schema.conninfo, {.rollups = {60'000}, .points_per_rollup_row = 0}).value();
    // The same series, its points bit for bit, its rollup segment and its newest time.
    CHECK(s.series("old_cpu", {{"host", "a"}}).value() == id);
    const auto stored = read_all(s, id, 0, 10'000'000);
    CHECK(stored.times == old.times);
    CHECK(same_bits(stored.values, old.values));
    tsdb::query_plan plan;
    const auto rolled = s.aggregate(id, {.from = 0, .to = 1'200'000, .width = 60'000}, &plan).value();
    CHECK(plan.rollup == 60'000);
    CHECK(plan.rollup_rows == 17);
    check_buckets_equal(rolled, tsdb::aggregate(old.times, old.values, 0, 1'200'000, 60'000));
    CHECK(s.buffer(id, std::vector<std::int64_t>{990'000}, std::vector<double>{1}).error() ==
          tsdb::errc::duplicate_timestamp);

    // More points: the id sequences go on after the old rows, and queries see old and new.
    points more;
    for (std::int64_t i = 100; i < 120; ++i) {
      more.times.push_back(i * 10'000);
      more.values.push_back(static_cast<double>(i));
    }
    REQUIRE(s.buffer(id, more.times, more.values));
    REQUIRE(s.flush());
    const auto other = s.series("new_cpu").value();
    CHECK(other > id);
    const auto block_ids =
        c.query("SELECT min(id), max(id) FROM keel_tsdb_blocks WHERE series_id = $1", id).value();
    CHECK(block_ids[0].get<std::int64_t>(1).value() > block_ids[0].get<std::int64_t>(0).value());
    points all = old;
    all.times.insert(all.times.end(), more.times.begin(), more.times.end());
    all.values.insert(all.values.end(), more.values.begin(), more.values.end());
    const auto reread = read_all(s, id, 0, 10'000'000);
    CHECK(reread.times == all.times);
    CHECK(same_bits(reread.values, all.values));
    const auto both = s.aggregate(id, {.from = 0, .to = 1'200'000, .width = 60'000}, &plan).value();
    CHECK(plan.rollup == 60'000);
    check_buckets_equal(both, tsdb::aggregate(all.times, all.values, 0, 1'200'000, 60'000));

    // The old retention rule still applies (one hour; the old block ends at 990,000).
    const auto dropped = s.apply_retention(990'000 + 3'600'000 + 1);
    REQUIRE(dropped);
    CHECK(*dropped == 1);
    CHECK(read_all(s, id, 0, 10'000'000).times == more.times);
    // Migrating again applies nothing.
    const auto again = tsdb::migrate(c);
    REQUIRE(again);
    CHECK(again->applied.empty());
    CHECK(again->already_applied == 3);
  }

  TEST_CASE("extreme times and query ranges: exact buckets or errc::invalid_range, never a crash") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema);
    constexpr std::int64_t lowest = std::numeric_limits<std::int64_t>::min();
    constexpr std::int64_t highest = std::numeric_limits<std::int64_t>::max();
    constexpr std::int64_t e18 = 1'000'000'000'000'000'000;
    const std::vector<std::int64_t> times{lowest, -9 * e18, -1, 0, 9 * e18 - 1, highest};
    const std::vector<double> values{1, 2, 3, 4, 5, 6};
    const auto sealed = s.series("extreme_sealed").value();
    REQUIRE(s.buffer(sealed, times, values));
    REQUIRE(s.flush());
    // Another series keeps its points in the head, so queries merge both sources.
    const auto head = s.series("extreme_head").value();
    REQUIRE(s.buffer(head, times, values));

    auto reader = tsdb::store::open(schema.conninfo).value();
    const auto stored = read_all(reader, sealed, lowest, highest);
    CHECK(stored.times == std::vector<std::int64_t>(times.begin(), times.end() - 1));
    CHECK(same_bits(stored.values, std::vector<double>(values.begin(), values.end() - 1)));

    for (const auto id : {sealed, head}) {
      CAPTURE(id);
      tsdb::store& on = id == sealed ? reader : s;
      // The showcase request that crashed: 18 buckets of 10^18 over [-9e18, 9e18).
      const auto wide = on.aggregate(id, {.from = -9 * e18, .to = 9 * e18, .width = e18});
      REQUIRE(wide);
      check_buckets_equal(*wide, tsdb::aggregate(times, values, -9 * e18, 9 * e18, e18));
      CHECK(wide->size() == 18);
      // Aligned to the hourly rollup: (to - from) overflows int64 on the rollup path.
      const std::int64_t hours = 3'600'000 * 2'000'000'000'000;
      const auto rolled = on.aggregate(id, {.from = -hours, .to = hours, .width = hours});
      REQUIRE(rolled);
      check_buckets_equal(*rolled, tsdb::aggregate(times, values, -hours, hours, hours));
      CHECK(rolled->size() == 2);
      const auto whole = on.aggregate(id, {.from = lowest + 1, .to = highest, .width = highest});
      REQUIRE(whole);
      check_buckets_equal(*whole, tsdb::aggregate(times, values, lowest + 1, highest, highest));
      CHECK(whole->size() == 2);

      CHECK(on.aggregate(id, {.from = lowest, .to = highest, .width = 1}).error() ==
            tsdb::errc::invalid_range);
      CHECK(on.aggregate(id, {.from = -9 * e18, .to = 9 * e18, .width = 1}).error() ==
            tsdb::errc::invalid_range);
      CHECK(on.aggregate(id, {.from = lowest, .to = 0, .width = e18}).error() == tsdb::errc::invalid_range);
      CHECK(on.aggregate(id, {.from = 0, .to = 0, .width = 1}).error() == tsdb::errc::invalid_range);
      CHECK(on.aggregate(id, {.from = 10, .to = 0, .width = 1}).error() == tsdb::errc::invalid_range);
      CHECK(on.aggregate(id, {.from = 0, .to = 10, .width = 0}).error() == tsdb::errc::invalid_range);
      CHECK(on.aggregate(id, {.from = 0, .to = 10, .width = -5}).error() == tsdb::errc::invalid_range);
    }
    // Refused queries changed nothing.
    REQUIRE(s.flush());
    CHECK(read_all(reader, sealed, lowest, highest).times.size() == 5);
    CHECK(read_all(reader, head, lowest, highest).times.size() == 5);

    // Retention whose cutoff is before INT64_MIN keeps everything; one at 0 drops the blocks
    // before it (points this far apart seal one block each, -1 and 0 together).
    REQUIRE(s.set_retention("extreme_sealed", highest));
    const auto kept = s.apply_retention(lowest);
    REQUIRE(kept);
    CHECK(*kept == 0);
    const auto dropped = s.apply_retention(highest);
    REQUIRE(dropped);
    CHECK(*dropped == 2);
    CHECK(read_all(reader, sealed, lowest, highest).times == std::vector<std::int64_t>{-1, 0, 9 * e18 - 1});
    CHECK(read_all(reader, head, lowest, highest).times.size() == 5);
  }

  TEST_CASE("a damaged block in the database is an error, not a crash") {
    keel::test::scratch_schema schema;
    auto s = open_store(schema);
    const auto id = s.series("x").value();
    const auto p = random_points(100, 0, 1000);
    REQUIRE(s.buffer(id, p.times, p.values));
    REQUIRE(s.flush());
    REQUIRE(s.connection().query("UPDATE keel_tsdb_blocks SET data = substring(data from 1 for 30)"));
    auto scan = s.scan(id, 0, std::numeric_limits<std::int64_t>::max());
    REQUIRE(scan);
    std::int64_t t;
    double v;
    CHECK_FALSE(scan->next(t, v));
    CHECK(scan->error() == tsdb::errc::block_truncated);
    CHECK(
        s.aggregate(id, {.from = 0, .to = 1'000'000'000, .width = 1'000'000, .percentiles = true}).error() ==
        tsdb::errc::block_truncated);
    CHECK(s.buffer(999999, p.times, p.values).error() == tsdb::errc::unknown_series);
  }

  TEST_CASE("a damaged rollup segment in the database is an error, not a crash") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(tsdb::migrate(c));
    auto s = tsdb::store::open(schema.conninfo, {.rollups = {60'000}, .points_per_rollup_row = 0}).value();
    const auto id = s.series("x").value();
    const auto p = random_points(600, 0, 1000);
    REQUIRE(s.buffer(id, p.times, p.values));
    REQUIRE(s.flush());
    const tsdb::aggregate_options aligned{.from = 0, .to = 60'000 * 100, .width = 60'000};
    tsdb::query_plan plan;
    REQUIRE(s.aggregate(id, aligned, &plan));
    REQUIRE(plan.rollup == 60'000);
    std::vector<std::pair<std::int64_t, keel::bytes>> saved;
    for (const auto row : c.query("SELECT id, data FROM keel_tsdb_rollup_segments").value())
      saved.emplace_back(row.get<std::int64_t>(0).value(), row.get<keel::bytes>(1).value());
    REQUIRE_FALSE(saved.empty());
    // A record cut in half (stored as format 0), a segment cut short, an unknown format byte.
    for (const char* damage : {"'\\x00'::bytea || substring(data from 2 for 40)",
                               "substring(data from 1 for length(data) - 3)", "'\\x07'::bytea || data"}) {
      CAPTURE(damage);
      REQUIRE(c.execute(std::string("UPDATE keel_tsdb_rollup_segments SET data = ") + damage));
      CHECK(s.aggregate(id, aligned, &plan).error() == tsdb::errc::block_corrupt);
      for (const auto& [segment, data] : saved)
        REQUIRE(c.query("UPDATE keel_tsdb_rollup_segments SET data = $2 WHERE id = $1", segment,
                        keel::bytes_view(data)));
    }
    // Undamaged again: the same query answers.
    CHECK(s.aggregate(id, aligned, &plan));
  }
}
