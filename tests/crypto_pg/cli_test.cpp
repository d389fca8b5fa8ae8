// keel-secrets as a shell user meets it: a keyring file and a database from the environment,
// every command, the exit statuses, and verify-audit catching an edit made by SQL.
#include <keel/crypto.hpp>

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include <support/pg.hpp>
#include <support/result.hpp>
#include <support/subprocess.hpp>

namespace {

using cli_outcome = keel::test::command_outcome;

// Runs keel-secrets with `environment` (NAME=value words) and `args`; `input` goes to its stdin.
cli_outcome run(const std::string& environment, const std::string& args, const std::string& input = "") {
  return keel::test::run_command("env " + environment + " '" KEEL_SECRETS_CLI "' " + args, input);
}

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("keel-secrets: init, put, get, list, history, rotate, rewrap, verify-audit; clear errors") {
    keel::test::scratch_schema schema;
    const auto dir = std::filesystem::temp_directory_path() / ("keel-secrets-cli-" + schema.name);
    std::filesystem::create_directories(dir);
    const std::string keyring = (dir / "keyring").string();
    std::string conninfo = schema.conninfo;
    const std::string env =
        "KEEL_DATABASE_URL=\"" + conninfo + "\" KEEL_SECRETS_KEYRING='" + keyring +
        "' KEEL_SECRETS_PASSPHRASE='correct horse' KEEL_SECRETS_AUDIT_KEY=" + std::string(64, 'a') +
        " KEEL_SECRETS_TENANT=acme KEEL_SECRETS_ACTOR=ci";

    auto made = run(env, "init-keyring");
    INFO(made.output);
    REQUIRE(made.status == 0);
    CHECK((std::filesystem::status(keyring).permissions() & std::filesystem::perms::group_read) ==
          std::filesystem::perms::none);

    CHECK(run(env, "put db/password", "hunter2").output == "db/password: version 1\n");
    CHECK(run(env, "put db/password hunter3").output == "db/password: version 2\n");
    CHECK(run(env, "--metadata '{\"owner\":\"ops\"}' put api/token t0k3n").status == 0);
    CHECK(run(env, "get db/password").output == "hunter3");
    CHECK(run(env, "get db/password 1").output == "hunter2");
    auto listed = run(env, "list db/");
    CHECK(listed.status == 0);
    CHECK(listed.output.starts_with("db/password\tversion 2\t"));
    CHECK(listed.output.find("api/token") == std::string::npos);
    auto history = run(env, "history db/password");
    CHECK(history.output.find("version 1") != std::string::npos);
    CHECK(history.output.find("local:secrets/1") != std::string::npos);

    auto rotated = run(env, "rotate");
    CHECK(rotated.status == 0);
    CHECK(rotated.output.find("key version 2") != std::string::npos);
    CHECK(run(env, "rewrap").output == "rewrapped 3 versions\n");
    CHECK(run(env, "history db/password").output.find("local:secrets/2") != std::string::npos);
    CHECK(run(env, "get db/password 1").output == "hunter2");

    auto intact = run(env, "verify-audit");
    CHECK(intact.status == 0);
    CHECK(intact.output.starts_with("audit log intact: "));
    const auto anchor = intact.output.substr(intact.output.find("anchor ") + 7);
    CHECK(run(env, "verify-audit " + anchor.substr(0, anchor.size() - 1)).status == 0);

    // Errors: what went wrong, and the right exit status.
    auto missing = run(env, "get nope");
    CHECK(missing.status == 1);
    CHECK(missing.output.find("no secret by that tenant and name") != std::string::npos);
    auto wrong_passphrase = run(env + " KEEL_SECRETS_PASSPHRASE=wrong", "get db/password");
    CHECK(wrong_passphrase.status == 1);
    CHECK(wrong_passphrase.output.find("reading the keyring") != std::string::npos);
    CHECK(run(env, "frobnicate").status == 2);
    CHECK(run(env, "get").status == 2);
    CHECK(run(env, "destroy db/password zero").status == 1);
    auto no_db = run("KEEL_SECRETS_KEYRING=x KEEL_SECRETS_PASSPHRASE=p", "list");
    CHECK(no_db.output.find("no database") != std::string::npos);

    // An edit made by SQL: verify-audit exits 3 naming the row.
    auto c = schema.connect();
    REQUIRE(c.execute("UPDATE keel_secrets_audit SET actor = 'nobody' WHERE seq = 2"));
    auto broken = run(env, "verify-audit");
    CHECK(broken.status == 3);
    CHECK(broken.output.find("broken at row 2") != std::string::npos);
    std::filesystem::remove_all(dir);
  }
}
