#pragma once
/// @file keel/net/router.hpp
/// @brief Routes by method and path pattern (`/jobs/{id}`, `/static/{path...}`), and the
/// handler and middleware types.
#include <keel/net/http.hpp>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel::net {

/// A synchronous request handler. It runs on one of the server's threads and occupies it until
/// it returns, so a handler that blocks (on a database, say) holds one of the N threads.
using handler = std::function<response(const request&)>;

/// The rest of a middleware chain: the next middleware, or the route's handler.
class next_handler {
 public:
  /// Runs the rest of the chain on `req` and returns its response.
  response operator()(request& req) const;

  /// Used by the server to build the chain; `run(context, index, req)` runs step `index`.
  using step_fn = response (*)(const void* context, std::size_t index, request& req);
  next_handler(step_fn run, const void* context, std::size_t index) noexcept
      : run_(run), context_(context), index_(index) {}

 private:
  step_fn run_;
  const void* context_;
  std::size_t index_;
};

/// A middleware: inspects or changes the request, calls `next(req)` to continue (or answers
/// itself to short-circuit), and may change the response on the way out. Middleware run in the
/// order they were added, the first one outermost, for every request including 404s and 405s.
using middleware = std::function<response(request&, const next_handler& next)>;

/// What a lookup found.
struct route_match {
  enum class outcome : std::uint8_t { found, not_found, method_not_allowed };
  outcome result = outcome::not_found;
  const handler* target = nullptr;                            ///< when found
  std::string_view pattern{};                                 ///< the matched pattern, when found
  std::vector<std::pair<std::string, std::string>> params{};  ///< decoded, when found
  std::vector<method> allowed{};  ///< for method_not_allowed: the path's methods, in enum order
};

/// Maps (method, path) to handlers. Patterns are absolute paths whose segments are literals,
/// `{name}` (one segment) or, as the last segment, `{name...}` (the rest of the path, possibly
/// empty). When several patterns match, literal segments win over parameters, left to right.
/// A GET route also answers HEAD. Not thread-safe to modify; lookups may run concurrently.
class router {
 public:
  router();
  ~router();
  router(router&&) noexcept;
  router& operator=(router&&) noexcept;

  /// Adds a route. Throws std::invalid_argument for a malformed pattern or a duplicate
  /// (method, pattern): both are programming errors.
  void add(method m, std::string_view pattern, handler h);

  /// Finds the handler for `m` and `raw_path` (the path as sent, before percent-decoding).
  [[nodiscard]] route_match match(method m, std::string_view raw_path) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::net
