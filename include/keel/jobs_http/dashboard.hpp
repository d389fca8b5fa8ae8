#pragma once
/// @file keel/jobs_http/dashboard.hpp
/// @brief The keel::jobs dashboard at /jobs and its JSON API under /api/jobs, mounted on a
/// keel::net server with one call.
#include <keel/core/result.hpp>
#include <keel/jobs/client.hpp>
#include <keel/net/http.hpp>
#include <keel/net/server.hpp>
#include <keel/pg/pool.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace keel::jobs_http {

/// What a request asks to do: look (the page, GET routes) or change jobs and queues (retry,
/// cancel, discard, pause, resume, enqueue).
enum class access { read, act };

/// Decides whether `req` may have `wanted`; a denied request is answered 403 with a JSON error.
/// Runs on a server thread for every dashboard request, so it must be cheap and thread-safe.
using authorize_fn = std::function<bool(const net::request& req, access wanted)>;

/// The longest queue name the routes accept, in bytes: the library's own limit, so a name the
/// routes accept can be paused, resumed and enqueued to alike.
inline constexpr std::size_t max_queue_name_bytes = jobs::max_name_bytes;

/// How the dashboard is mounted.
struct options {
  /// Who may do what. Empty means `default_authorization(action_token)`.
  authorize_fn authorize{};
  /// With the default authorization: a request carrying `Authorization: Bearer <token>` may act
  /// from any address. Empty: actions only from loopback.
  std::string action_token{};
  /// Told about jobs enqueued through `POST /api/jobs`; may be null.
  std::shared_ptr<jobs::observer> observer{};
};

/// The default policy: anyone who reaches the server may read; actions need a loopback peer
/// (127.0.0.0/8, ::1) that addressed the server as localhost, 127.x or [::1] in `Host`, or,
/// when `action_token` is not empty, its bearer token. Either way an action whose `Origin`
/// header names another host than `Host` is refused, so a page on another site cannot make a
/// local browser act for it. Behind a reverse proxy every peer is loopback: there, set a token
/// or an `authorize` hook of your own.
[[nodiscard]] authorize_fn default_authorization(std::string action_token = {});

/// Adds `GET /jobs` (the page) and the `/api/jobs` routes to `server`, served from `pool`.
/// Call before `server.start()`; the job tables must exist (`jobs::migrate`). The routes keep
/// references to `server`'s registry and to `pool`: both must outlive the running server.
void mount(net::server& server, pg::pool& pool, options opts = {});

}  // namespace keel::jobs_http
