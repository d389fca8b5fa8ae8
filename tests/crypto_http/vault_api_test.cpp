// keel's Vault-compatible API driven by a client nobody here wrote: npm's node-vault, installed
// by ./keel test into .keel/clients, against a real Postgres. The node script checks every
// answer (tests/crypto_http/node_vault_client.cjs); this side checks what node-vault left in
// Postgres — a ciphertext it made decrypts here, the audit chain holds every call — and the
// answers to requests no client library would send.
#include <keel/crypto.hpp>
#include <keel/crypto_http.hpp>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <support/http_client.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>

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

}  // namespace

TEST_SUITE("node") {
  TEST_CASE("node-vault drives keel's transit and KV engines unchanged; tokens are held to their paths") {
    const auto modules = clients_dir() / "node_modules" / "node-vault";
    REQUIRE_MESSAGE(std::filesystem::exists(modules),
                    "npm's node-vault is not in "
                        << clients_dir().string()
                        << ": ./keel test installs it (npm install in .keel/clients)");
    vault_server v;
    const std::string command = "NODE_PATH='" + (clients_dir() / "node_modules").string() + "' node '" +
                                KEEL_TEST_SOURCE_DIR "/crypto_http/node_vault_client.cjs' http://127.0.0.1:" +
                                std::to_string(v.server.port()) + " " + admin_token + " " + limited_token +
                                " 2>&1";
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
    REQUIRE(pipe);
    std::string output;
    std::array<char, 4096> buffer{};
    while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe.get()) != nullptr)
      output += buffer.data();
    const int status = ::pclose(pipe.release());
    INFO("node-vault's output:\n" << output);
    REQUIRE(status == 0);

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
