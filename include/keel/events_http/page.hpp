#pragma once
/// @file keel/events_http/page.hpp
/// @brief The keel::events page at /events and its read-only JSON API under /api/events
/// (streams, a stream's events, readers with their lag, consumer groups, the horizon), mounted on a keel::net
/// server with one call.
#include <keel/events/store.hpp>
#include <keel/net/http.hpp>
#include <keel/net/server.hpp>
#include <keel/pg/pool.hpp>

#include <functional>

namespace keel::events_http {

/// Decides whether `req` may read the page and its API; a denied request is answered 403.
/// Runs on a server thread for every request, so it must be cheap and thread-safe.
using authorize_fn = std::function<bool(const net::request& req)>;

struct options {
  /// Who may look. Empty: anyone who reaches the server (the page only reads; events may hold
  /// personal data, so give it a hook on a public server).
  authorize_fn authorize{};
  /// The store whose options (upcasters) the reads use; the default store when null. Must
  /// outlive the server.
  const events::store* store = nullptr;
};

/// Adds `GET /events` (the page) and `GET /api/events/streams`, `/api/events/streams/{name}`,
/// `/api/events/readers`, `/api/events/groups` to `server`, served from `pool`. Call before `server.start()`;
/// the tables must exist (`events::migrate`). `pool` must outlive the running server.
void mount(net::server& server, pg::pool& pool, options opts = {});

}  // namespace keel::events_http
