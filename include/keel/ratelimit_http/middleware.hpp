#pragma once
/// @file keel/ratelimit_http/middleware.hpp
/// @brief A keel::net middleware: 429 with RateLimit-Policy, RateLimit and Retry-After headers
/// (draft-ietf-httpapi-ratelimit-headers), 403 for the deny list.
#include <keel/net/http.hpp>
#include <keel/net/router.hpp>
#include <keel/ratelimit/limiter.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::ratelimit {

/// When the RateLimit headers are sent.
enum class header_mode : std::uint8_t {
  always,        ///< on every response a policy applied to
  when_limited,  ///< only on 429s and soft-limited (warned) responses
  never,
};

/// An IPv4 or IPv6 address. IPv4 is held IPv4-mapped (`::ffff:a.b.c.d`), so "10.0.0.1" and
/// "::ffff:10.0.0.1" are the same address.
struct ip_address {
  std::array<std::uint8_t, 16> bytes{};  ///< network byte order

  /// @returns the address, or nullopt for text that is not one (no port, no brackets, no zone).
  [[nodiscard]] static std::optional<ip_address> parse(std::string_view text) noexcept;
  [[nodiscard]] bool is_v4() const noexcept;
  /// "10.0.0.1" for IPv4 (also when it was written mapped), RFC 5952 form for IPv6.
  [[nodiscard]] std::string to_string() const;
  friend bool operator==(const ip_address&, const ip_address&) = default;
};

/// A block of addresses: "10.0.0.0/8", "2001:db8::/32", or one address ("127.0.0.1", "::1").
class address_range {
 public:
  /// @returns the range (bits past the prefix are ignored), or errc::invalid_policy for text
  /// that is no address, or a prefix longer than the address (32 for IPv4, 128 for IPv6).
  [[nodiscard]] static result<address_range> parse(std::string_view text) noexcept;
  /// True when the first `prefix` bits of `address` are the range's.
  [[nodiscard]] bool contains(const ip_address& address) const noexcept;

 private:
  ip_address base_{};
  unsigned prefix_bits_ = 128;  // of the 128-bit (IPv4-mapped for IPv4) form
};

/// The header trusted proxies write the client's address into.
enum class forwarding_header : std::uint8_t {
  x_forwarded_for,  ///< `X-Forwarded-For: client, proxy1, proxy2`
  forwarded,        ///< RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:443"`
};

/// Whom to believe about the client's address. A hop is trusted when it is one of the nearest
/// `hops` (the peer is the first) or its address is in `proxies`.
struct proxy_trust {
  std::vector<address_range> proxies{};
  std::uint32_t hops = 0;
  forwarding_header header = forwarding_header::x_forwarded_for;
};

/// The client's address for a request from `peer` that carried `forwarded` (the values of every
/// `trust.header` field, joined by commas; empty when absent). With nothing trusted, or a peer
/// that is not trusted, it is the peer. Otherwise the header is walked from the right (the
/// nearest hop) past trusted hops: the first untrusted address is the client. An entry that is no
/// address (`unknown`, an obfuscated `_name`, garbage) stops the walk and is the client as
/// written. When every hop is trusted, the leftmost is the client.
[[nodiscard]] std::string client_address(const proxy_trust& trust, std::string_view peer,
                                         std::string_view forwarded);

/// Options of the middleware.
struct middleware_options {
  /// Where the user, API key and tenant come from. By default: request attributes "user" and
  /// "tenant" (set by an auth middleware that runs first), the "X-API-Key" header, and the
  /// client address (client_address() with the trust below).
  std::function<request_attributes(const net::request&)> attributes{};
  /// The cost of a request; 1 by default.
  std::function<std::uint64_t(const net::request&)> cost{};
  header_mode headers = header_mode::always;
  /// The proxies in front of the server, as addresses or CIDRs ("10.0.0.0/8", "::1"): their
  /// forwarding header is believed. Nothing is trusted by default: the peer is the client.
  std::vector<std::string> trusted_proxies{};
  /// Trust the nearest this many hops whatever their address (the peer is the first).
  std::uint32_t trusted_hops = 0;
  /// The header those proxies write; the other one is never read (a client can send it too).
  forwarding_header forwarded_header = forwarding_header::x_forwarded_for;
};

/// The middleware: asks `l` (which must outlive the server) about every request. Throws
/// boost::system::system_error (errc::invalid_policy) when an entry of `trusted_proxies` is not
/// an address or CIDR: check configured ones with address_range::parse first. A denied one
/// is answered 429 with Retry-After (whole seconds, at least 1) and a JSON error naming the
/// policy; a refused one 403. A warned one goes through with request attribute
/// "ratelimit.warning" set to the policy name, so handlers can see it too.
[[nodiscard]] net::middleware middleware(limiter& l, middleware_options options = {});

/// `"api";q=10;w=1, "api/1";q=1000;w=3600`: each enforced limit in the verdict (a policy with
/// several limits names them policy/index after the first).
[[nodiscard]] std::string ratelimit_policy_header(const verdict& v);
/// `"api";r=0;t=30`: remaining units and whole seconds until the quota is full again.
[[nodiscard]] std::string ratelimit_header(const verdict& v);

}  // namespace keel::ratelimit
