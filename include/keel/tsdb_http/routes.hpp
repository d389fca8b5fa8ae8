#pragma once
/// @file keel/tsdb_http/routes.hpp
/// @brief keel::tsdb's JSON routes under /api/tsdb and its plot page at /tsdb (raw against LTTB,
/// an inline SVG), mounted on a keel::net server with one call.
#include <keel/net/http.hpp>
#include <keel/net/server.hpp>
#include <keel/tsdb/store.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace keel::tsdb_http {

/// What a request asks to do: look (the page, GET routes) or store points (`POST /api/tsdb/ingest`).
enum class access { read, write };

/// Decides whether `req` may have `wanted`; a denied request is answered 403 with a JSON error.
/// Runs on a server thread for every request, so it must be cheap and thread-safe.
using authorize_fn = std::function<bool(const net::request& req, access wanted)>;

/// How the routes are mounted.
struct options {
  /// Who may do what. Empty means `default_authorization(write_token)`.
  authorize_fn authorize{};
  /// With the default authorization: a request carrying `Authorization: Bearer <token>` may
  /// write from any address. Empty: writes only from loopback.
  std::string write_token{};
  /// The series `/tsdb` and `/api/tsdb/plot` show when the request names none. Without one,
  /// such a request is answered 400.
  std::optional<std::int64_t> default_series{};
};

/// The default policy: anyone who reaches the server may read; writes need a loopback peer
/// (127.0.0.0/8, ::1) that addressed the server as localhost, 127.x or [::1] in `Host`, or,
/// when `write_token` is not empty, its bearer token. Either way a write whose `Origin` header
/// names another host than `Host` is refused, so a page on another site cannot make a local
/// browser write for it. Behind a reverse proxy every peer is loopback: there, set a token or
/// an `authorize` hook of your own.
[[nodiscard]] authorize_fn default_authorization(std::string write_token = {});

/// Adds `GET /tsdb` (the plot page) and the `/api/tsdb` routes (ingest, series, query, plot) to
/// `server`, served from `store`. Call before `server.start()`; the tsdb tables must exist
/// (`tsdb::migrate`). A store is not thread-safe, so the routes take turns on it: while the
/// server runs, do not use `store` elsewhere. The routes keep references to `store`: it must
/// outlive the running server.
void mount(net::server& server, tsdb::store& store, options opts = {});

}  // namespace keel::tsdb_http
