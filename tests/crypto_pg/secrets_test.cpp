// keel::crypto_pg on a real Postgres: versions, metadata, soft delete and destroy, listing
// without keys, a value copied onto another secret by SQL refused, rotation and rewrap, and the
// audit chain catching a changed, removed, reordered or cut row.
#include <keel/crypto.hpp>
#include <keel/crypto_pg.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <support/pg.hpp>
#include <support/result.hpp>

namespace crypto = keel::crypto;

namespace {

crypto::secret_bytes test_audit_key() {
  return crypto::secret_bytes::copy_of(keel::bytes(32, 0x42));
}

std::string text_of(const crypto::secret_value& v) {
  return {reinterpret_cast<const char*>(v.value.data()), v.value.size()};
}

struct fixture {
  keel::test::scratch_schema schema;
  keel::pg::connection c = schema.connect();
  crypto::keyring ring{"secrets"};
  std::unique_ptr<crypto::secret_store> store;

  fixture() {
    ring.rotate();
    REQUIRE(crypto::secret_store::migrate(c));
    REQUIRE(crypto::secret_store::migrate(c));  // idempotent
    store = std::make_unique<crypto::secret_store>(
        crypto::secret_store_options{.wrappers = {&ring}, .audit_key = test_audit_key()});
  }
  crypto::audit_report verify() { return crypto::verify_audit(c, test_audit_key().view()).value(); }
};

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("put and get: versions, metadata, the latest by default, any version by number") {
    fixture f;
    const crypto::secret_ref ref{"acme", "stripe/api-key"};
    CHECK(f.store->put(f.c, ref, keel::as_bytes("sk_live_1"), "deployer", R"({"owner":"billing"})").value() ==
          1);
    CHECK(f.store->put(f.c, ref, keel::as_bytes("sk_live_2"), "deployer").value() == 2);
    CHECK(text_of(f.store->get(f.c, ref, "billing").value()) == "sk_live_2");
    auto first = f.store->get(f.c, ref, "billing", 1);
    REQUIRE(first);
    CHECK(first->version == 1);
    CHECK(text_of(*first) == "sk_live_1");
    CHECK(f.store->get(f.c, ref, "billing", 3).error() == crypto::errc::secret_not_found);
    CHECK(f.store->get(f.c, {"acme", "nope"}, "billing").error() == crypto::errc::secret_not_found);
    CHECK(f.store->get(f.c, {"globex", "stripe/api-key"}, "billing").error() ==
          crypto::errc::secret_not_found);

    // Listing decrypts nothing and says what is there; metadata kept when a put leaves it out.
    auto listed = f.store->list(f.c, "acme", "ops");
    REQUIRE(listed);
    REQUIRE(listed->size() == 1);
    CHECK((*listed)[0].name == "stripe/api-key");
    CHECK((*listed)[0].latest == 2);
    CHECK((*listed)[0].metadata == R"({"owner": "billing"})");
    CHECK(f.store->list(f.c, "acme", "ops", "github/").value().empty());
    auto versions = f.store->history(f.c, ref, "ops");
    REQUIRE(versions);
    REQUIRE(versions->size() == 2);
    CHECK((*versions)[0].key_ids == std::vector<std::string>{"local:secrets/1"});

    // The stored bytes are an envelope, not the value.
    auto raw = f.c.query("SELECT envelope FROM keel_secret_versions WHERE version = 2");
    REQUIRE(raw);
    const auto stored = (*raw)[0].get<keel::bytes>(0).value();
    const std::string_view value = "sk_live_2";
    CHECK(std::search(stored.begin(), stored.end(), value.begin(), value.end()) == stored.end());

    // Bad input: a clear error, nothing stored.
    CHECK(f.store->put(f.c, {"", "x"}, keel::as_bytes("v"), "a").error() ==
          crypto::errc::invalid_secret_name);
    CHECK(f.store->put(f.c, {"acme", "bad\nname"}, keel::as_bytes("v"), "a").error() ==
          crypto::errc::invalid_secret_name);
    CHECK(f.store->put(f.c, {"acme", "big"}, keel::bytes(64 * 1024 + 1, 1), "a").error() ==
          crypto::errc::secret_too_large);
    CHECK(!f.store->put(f.c, {"acme", "badjson"}, keel::as_bytes("v"), "a", "{not json"));
    CHECK(f.store->list(f.c, "acme", "ops").value().size() == 1);
    CHECK(f.verify().intact);
  }

  TEST_CASE("a value copied onto another secret, tenant or version by SQL does not decrypt") {
    fixture f;
    REQUIRE(f.store->put(f.c, {"acme", "db-password"}, keel::as_bytes("hunter2"), "a"));
    REQUIRE(f.store->put(f.c, {"acme", "public-note"}, keel::as_bytes("hello"), "a"));
    REQUIRE(f.store->put(f.c, {"globex", "db-password"}, keel::as_bytes("globex's"), "a"));
    REQUIRE(f.store->put(f.c, {"acme", "db-password"}, keel::as_bytes("hunter3"), "a"));
    // Someone with SQL access moves acme's password onto the secret they may read...
    REQUIRE(f.c.execute(
        "UPDATE keel_secret_versions SET envelope = (SELECT envelope FROM keel_secret_versions "
        "WHERE tenant = 'acme' AND name = 'db-password' AND version = 1) WHERE name = 'public-note'"));
    CHECK(f.store->get(f.c, {"acme", "public-note"}, "intruder").error() == crypto::errc::context_mismatch);
    // ... or onto another tenant's, or replays an old version as the latest.
    REQUIRE(f.c.execute(
        "UPDATE keel_secret_versions SET envelope = (SELECT envelope FROM keel_secret_versions "
        "WHERE tenant = 'acme' AND name = 'db-password' AND version = 1) WHERE tenant = 'globex'"));
    CHECK(f.store->get(f.c, {"globex", "db-password"}, "intruder").error() == crypto::errc::context_mismatch);
    REQUIRE(
        f.c.execute("UPDATE keel_secret_versions SET envelope = (SELECT envelope FROM keel_secret_versions v "
                    "WHERE v.tenant = 'acme' AND v.name = 'db-password' AND v.version = 1) "
                    "WHERE tenant = 'acme' AND name = 'db-password' AND version = 2"));
    CHECK(f.store->get(f.c, {"acme", "db-password"}, "intruder").error() == crypto::errc::context_mismatch);
    CHECK(text_of(f.store->get(f.c, {"acme", "db-password"}, "owner", 1).value()) == "hunter2");
    // The refusals are in the audit log, with their reason.
    auto audit = crypto::read_audit(f.c).value();
    const auto refused = std::count_if(audit.begin(), audit.end(), [](const crypto::audit_entry& e) {
      return e.action == "read" && e.actor == "intruder" && e.outcome.find("context") != std::string::npos;
    });
    CHECK(refused == 3);
  }

  TEST_CASE("soft delete, restore, destroy") {
    fixture f;
    const crypto::secret_ref ref{"acme", "token"};
    REQUIRE(f.store->put(f.c, ref, keel::as_bytes("one"), "a"));
    REQUIRE(f.store->put(f.c, ref, keel::as_bytes("two"), "a"));
    REQUIRE(f.store->remove(f.c, ref, "a"));
    CHECK(f.store->get(f.c, ref, "a").error() == crypto::errc::secret_deleted);
    CHECK(f.store->list(f.c, "acme", "a").value()[0].deleted_at.has_value());
    REQUIRE(f.store->restore(f.c, ref, "a"));
    CHECK(text_of(f.store->get(f.c, ref, "a").value()) == "two");
    REQUIRE(f.store->destroy(f.c, ref, 1, "a"));
    CHECK(f.store->get(f.c, ref, "a", 1).error() == crypto::errc::secret_version_destroyed);
    CHECK(text_of(f.store->get(f.c, ref, "a", 2).value()) == "two");
    auto versions = f.store->history(f.c, ref, "a").value();
    CHECK(versions[0].destroyed_at.has_value());
    CHECK(versions[0].key_ids.empty());
    auto gone = f.c.query("SELECT envelope IS NULL FROM keel_secret_versions WHERE version = 1");
    CHECK((*gone)[0].get<bool>(0).value());
    CHECK(f.store->remove(f.c, {"acme", "nope"}, "a").error() == crypto::errc::secret_not_found);
    CHECK(f.store->destroy(f.c, ref, 9, "a").error() == crypto::errc::secret_not_found);
    // A put to a deleted secret restores it with the new value.
    REQUIRE(f.store->remove(f.c, ref, "a"));
    CHECK(f.store->put(f.c, ref, keel::as_bytes("three"), "a").value() == 3);
    CHECK(text_of(f.store->get(f.c, ref, "a").value()) == "three");
  }

  TEST_CASE(
      "rotation: rewrap moves every version to the new key; old versions stay readable until destroyed") {
    fixture f;
    for (int i = 0; i < 5; ++i) {
      REQUIRE(
          f.store->put(f.c, {"acme", "s" + std::to_string(i)}, keel::as_bytes("v" + std::to_string(i)), "a"));
    }
    REQUIRE(f.store->put(f.c, {"acme", "s0"}, keel::as_bytes("v0b"), "a"));
    REQUIRE(f.store->destroy(f.c, {"acme", "s1"}, 1, "a"));
    f.ring.rotate();
    REQUIRE(f.store->record(f.c, "rotate", "ops", "secrets/2"));
    auto moved = f.store->rewrap(f.c, "ops", 2);  // several batches
    REQUIRE(moved);
    CHECK(moved->rewrapped == 5);  // six versions, one destroyed
    CHECK(moved->failed == 0);
    CHECK(f.store->rewrap(f.c, "ops").value().rewrapped == 0);  // nothing left
    auto left =
        f.c.query("SELECT count(*) FROM keel_secret_versions WHERE key_ids <> '{local:secrets/2}'::text[]");
    CHECK((*left)[0].get<std::int64_t>(0).value() == 1);  // the destroyed one
    // With version 1 retired, everything still reads.
    REQUIRE(f.ring.set_min_decryption_version(2));
    CHECK(text_of(f.store->get(f.c, {"acme", "s0"}, "a", 1).value()) == "v0");
    CHECK(text_of(f.store->get(f.c, {"acme", "s4"}, "a").value()) == "v4");
    auto audit = crypto::read_audit(f.c).value();
    CHECK(std::count_if(audit.begin(), audit.end(), [](const auto& e) { return e.action == "rewrap"; }) == 5);
    CHECK(std::count_if(audit.begin(), audit.end(), [](const auto& e) { return e.action == "rotate"; }) == 1);
    CHECK(f.verify().intact);
  }

  TEST_CASE("the audit chain: every call audited; a changed, removed, reordered or cut row is caught") {
    fixture f;
    const crypto::secret_ref ref{"acme", "k"};
    REQUIRE(f.store->put(f.c, ref, keel::as_bytes("v"), "writer"));
    for (int i = 0; i < 6; ++i) REQUIRE(f.store->get(f.c, ref, "reader-" + std::to_string(i)));
    CHECK(f.store->get(f.c, {"acme", "missing"}, "prober").error() == crypto::errc::secret_not_found);
    REQUIRE(f.store->list(f.c, "acme", "ops"));
    auto audit = crypto::read_audit(f.c).value();
    REQUIRE(audit.size() == 9);
    CHECK(audit[0].action == "put");
    CHECK(audit[3].actor == "reader-2");
    CHECK(audit[7].outcome.find("no secret") != std::string::npos);
    for (std::size_t i = 0; i < audit.size(); ++i) CHECK(audit[i].seq == static_cast<std::int64_t>(i + 1));

    const auto good = f.verify();
    REQUIRE(good.intact);
    CHECK(good.rows == 9);
    CHECK(good.head_seq == 9);
    const crypto::audit_anchor anchor{good.head_seq, good.head_hash};
    // A wrong key does not verify.
    CHECK(!crypto::verify_audit(f.c, keel::bytes(32, 0x43)).value().intact);

    // Each tampering is done by SQL, as someone with access to the database would, checked, and
    // undone from a copy before the next.
    auto tampered = [&](const std::string& sql) {
      REQUIRE(f.c.execute(sql));
      return crypto::verify_audit(f.c, test_audit_key().view(), anchor).value();
    };
    REQUIRE(f.c.execute("CREATE TABLE audit_backup AS SELECT * FROM keel_secrets_audit"));
    REQUIRE(f.c.execute("CREATE TABLE head_backup AS SELECT * FROM keel_secrets_audit_head"));
    auto put_back = [&] {
      REQUIRE(f.c.execute(
          "DELETE FROM keel_secrets_audit; INSERT INTO keel_secrets_audit SELECT * FROM audit_backup"));
      REQUIRE(
          f.c.execute("DELETE FROM keel_secrets_audit_head; INSERT INTO keel_secrets_audit_head SELECT * "
                      "FROM head_backup"));
      REQUIRE(f.verify().intact);
    };

    auto changed = tampered("UPDATE keel_secrets_audit SET actor = 'someone-else' WHERE seq = 4");
    CHECK(!changed.intact);
    CHECK(changed.first_bad_seq == 4);
    CHECK(changed.problem.find("row 4") != std::string::npos);
    put_back();

    auto removed = tampered("DELETE FROM keel_secrets_audit WHERE seq = 5");
    CHECK(!removed.intact);
    CHECK(removed.first_bad_seq == 5);
    CHECK(removed.problem.find("missing") != std::string::npos);
    put_back();

    // Reordered: rows 2 and 3 swap places (their numbers swapped too, so no gap).
    auto reordered = tampered(
        "UPDATE keel_secrets_audit SET seq = 1000 WHERE seq = 2; UPDATE keel_secrets_audit SET seq = 2 WHERE "
        "seq = 3; "
        "UPDATE keel_secrets_audit SET seq = 3 WHERE seq = 1000");
    CHECK(!reordered.intact);
    CHECK(reordered.first_bad_seq == 2);
    put_back();

    // The last two rows cut, the head left: caught by the head.
    auto cut = tampered("DELETE FROM keel_secrets_audit WHERE seq > 7");
    CHECK(!cut.intact);
    CHECK(cut.problem.find("cut") != std::string::npos);
    put_back();

    // Cut and the head rewound to row 7 (consistent by itself): caught by the anchor.
    auto rewound = tampered(
        "DELETE FROM keel_secrets_audit WHERE seq > 7; "
        "UPDATE keel_secrets_audit_head SET seq = 7, hash = (SELECT hash FROM keel_secrets_audit WHERE seq = "
        "7)");
    CHECK(!rewound.intact);
    CHECK(rewound.first_bad_seq == 9);
    CHECK(crypto::verify_audit(f.c, test_audit_key().view())
              .value()
              .intact);  // without the anchor it looks whole
    put_back();

    // Appends go on after all that, and the chain still holds.
    REQUIRE(f.store->get(f.c, ref, "reader-late"));
    CHECK(f.verify().rows == 10);
  }

  TEST_CASE("concurrent writers and readers: every call audited once, the chain dense and intact") {
    fixture f;
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        auto c = f.schema.connect();
        const crypto::secret_ref ref{"acme", "shared"};
        for (int i = 0; i < 10; ++i) {
          if (!f.store->put(c, ref, keel::as_bytes("w" + std::to_string(t)), "w" + std::to_string(t)))
            ++failures;
          if (!f.store->get(c, ref, "r" + std::to_string(t))) ++failures;
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(failures.load() == 0);
    auto report = f.verify();
    CHECK(report.intact);
    CHECK(report.rows == 80);
    CHECK(f.store->history(f.c, {"acme", "shared"}, "a").value().size() == 40);
  }
}
