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
  std::unique_ptr<pg::local_cluster> cluster;  ///< null when KEEL_DATABASE_URL names the server
  std::string conninfo;

  /// Picks or starts the server; prints why and returns nothing when it cannot.
  static std::optional<postgres> start() {
    postgres p;
    if (const char* url = std::getenv("KEEL_DATABASE_URL"); url != nullptr && *url != '\0') {
      p.conninfo = url;
      return p;
    }
    auto started = pg::local_cluster::start();
    if (!started) {
      std::fprintf(stderr, "could not start a local Postgres: %s\n", started.error().message().c_str());
      return std::nullopt;
    }
    p.cluster = std::make_unique<pg::local_cluster>(std::move(*started));
    p.conninfo = p.cluster->conninfo();
    return p;
  }
};

}  // namespace keel::bench
