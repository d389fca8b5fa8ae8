// keel's Vault-compatible API driven by a client nobody here wrote: npm's node-vault, installed
// by ./keel test into .keel/clients, against a real Postgres. The node script checks every
// answer (tests/crypto_http/node_vault_client.cjs); this side checks what node-vault left in
// Postgres — a ciphertext it made decrypts here, the audit chain holds every call — and the
// answers to requests no client library would send.
#include <keel/crypto.hpp>
#include <keel/crypto_http.hpp>
#include <keel/crypto_vault.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include <support/http_client.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>
#include <support/subprocess.hpp>

namespace crypto = keel::crypto;

namespace {

constexpr const char* admin_token = "keel-test-admin-token-0123456789";
constexpr const char* limited_token = "keel-test-limited-token-0123456789";

std::filesystem::path clients_dir() {
  if (const char* dir = std::getenv("KEEL_TEST_CLIENTS_DIR")) return dir;
  return KEEL_TEST_CLIENTS_DIR;
}

struct vault_server {
  keel::test::scratch_schema schema;
  keel::pg::pool pool{{.conninfo = schema.conninfo, .max_size = 4}};
  crypto::keyring root{"root"};
  std::unique_ptr<crypto::secret_store> store;
  std::unique_ptr<crypto::transit_engine> transit;
  keel::net::server server{{.address = "127.0.0.1", .port = 0, .threads = 2}};

  vault_server() {
    root.rotate();
    {
      auto c = pool.acquire();
      REQUIRE(c);
      REQUIRE(crypto::secret_store::migrate(**c));
    }
    store = std::make_unique<crypto::secret_store>(crypto::secret_store_options{
        .wrappers = {&root}, .audit_key = crypto::secret_bytes::copy_of(keel::bytes(32, 9))});
    transit = std::make_unique<crypto::transit_engine>(*store);
    keel::crypto_http::mount(
        server,
        {.tokens = {{.id = admin_token, .tenant = "acme", .actor = "admin", .grants = {{"*", {"sudo"}}}},
                    {.id = limited_token,
                     .tenant = "reporting",
                     .actor = "reports",
                     .grants = {{"transit/encrypt/+", {"update"}},
                                {"secret/data/reports/*", {"create", "read"}}}}},
         .pool = &pool,
         .secrets = store.get(),
         .transit = transit.get()});
    REQUIRE(server.start());
  }
  ~vault_server() { server.stop(); }
  vault_server(const vault_server&) = delete;
  vault_server& operator=(const vault_server&) = delete;
};

// A TLS front for keel's plain HTTP server, as a deployment puts one before it: terminates TLS
// with a certificate made for the test (for IP 127.0.0.1) and hands each request to the server.
class tls_front {
 public:
  tls_front(std::uint16_t backend, const std::string& certificate, const std::string& key)
      : backend_(backend) {
    tls_.use_certificate_chain_file(certificate);
    tls_.use_private_key_file(key, boost::asio::ssl::context::pem);
    acceptor_.open(boost::asio::ip::tcp::v4());
    acceptor_.bind({boost::asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    thread_ = std::thread([this] { serve(); });
  }
  tls_front(const tls_front&) = delete;
  tls_front& operator=(const tls_front&) = delete;
  ~tls_front() {
    stopping_ = true;
    boost::asio::ip::tcp::socket wake(ioc_);  // unblocks accept()
    boost::system::error_code ignored;
    wake.connect({boost::asio::ip::make_address("127.0.0.1"), port()}, ignored);
    thread_.join();
  }
  [[nodiscard]] std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

 private:
  void serve() {
    namespace http = boost::beast::http;
    while (!stopping_) {
      boost::system::error_code ec;
      boost::asio::ip::tcp::socket socket(ioc_);
      acceptor_.accept(socket, ec);
      if (ec || stopping_) continue;
      boost::asio::ssl::stream<boost::asio::ip::tcp::socket> tls(std::move(socket), tls_);
      tls.handshake(boost::asio::ssl::stream_base::server, ec);
      if (ec) continue;  // the client refused the certificate
      boost::beast::flat_buffer buffer;
      http::request<http::string_body> req;
      http::read(tls, buffer, req, ec);
      if (ec) continue;
      boost::asio::ip::tcp::socket upstream(ioc_);
      upstream.connect({boost::asio::ip::make_address("127.0.0.1"), backend_}, ec);
      if (ec) continue;
      req.set(http::field::connection, "close");
      http::write(upstream, req, ec);
      boost::beast::flat_buffer upstream_buffer;
      http::response<http::string_body> res;
      if (!ec) http::read(upstream, upstream_buffer, res, ec);
      if (ec) continue;
      http::write(tls, res, ec);
      tls.shutdown(ec);
    }
  }

  std::uint16_t backend_;
  boost::asio::io_context ioc_;
  boost::asio::ssl::context tls_{boost::asio::ssl::context::tls_server};
  boost::asio::ip::tcp::acceptor acceptor_{ioc_};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace

TEST_SUITE("node") {
  TEST_CASE("node-vault drives keel's transit and KV engines unchanged; tokens are held to their paths") {
    const auto modules = clients_dir() / "node_modules" / "node-vault";
    REQUIRE_MESSAGE(std::filesystem::exists(modules),
                    "npm's node-vault is not in "
                        << clients_dir().string()
                        << ": ./keel test installs it (npm install in .keel/clients)");
    vault_server v;
    const auto ran = keel::test::run_command(
        "NODE_PATH='" + (clients_dir() / "node_modules").string() +
        "' node '" KEEL_TEST_SOURCE_DIR "/crypto_http/node_vault_client.cjs' http://127.0.0.1:" +
        std::to_string(v.server.port()) + " " + admin_token + " " + limited_token);
    const auto& output = ran.output;
    INFO("node-vault's output:\n" << output);
    REQUIRE(ran.status == 0);

    // The ciphertext node-vault made opens here, through the engine.
    const auto last_line = output.substr(output.rfind('{'));
    const auto ciphertext = boost::json::parse(last_line).at("ciphertext").as_string();
    auto c = v.pool.acquire();
    REQUIRE(c);
    auto opened = v.transit->decrypt(**c, "orders", std::string_view(ciphertext), {});
    REQUIRE(opened);
    CHECK(std::string(reinterpret_cast<const char*>(opened->data()), opened->size()) == "from node-vault");
    // Every call that touched a secret is in the audit log, under the token's actor, chained.
    auto report = crypto::verify_audit(**c, keel::bytes(32, 9));
    REQUIRE(report);
    CHECK(report->intact);
    auto audit = crypto::read_audit(**c, 0, 100000).value();
    CHECK(std::any_of(audit.begin(), audit.end(),
                      [](const auto& e) { return e.actor == "reports" && e.name == "reports/q3"; }));
  }

  TEST_CASE("requests no client would send: no token, a malformed body, an unknown path, LIST by method") {
    vault_server v;
    const auto port = v.server.port();
    auto no_token = keel::test::http_get(port, "/v1/transit/keys");
    CHECK(no_token.status == 403);
    CHECK(no_token.body.find("permission denied") != std::string::npos);
    auto health = keel::test::http_get(port, "/v1/sys/health");
    CHECK(health.status == 200);
    const std::vector<std::pair<std::string, std::string>> auth{{"X-Vault-Token", admin_token}};
    auto bad_json = keel::test::http_request(port, "POST", "/v1/transit/encrypt/orders", "{not json", auth);
    CHECK(bad_json.status == 400);
    auto unknown = keel::test::http_request(port, "GET", "/v1/nowhere/at/all", "", auth);
    CHECK(unknown.status == 404);
    REQUIRE(keel::test::http_request(port, "POST", "/v1/transit/keys/k1", "{}", auth).status == 200);
    auto listed = keel::test::http_request(port, "LIST", "/v1/transit/keys", "", auth);
    CHECK(listed.status == 200);
    CHECK(listed.body.find("\"k1\"") != std::string::npos);
    auto bearer = keel::test::http_request(port, "GET", "/v1/transit/keys/k1", "",
                                           {{"Authorization", std::string("Bearer ") + admin_token}});
    CHECK(bearer.status == 200);
    // A secret named with a control character is refused, nothing stored.
    auto bad_name =
        keel::test::http_request(port, "POST", "/v1/secret/data/a%01b", R"({"data":{"x":1}})", auth);
    CHECK(bad_name.status == 400);
  }
}

TEST_SUITE("pg") {
  TEST_CASE("vault_transit_kms: data keys wrapped by a transit key over HTTP, the context bound") {
    vault_server v;
    {
      auto c = v.pool.acquire();
      REQUIRE(c);
      REQUIRE(v.transit->create_key(**c, "kek", "admin"));
    }
    const std::string address = "http://127.0.0.1:" + std::to_string(v.server.port());
    auto options = [&](std::string key = "kek", std::string token = admin_token) {
      return crypto::vault_transit_options{.address = address,
                                           .token = crypto::secret_bytes::copy_of(keel::as_bytes(token)),
                                           .mount = "transit",
                                           .key_name = std::move(key),
                                           .timeout = std::chrono::seconds(5)};
    };
    CHECK(crypto::vault_transit_kms::open(options("nope")).error() == crypto::errc::unknown_key);
    CHECK(crypto::vault_transit_kms::open(options("kek", "wrong-token-0123456789")).error() ==
          crypto::errc::vault_permission_denied);
    auto no_scheme = options();
    no_scheme.address = "127.0.0.1:8200";
    CHECK(crypto::vault_transit_kms::open(std::move(no_scheme)).error() ==
          crypto::errc::invalid_vault_address);
    auto closed = options();
    closed.address = "http://127.0.0.1:1";
    CHECK(crypto::vault_transit_kms::open(std::move(closed)).error() == crypto::errc::vault_unreachable);

    auto vault = crypto::vault_transit_kms::open(options());
    REQUIRE(vault);
    const auto data_key = crypto::secret_bytes::random(32);
    auto wrapped = (*vault)->wrap(data_key.view(), keel::as_bytes("tenant=acme"));
    REQUIRE(wrapped);
    CHECK(wrapped->provider == "vault");
    CHECK(std::string(keel::as_chars(wrapped->wrapped)).starts_with("vault:v1:"));
    CHECK((*vault)->unwrap(*wrapped, keel::as_bytes("tenant=acme")).value() == data_key);
    CHECK((*vault)->unwrap(*wrapped, keel::as_bytes("tenant=globex")).error() ==
          crypto::errc::authentication_failed);
    auto changed = *wrapped;
    changed.wrapped[12] = changed.wrapped[12] == 'A' ? 'B' : 'A';
    CHECK((*vault)->unwrap(changed, keel::as_bytes("tenant=acme")).error() ==
          crypto::errc::authentication_failed);

    // An envelope wrapped by Vault and a local keyring; either opens it; rotation keeps it readable.
    crypto::keyring ring("local");
    ring.rotate();
    std::array<crypto::kms*, 2> both{vault->get(), &ring};
    auto sealed = crypto::encrypt(both, keel::as_bytes("payload"), {{"tenant", "acme"}});
    REQUIRE(sealed);
    {
      auto c = v.pool.acquire();
      REQUIRE(c);
      REQUIRE(v.transit->rotate(**c, "kek", "admin"));
    }
    std::array<crypto::kms*, 1> vault_only{vault->get()};
    auto opened = crypto::decrypt(vault_only, *sealed, {.expected_context = {{"tenant", "acme"}}});
    REQUIRE(opened);
    CHECK(opened->used.provider == "vault");
    CHECK(opened->plaintext == keel::bytes{'p', 'a', 'y', 'l', 'o', 'a', 'd'});
    auto rewrapped = crypto::rewrap(vault_only, vault_only, *sealed);
    REQUIRE(rewrapped);
    CHECK(std::string(keel::as_chars(crypto::read_header(*rewrapped)->data_keys[0].wrapped))
              .starts_with("vault:v2:"));
  }
}
