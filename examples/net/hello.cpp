// docs/net.md quotes this file; tests/cmake checks they agree.
#include <keel/net.hpp>

#include <cstdio>
#include <string>

int main() {
  keel::net::server server({.port = 8080, .handle_signals = true});  // Ctrl-C drains, then exits

  server.get("/hello/{name}", [](const keel::net::request& req) {
    return keel::net::json_response({{"hello", req.path_param("name").value_or("world")}});
  });
  // A malformed body never reaches the lambda: it is answered 400 with a JSON error.
  server.post("/echo", keel::net::json_handler([](const keel::net::request&, const boost::json::value& body) {
                return keel::net::json_response(body, keel::net::status::created);
              }));
  server.websocket("/chat",
                   {.on_open = [](const auto& c) { c.join("lobby"); },
                    .on_message = [&server](const auto&, std::string_view text,
                                            bool) { server.broadcast("lobby", std::string(text)); }});
  // GET /metrics, /healthz and /readyz come built in.
  if (auto ran = server.run(); !ran) return std::fprintf(stderr, "%s\n", ran.error().message().c_str()), 1;
  return 0;
}
