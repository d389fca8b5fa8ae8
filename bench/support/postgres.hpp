#pragma once
// The Postgres a benchmark runs against: the server named by KEEL_DATABASE_URL, or a private
// cluster started for the run and stopped when the benchmark exits.
#include <keel/pg/local_cluster.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

namespace keel::bench {

struct postgres {
  std::optional<pg::local_cluster> cluster;  ///< empty when KEEL_DATABASE_URL names the server
  std::string conninfo;

  /// Picks or starts the server; prints why and returns nothing when it cannot.
  static std::optional<postgres> start() {
    auto found = pg::local_cluster::from_env();
    if (!found) {
      std::fprintf(stderr, "could not start a local Postgres: %s\n", found.error().message().c_str());
      return std::nullopt;
    }
    return postgres{.cluster = std::move(found->cluster), .conninfo = std::move(found->conninfo)};
  }
};

}  // namespace keel::bench
