#pragma once
// What every showcase part gets: the server to add routes to, the Postgres pool, and the index
// page's list of links. Each keel component that has routes lives in its own file
// (examples/showcase/<component>.cpp) and exposes one mount function called by main.cpp.
#include <keel/core/result.hpp>
#include <keel/net.hpp>
#include <keel/pg/pool.hpp>

#include <string>
#include <string_view>
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

/// A page of the showcase's own (the ledger and ratelimit pages): the shared style, a bar
/// linking the index and every page, then `body` (HTML written by the showcase, never user
/// data) and `script` (the page's JavaScript, which puts values in with textContent).
std::string page(std::string_view title, std::string_view body, std::string_view script);
/// The bar linking the index and every page.
std::string nav_bar();

// One per component with routes; each applies its migrations and adds its routes.
// keel::result<void> mount_<component>(context& ctx);
keel::result<void> mount_ledger(context& ctx);
keel::result<void> mount_ratelimit(context& ctx);
keel::result<void> mount_tsdb(context& ctx);    // examples/showcase/tsdb.cpp: demo series, keel::tsdb_http
keel::result<void> mount_jobs(context& ctx);    // examples/showcase/jobs.cpp: demo worker, keel::jobs_http
keel::result<void> mount_events(context& ctx);  // examples/showcase/events.cpp: orders, event-sourced
keel::result<void> mount_crypto(context& ctx);  // examples/showcase/crypto.cpp: envelopes, a keyring
keel::result<void> mount_dsl(context& ctx);     // examples/showcase/dsl.cpp: a shop in PRQL under roles
keel::result<void> mount_crdt(context& ctx);    // examples/showcase/crdt.cpp: two replicas of a text
keel::result<void> mount_sync(context& ctx);    // examples/showcase/sync.cpp: Yjs rooms, a shared text

}  // namespace showcase
