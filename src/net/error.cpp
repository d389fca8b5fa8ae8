#include <keel/net/error.hpp>

namespace keel::net {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_address:
      return "server_options::address is not an IP address; use a literal such as 127.0.0.1, 0.0.0.0 or ::";
    case errc::already_started:
      return "the server is already started; create a new server to listen again";
    case errc::malformed_request:
      return "the request line or a header does not parse as HTTP/1.1; check the client's request";
    case errc::invalid_json:
      return "the request body is not valid JSON; send a JSON document with Content-Type application/json";
    case errc::invalid_path:
      return "the request path must be absolute and must not contain '..' segments or encoded NUL bytes";
    case errc::header_too_large:
      return "the request line and headers exceed the server's limit (server_options::max_header_bytes); "
             "send fewer or smaller headers";
    case errc::body_too_large:
      return "the request body exceeds the server's limit (server_options::max_body_bytes); send a smaller "
             "body";
    case errc::not_found:
      return "no route matches this path; check the URL";
    case errc::method_not_allowed:
      return "the path exists but not with this method; the Allow header lists the methods it accepts";
    case errc::too_many_connections:
      return "the server has reached its connection limit (server_options::max_connections); retry later";
    case errc::upgrade_required:
      return "this path is a WebSocket endpoint; connect with a WebSocket client";
    case errc::shutting_down:
      return "the server is shutting down; send new requests to another instance";
    case errc::handler_failed:
      return "the handler threw an exception; see the server log";
    case errc::bad_transfer_encoding:
      return "Transfer-Encoding must end in chunked, name chunked once, and not come with Content-Length or "
             "in "
             "HTTP/1.0 (RFC 9112 section 6); send either Content-Length or Transfer-Encoding: chunked";
    case errc::unsupported_transfer_coding:
      return "the server decodes only the chunked transfer coding; send the body uncompressed or use "
             "Content-Encoding";
    case errc::bad_host:
      return "an HTTP/1.1 request must carry exactly one Host header, holding a host name or address and an "
             "optional port (RFC 9112 section 3.2)";
    case errc::too_many_client_connections:
      return "this address has reached its connection limit (server_options::max_connections_per_client); "
             "reuse open connections or retry later";
  }
  return "unknown keel.net error";
}

constexpr enum_error_category<errc> category{"keel.net", &describe};

}  // namespace

const error_category& net_category() noexcept {
  return category;
}

}  // namespace keel::net
