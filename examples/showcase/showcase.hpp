#pragma once
// What every showcase part gets: the server to add routes to, the Postgres pool, and the index
// page's list of links. Each keel component that has routes lives in its own file
// (examples/showcase/<component>.cpp) and exposes one mount function called by main.cpp.
#include <keel/core/result.hpp>
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>

#include <string>
#include <vector>

namespace showcase {

/// One line on the index page under "Endpoints".
struct endpoint {
  std::string method;  ///< "GET", "POST", ...
  std::string path;    ///< linked when the method is GET
  std::string what;
};

struct context {
  keel::net::server& server;
  keel::pg::pool& pool;
  std::string conninfo;             ///< the database the pool connects to
  std::vector<endpoint> endpoints;  ///< mount functions append theirs
  std::string state_dir = ".keel";  ///< files kept across restarts (beside the embedded database)
};

// One per component with routes; each applies its migrations and adds its routes.
// keel::result<void> mount_<component>(context& ctx);
keel::result<void> mount_ledger(context& ctx);
keel::result<void> mount_ratelimit(context& ctx);
keel::result<void> mount_tsdb(context& ctx);  // examples/showcase/tsdb.cpp: demo series, keel::tsdb_http
keel::result<void> mount_jobs(context& ctx);
keel::result<void> mount_events(
    context& ctx);  // examples/showcase/events.cpp: an order's lifecycle, event-sourced  //
                    // examples/showcase/jobs.cpp: demo worker, keel::jobs_http

}  // namespace showcase
