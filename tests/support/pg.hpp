#pragma once
// The Postgres behind `pg` tests: one private cluster per test process (or the server named by
// KEEL_DATABASE_URL), and a fresh schema per test case so cases never see each other's tables.
#include <keel/pg/connection.hpp>
#include <keel/pg/local_cluster.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>

#include <support/result.hpp>
#include <unistd.h>

namespace keel::test {

/// The server under test, started on first use: a private cluster per test process, or the
/// server named by KEEL_DATABASE_URL.
inline pg::server_from_env& server() {
  static pg::server_from_env instance = [] {
    auto found = pg::local_cluster::from_env();
    if (!found) FAIL("could not start a local Postgres cluster: " << found.error().message());
    return std::move(*found);
  }();
  return instance;
}

/// The process-wide private cluster; nullptr when KEEL_DATABASE_URL is set.
inline pg::local_cluster* cluster() {
  auto& s = server();
  return s.cluster ? &*s.cluster : nullptr;
}

/// Connection string of the server under test.
inline std::string server_conninfo() {
  return server().conninfo;
}

/// Adds a libpq option (e.g. a search_path) to a URL or key=value connection string.
inline std::string with_options(const std::string& conninfo, const std::string& options) {
  if (conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://")) {
    std::string encoded;
    for (const char c : options) {
      if (c == ' ')
        encoded += "%20";
      else if (c == '=')
        encoded += "%3D";
      else
        encoded += c;
    }
    return conninfo + (conninfo.find('?') == std::string::npos ? "?" : "&") + "options=" + encoded;
  }
  return conninfo + " options='" + options + "'";
}

/// A schema of its own for one test case, dropped afterwards; connect with `conninfo`.
struct scratch_schema {
  std::string name;
  std::string conninfo;

  scratch_schema() {
    static std::atomic<int> counter{0};
    name = "keel_test_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    auto admin = pg::connection::connect(server_conninfo()).value();
    REQUIRE(admin.execute("CREATE SCHEMA " + name));
    conninfo = with_options(server_conninfo(), "-c search_path=" + name);
  }
  ~scratch_schema() {
    if (auto admin = pg::connection::connect(server_conninfo())) {
      (void)admin->execute("DROP SCHEMA IF EXISTS " + name + " CASCADE");
    }
  }
  scratch_schema(const scratch_schema&) = delete;
  scratch_schema& operator=(const scratch_schema&) = delete;

  [[nodiscard]] pg::connection connect() const { return pg::connection::connect(conninfo).value(); }
};

}  // namespace keel::test
