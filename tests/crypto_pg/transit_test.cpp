// The transit engine on a real Postgres: keys kept in the secret store, Vault's ciphertext
// form, contexts, rotation and rewrap, version floors, deletion rules, data keys, and two
// engines (two processes) seeing each other's rotations.
#include <keel/crypto.hpp>
#include <keel/crypto_pg.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include <support/pg.hpp>
#include <support/result.hpp>

namespace crypto = keel::crypto;
using namespace std::chrono_literals;

namespace {

struct fixture {
  keel::test::scratch_schema schema;
  keel::pg::connection c = schema.connect();
  crypto::keyring root{"root"};
  std::unique_ptr<crypto::secret_store> store;
  std::unique_ptr<crypto::transit_engine> transit;

  fixture() {
    root.rotate();
    REQUIRE(crypto::secret_store::migrate(c));
    store = std::make_unique<crypto::secret_store>(crypto::secret_store_options{
        .wrappers = {&root}, .audit_key = crypto::secret_bytes::copy_of(keel::bytes(32, 7))});
    transit = std::make_unique<crypto::transit_engine>(*store);
  }
};

std::string text_of(const crypto::secret_bytes& s) {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE(
      "transit: encrypt and decrypt in Vault's form; a changed byte, another key or context is refused") {
    fixture f;
    auto created = f.transit->create_key(f.c, "orders", "admin");
    REQUIRE(created);
    CHECK(created->latest_version == 1);
    CHECK(created->type == "aes256-gcm96");
    CHECK(f.transit->create_key(f.c, "orders", "admin").error() == crypto::errc::key_exists);
    CHECK(f.transit->create_key(f.c, "bad name", "admin").error() == crypto::errc::invalid_secret_name);
    CHECK(f.transit->create_key(f.c, "rsa", "admin", {.type = "rsa-2048"}).error() ==
          crypto::errc::unsupported_key_type);
    REQUIRE(f.transit->create_key(f.c, "other", "admin"));

    auto ciphertext = f.transit->encrypt(f.c, "orders", keel::as_bytes("4242 4242"), {});
    REQUIRE(ciphertext);
    CHECK(ciphertext->starts_with("vault:v1:"));
    CHECK(text_of(f.transit->decrypt(f.c, "orders", *ciphertext, {}).value()) == "4242 4242");
    CHECK(f.transit->decrypt(f.c, "other", *ciphertext, {}).error() == crypto::errc::authentication_failed);
    CHECK(f.transit->decrypt(f.c, "orders", *ciphertext, keel::as_bytes("ctx")).error() ==
          crypto::errc::authentication_failed);
    CHECK(f.transit->decrypt(f.c, "orders", "vault:v1:!!", {}).error() == crypto::errc::malformed_ciphertext);
    CHECK(f.transit->decrypt(f.c, "orders", "v1:abc", {}).error() == crypto::errc::malformed_ciphertext);
    CHECK(f.transit->decrypt(f.c, "nope", *ciphertext, {}).error() == crypto::errc::secret_not_found);
    // Every data call is audited, failed ones with their reason, under the caller's name.
    REQUIRE(f.transit->decrypt(f.c, "orders", *ciphertext, {}, "billing"));
    auto audit = crypto::read_audit(f.c, 0, 1000).value();
    CHECK(std::any_of(audit.begin(), audit.end(), [](const crypto::audit_entry& e) {
      return e.action == "transit.decrypt" && e.actor == "billing" && e.name == "orders" && e.version == 1 &&
             e.outcome == "ok";
    }));
    CHECK(std::any_of(audit.begin(), audit.end(), [](const crypto::audit_entry& e) {
      return e.action == "transit.decrypt" && e.name == "other" &&
             e.outcome.find("did not verify") != std::string::npos;
    }));
    CHECK(std::any_of(audit.begin(), audit.end(), [](const crypto::audit_entry& e) {
      return e.action == "transit.encrypt" && e.name == "orders";
    }));
    CHECK(crypto::verify_audit(f.c, keel::bytes(32, 7)).value().intact);
    crypto::transit_engine quiet(*f.store, "keel.transit", std::chrono::seconds(5), false);
    const auto rows_before = crypto::read_audit(f.c, 0, 100000).value().size();
    REQUIRE(quiet.decrypt(f.c, "orders", *ciphertext, {}));
    // A cache miss reads the key (that read is audited by the store); the decrypt itself is not.
    const auto after = crypto::read_audit(f.c, 0, 100000).value();
    CHECK(std::none_of(after.begin() + static_cast<std::ptrdiff_t>(rows_before), after.end(),
                       [](const crypto::audit_entry& e) { return e.action.starts_with("transit."); }));
    auto bytes = keel::from_base64(std::string_view(*ciphertext).substr(9)).value();
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      auto changed = bytes;
      changed[i] ^= 0x01U;
      CHECK(f.transit->decrypt(f.c, "orders", "vault:v1:" + keel::to_base64(changed), {}).error() ==
            crypto::errc::authentication_failed);
    }
    // The key's material is an envelope in the store, not in the clear.
    auto raw = f.c.query("SELECT count(*) FROM keel_secret_versions WHERE name = 'transit/orders'");
    CHECK((*raw)[0].get<std::int64_t>(0).value() == 1);
    CHECK(f.transit->list_keys(f.c, "admin").value() == std::vector<std::string>{"orders", "other"});
  }

  TEST_CASE("transit: derived keys need a context, which binds each ciphertext") {
    fixture f;
    REQUIRE(f.transit->create_key(f.c, "tenants", "admin", {.derived = true}));
    CHECK(f.transit->encrypt(f.c, "tenants", keel::as_bytes("x"), {}).error() ==
          crypto::errc::context_required);
    auto sealed = f.transit->encrypt(f.c, "tenants", keel::as_bytes("acme's"), keel::as_bytes("acme"));
    REQUIRE(sealed);
    CHECK(text_of(f.transit->decrypt(f.c, "tenants", *sealed, keel::as_bytes("acme")).value()) == "acme's");
    CHECK(f.transit->decrypt(f.c, "tenants", *sealed, keel::as_bytes("globex")).error() ==
          crypto::errc::authentication_failed);
    CHECK(f.transit->decrypt(f.c, "tenants", *sealed, {}).error() == crypto::errc::context_required);
  }

  TEST_CASE("transit: rotation, rewrap, version floors; deletion only when allowed") {
    fixture f;
    REQUIRE(f.transit->create_key(f.c, "k", "admin"));
    auto v1 = f.transit->encrypt(f.c, "k", keel::as_bytes("old"), {}).value();
    auto rotated = f.transit->rotate(f.c, "k", "admin");
    REQUIRE(rotated);
    CHECK(rotated->latest_version == 2);
    CHECK(rotated->versions.size() == 2);
    auto v2 = f.transit->encrypt(f.c, "k", keel::as_bytes("new"), {}).value();
    CHECK(v2.starts_with("vault:v2:"));
    CHECK(text_of(f.transit->decrypt(f.c, "k", v1, {}).value()) == "old");
    auto rewrapped = f.transit->rewrap(f.c, "k", v1, {});
    REQUIRE(rewrapped);
    CHECK(rewrapped->starts_with("vault:v2:"));
    CHECK(text_of(f.transit->decrypt(f.c, "k", *rewrapped, {}).value()) == "old");
    // An older version on request, until min_encryption_version forbids it.
    CHECK(f.transit->encrypt(f.c, "k", keel::as_bytes("x"), {}, 1).value().starts_with("vault:v1:"));
    CHECK(f.transit->encrypt(f.c, "k", keel::as_bytes("x"), {}, 3).error() == crypto::errc::unknown_key);
    CHECK(f.transit->configure(f.c, "k", {.min_decryption_version = 3}, "admin").error() ==
          crypto::errc::invalid_key_config);
    auto configured =
        f.transit->configure(f.c, "k", {.min_decryption_version = 2, .min_encryption_version = 2}, "admin");
    REQUIRE(configured);
    CHECK(configured->min_decryption_version == 2);
    CHECK(f.transit->decrypt(f.c, "k", v1, {}).error() == crypto::errc::key_disabled);
    CHECK(f.transit->encrypt(f.c, "k", keel::as_bytes("x"), {}, 1).error() == crypto::errc::key_disabled);
    CHECK(text_of(f.transit->decrypt(f.c, "k", v2, {}).value()) == "new");

    CHECK(f.transit->delete_key(f.c, "k", "admin").error() == crypto::errc::deletion_not_allowed);
    REQUIRE(f.transit->configure(f.c, "k", {.deletion_allowed = true}, "admin"));
    REQUIRE(f.transit->delete_key(f.c, "k", "admin"));
    CHECK(f.transit->decrypt(f.c, "k", v2, {}).error() == crypto::errc::secret_not_found);
    CHECK(f.transit->list_keys(f.c, "admin").value().empty());
    auto material = f.c.query(
        "SELECT count(*) FROM keel_secret_versions WHERE name = 'transit/k' AND envelope IS NOT NULL");
    CHECK((*material)[0].get<std::int64_t>(0).value() == 0);  // every version's material destroyed
    // Every change was audited, and the chain holds.
    CHECK(crypto::verify_audit(f.c, keel::bytes(32, 7)).value().intact);
  }

  TEST_CASE("transit: data keys, plaintext and wrapped") {
    fixture f;
    REQUIRE(f.transit->create_key(f.c, "dk", "admin"));
    auto with_plaintext = f.transit->data_key(f.c, "dk", {}, true);
    REQUIRE(with_plaintext);
    REQUIRE(with_plaintext->plaintext);
    CHECK(with_plaintext->plaintext->size() == 32);
    CHECK(f.transit->decrypt(f.c, "dk", with_plaintext->ciphertext, {}).value() ==
          *with_plaintext->plaintext);
    auto wrapped = f.transit->data_key(f.c, "dk", {}, false, 512);
    REQUIRE(wrapped);
    CHECK(!wrapped->plaintext);
    CHECK(f.transit->decrypt(f.c, "dk", wrapped->ciphertext, {}).value().size() == 64);
    CHECK(f.transit->data_key(f.c, "dk", {}, true, 100).error() == crypto::errc::invalid_key_size);
  }

  TEST_CASE("transit: two engines on one store (two processes) see each other's rotations") {
    fixture f;
    crypto::transit_engine other(*f.store, "keel.transit",
                                 1h);  // a long cache: only a newer version reloads it
    auto other_c = f.schema.connect();
    REQUIRE(f.transit->create_key(f.c, "shared", "admin"));
    auto first = other.encrypt(other_c, "shared", keel::as_bytes("from B"), {}).value();
    REQUIRE(f.transit->rotate(f.c, "shared", "admin"));
    auto second = f.transit->encrypt(f.c, "shared", keel::as_bytes("from A"), {}).value();
    CHECK(second.starts_with("vault:v2:"));
    // B's cache holds version 1 only; a v2 ciphertext makes it read the key again.
    CHECK(text_of(other.decrypt(other_c, "shared", second, {}).value()) == "from A");
    CHECK(text_of(f.transit->decrypt(f.c, "shared", first, {}).value()) == "from B");
    // A rotation through B builds on A's (version 3, not a second version 2).
    CHECK(other.rotate(other_c, "shared", "admin").value().latest_version == 3);
    CHECK(f.transit->rotate(f.c, "shared", "admin").value().latest_version == 4);
  }
}
