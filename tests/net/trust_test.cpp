#include <keel/net/http.hpp>
#include <keel/net/trust.hpp>

#include <doctest/doctest.h>

#include <string>

namespace {

keel::net::request from(std::string address, std::string host) {
  keel::net::request req;
  req.remote_address = std::move(address);
  req.headers.set("Host", host);
  return req;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("loopback addresses: 127/8 and ::1, also mapped into IPv6; nothing else") {
    using keel::net::is_loopback_address;
    CHECK(is_loopback_address("127.0.0.1"));
    CHECK(is_loopback_address("127.255.0.9"));
    CHECK(is_loopback_address("::1"));
    CHECK(is_loopback_address("::ffff:127.0.0.1"));
    CHECK_FALSE(is_loopback_address("10.0.0.1"));
    CHECK_FALSE(is_loopback_address("::ffff:10.0.0.1"));
    CHECK_FALSE(is_loopback_address("::2"));
    CHECK_FALSE(is_loopback_address(""));
  }

  TEST_CASE("a Host names loopback only as localhost, 127.x or [::1], with or without a port") {
    using keel::net::host_names_loopback;
    CHECK(host_names_loopback("localhost"));
    CHECK(host_names_loopback("localhost:8080"));
    CHECK(host_names_loopback("127.0.0.1:80"));
    CHECK(host_names_loopback("[::1]"));
    CHECK(host_names_loopback("[::1]:8080"));
    CHECK_FALSE(host_names_loopback("[::1]8080"));
    CHECK_FALSE(host_names_loopback("rebound.example:8080"));
    CHECK_FALSE(host_names_loopback("localhost.example"));
    CHECK_FALSE(host_names_loopback(""));
  }

  TEST_CASE("local_or_token: loopback by address and name, or the bearer token; never cross-site") {
    using keel::net::local_or_token;
    CHECK(local_or_token(from("127.0.0.1", "localhost:8080"), ""));
    // DNS rebinding: the peer is loopback, but the browser addressed another name.
    CHECK_FALSE(local_or_token(from("127.0.0.1", "rebound.example:8080"), ""));
    CHECK_FALSE(local_or_token(from("192.0.2.7", "localhost:8080"), ""));

    auto remote = from("192.0.2.7", "keel.example");
    remote.headers.set("Authorization", "Bearer s3cret");
    CHECK(local_or_token(remote, "s3cret"));
    CHECK(keel::net::bearer_token_matches(remote, "s3cret"));
    CHECK_FALSE(local_or_token(remote, "s3creT"));
    CHECK_FALSE(local_or_token(remote, "s3cret-longer"));
    CHECK_FALSE(local_or_token(remote, ""));  // no token configured: a bearer header means nothing
    remote.headers.set("Authorization", "Basic s3cret");
    CHECK_FALSE(local_or_token(remote, "s3cret"));

    auto local = from("127.0.0.1", "localhost:8080");
    local.headers.set("Origin", "http://localhost:8080");
    CHECK(keel::net::same_origin_or_none(local));
    CHECK(local_or_token(local, ""));
    local.headers.set("Origin", "https://evil.example");
    CHECK_FALSE(keel::net::same_origin_or_none(local));
    CHECK_FALSE(local_or_token(local, ""));
    // A page of another site does not get the token's rights either.
    local.headers.set("Authorization", "Bearer s3cret");
    CHECK_FALSE(local_or_token(local, "s3cret"));
  }
}
TEST_SUITE("unit") {
  TEST_CASE("escape_html: the five characters that end text or an attribute become entities") {
    CHECK(keel::net::escape_html(R"(<a href="x" title='y'>&</a>)") ==
          "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;");
    CHECK(keel::net::escape_html("plain text, ünïcode") == "plain text, ünïcode");
    CHECK(keel::net::escape_html("").empty());
  }
}
