// keel-secrets: the secrets store from the command line — put, get, list, history, delete,
// restore, destroy, rotate, rewrap, verify-audit — on a keyring file and a Postgres database
// named by flags or the environment.
#include <keel/core/log.hpp>
#include <keel/core/time_text.hpp>
#include <keel/crypto.hpp>
#include <keel/crypto_pg.hpp>
#include <keel/pg/connection.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace crypto = keel::crypto;

constexpr const char* usage = R"(usage: keel-secrets [options] <command> [arguments]

commands:
  init-keyring              create the keyring file with its first key version
  put <name> [value]        store a new version (the value from stdin if not given)
  get <name> [version]      print a version's value (the latest by default)
  list [prefix]             the tenant's secrets, nothing decrypted
  history <name>            a secret's versions and the keys wrapping each
  delete <name>             soft delete (restore undoes it)
  restore <name>
  destroy <name> <version>  erase one version's value for good
  rotate                    a new keyring version; new values are wrapped by it
  rewrap                    re-wrap every stored value's data key under the current version
  verify-audit [seq:hash]   check the audit log's chain (and that it still holds an anchor)

options (each also from the environment):
  --database URL       KEEL_DATABASE_URL          the Postgres database
  --keyring FILE       KEEL_SECRETS_KEYRING       the keyring file (mode 0600)
  --passphrase-env V   (default KEEL_SECRETS_PASSPHRASE)  the variable holding the keyring's passphrase
  --audit-key-env V    (default KEEL_SECRETS_AUDIT_KEY)   the variable holding the audit key, hex, 32+ bytes
  --tenant T           KEEL_SECRETS_TENANT        (default "default")
  --actor A            KEEL_SECRETS_ACTOR         who the audit log names (default $USER)
  --metadata JSON      with put: the secret's metadata object

exit status: 0 done, 1 failed (the reason on stderr), 2 usage, 3 the audit log is broken
)";

struct settings {
  std::string database;
  std::string keyring_path;
  std::string passphrase_env = "KEEL_SECRETS_PASSPHRASE";
  std::string audit_key_env = "KEEL_SECRETS_AUDIT_KEY";
  std::string tenant = "default";
  std::string actor;
  std::optional<std::string> metadata;
  std::vector<std::string> words;  // the command and its arguments
};

std::string env_or(const char* name, std::string fallback) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): a single-threaded command
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : std::move(fallback);
}

[[noreturn]] void fail(const std::string& message, int status = 1) {
  std::cerr << "keel-secrets: " << message << "\n";
  // NOLINTNEXTLINE(concurrency-mt-unsafe): a single-threaded command
  std::exit(status);
}

settings parse(int argc, char** argv) {
  settings s;
  s.database = env_or("KEEL_DATABASE_URL", "");
  s.keyring_path = env_or("KEEL_SECRETS_KEYRING", "");
  s.tenant = env_or("KEEL_SECRETS_TENANT", "default");
  s.actor = env_or("KEEL_SECRETS_ACTOR", env_or("USER", "keel-secrets"));
  const std::map<std::string, std::string*> flags{{"--database", &s.database},
                                                  {"--keyring", &s.keyring_path},
                                                  {"--passphrase-env", &s.passphrase_env},
                                                  {"--audit-key-env", &s.audit_key_env},
                                                  {"--tenant", &s.tenant},
                                                  {"--actor", &s.actor}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << usage;
      // NOLINTNEXTLINE(concurrency-mt-unsafe): a single-threaded command
      std::exit(0);
    }
    if (arg == "--metadata" && i + 1 < argc) {
      s.metadata = argv[++i];
    } else if (auto flag = flags.find(arg); flag != flags.end()) {
      if (i + 1 >= argc) fail(arg + " needs a value\n" + usage, 2);
      *flag->second = argv[++i];
    } else if (arg.starts_with("--")) {
      fail("unknown option " + arg + "\n" + usage, 2);
    } else {
      s.words.push_back(arg);
    }
  }
  if (s.words.empty()) fail(std::string("no command given\n") + usage, 2);
  return s;
}

std::string required_env(const std::string& name, const char* what) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): a single-threaded command
  const char* value = std::getenv(name.c_str());
  if (value == nullptr || *value == '\0') fail(std::string(what) + " is not set: put it in $" + name);
  return value;
}

// A number from 1: a version (int32) or an audit row (int64).
template <class Int = std::int32_t>
Int number(const std::string& text, const char* what) {
  Int n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 1)
    fail(std::string(what) + " must be a number from 1");
  return n;
}

template <class T>
T or_fail(keel::result<T> r, const std::string& doing) {
  if (!r) fail(doing + ": " + r.error().message());
  return std::move(*r);
}

void or_fail(keel::result<void> r, const std::string& doing) {
  if (!r) fail(doing + ": " + r.error().message());
}

}  // namespace

int main(int argc, char** argv) {
  // A command's own output is what it prints; keel's informational log lines (migrations
  // applied) would only clutter it. KEEL_LOG still sets the level.
  // NOLINTNEXTLINE(concurrency-mt-unsafe): a single-threaded command
  if (std::getenv("KEEL_LOG") == nullptr) keel::log::set_level(keel::log::level::warn);
  const settings s = parse(argc, argv);
  const std::string& command = s.words[0];
  const auto arg = [&](std::size_t i, const char* what) -> const std::string& {
    if (s.words.size() <= i) fail(command + " needs " + what + "\n" + usage, 2);
    return s.words[i];
  };
  static const std::vector<std::string> commands{"init-keyring", "put",    "get",         "list",
                                                 "history",      "delete", "restore",     "destroy",
                                                 "rotate",       "rewrap", "verify-audit"};
  if (std::find(commands.begin(), commands.end(), command) == commands.end())
    fail("unknown command " + command + "\n" + usage, 2);

  if (s.keyring_path.empty() && command != "verify-audit")
    fail("no keyring file: give --keyring FILE or set KEEL_SECRETS_KEYRING");
  if (command == "init-keyring") {
    const std::string passphrase = required_env(s.passphrase_env, "the keyring's passphrase");
    crypto::keyring ring("secrets");
    ring.rotate();
    or_fail(ring.save(s.keyring_path, passphrase), "writing " + s.keyring_path);
    std::cout << "created " << s.keyring_path << " with key version 1\n";
    return 0;
  }

  if (s.database.empty()) fail("no database: give --database URL or set KEEL_DATABASE_URL");
  auto audit_key = keel::from_hex(required_env(s.audit_key_env, "the audit key"));
  if (!audit_key || audit_key->size() < 32)
    fail("the audit key in $" + s.audit_key_env + " must be 64 or more hex digits");
  auto c = or_fail(keel::pg::connection::connect(s.database), "connecting to the database");
  or_fail(crypto::secret_store::migrate(c), "creating the secrets tables");

  if (command == "verify-audit") {
    std::optional<crypto::audit_anchor> anchor;
    if (s.words.size() > 1) {
      const auto colon = s.words[1].find(':');
      if (colon == std::string::npos) fail("the anchor is <seq>:<hash in hex>, as verify-audit prints it", 2);
      auto hash = keel::from_hex(s.words[1].substr(colon + 1));
      if (!hash) fail("the anchor's hash is not hex", 2);
      anchor = crypto::audit_anchor{number<std::int64_t>(s.words[1].substr(0, colon), "the anchor's row"),
                                    std::move(*hash)};
    }
    const auto report = or_fail(crypto::verify_audit(c, *audit_key, anchor), "reading the audit log");
    if (!report.intact) {
      std::cout << "audit log broken at row " << report.first_bad_seq << ": " << report.problem << "\n";
      return 3;
    }
    std::cout << "audit log intact: " << report.rows << " rows; anchor " << report.head_seq << ":"
              << keel::to_hex(report.head_hash) << "\n";
    return 0;
  }

  const std::string passphrase = required_env(s.passphrase_env, "the keyring's passphrase");
  auto ring =
      or_fail(crypto::keyring::load(s.keyring_path, passphrase), "reading the keyring " + s.keyring_path);
  crypto::secret_store store(
      {.wrappers = {ring.get()}, .audit_key = crypto::secret_bytes::copy_of(*audit_key)});

  if (command == "put") {
    const std::string& name = arg(1, "a name");
    std::string value;
    if (s.words.size() > 2) {
      value = s.words[2];
    } else {
      value.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    }
    const auto version =
        or_fail(store.put(c, {s.tenant, name}, keel::as_bytes(value), s.actor, s.metadata), "put " + name);
    crypto::cleanse({reinterpret_cast<std::uint8_t*>(value.data()), value.size()});
    std::cout << name << ": version " << version << "\n";
  } else if (command == "get") {
    const std::string& name = arg(1, "a name");
    const std::int32_t version = s.words.size() > 2 ? number(s.words[2], "the version") : 0;
    const auto secret = or_fail(store.get(c, {s.tenant, name}, s.actor, version), "get " + name);
    std::fwrite(secret.value.data(), 1, secret.value.size(), stdout);
  } else if (command == "list") {
    const auto secrets =
        or_fail(store.list(c, s.tenant, s.actor, s.words.size() > 1 ? s.words[1] : ""), "list");
    for (const auto& secret : secrets) {
      std::cout << secret.name << "\tversion " << secret.latest << "\tupdated "
                << keel::format_utc(secret.updated_at) << (secret.deleted_at ? "\tdeleted" : "") << "\n";
    }
  } else if (command == "history") {
    const std::string& name = arg(1, "a name");
    for (const auto& v : or_fail(store.history(c, {s.tenant, name}, s.actor), "history " + name)) {
      std::cout << "version " << v.version << "\t" << keel::format_utc(v.created_at);
      if (v.destroyed_at) std::cout << "\tdestroyed " << keel::format_utc(*v.destroyed_at);
      for (const auto& key : v.key_ids) std::cout << "\t" << key;
      std::cout << "\n";
    }
  } else if (command == "delete") {
    or_fail(store.remove(c, {s.tenant, arg(1, "a name")}, s.actor), "delete");
  } else if (command == "restore") {
    or_fail(store.restore(c, {s.tenant, arg(1, "a name")}, s.actor), "restore");
  } else if (command == "destroy") {
    or_fail(
        store.destroy(c, {s.tenant, arg(1, "a name")}, number(arg(2, "a version"), "the version"), s.actor),
        "destroy");
  } else if (command == "rotate") {
    const std::uint32_t version = ring->rotate();
    or_fail(ring->save(s.keyring_path, passphrase), "writing " + s.keyring_path);
    or_fail(store.record(c, "rotate", s.actor, ring->name() + "/" + std::to_string(version)),
            "auditing the rotation");
    std::cout << "key version " << version << " is now the primary; run rewrap to move stored values to it\n";
  } else if (command == "rewrap") {
    const auto report = or_fail(store.rewrap(c, s.actor), "rewrap");
    std::cout << "rewrapped " << report.rewrapped << " versions";
    if (report.failed > 0)
      std::cout << "; " << report.failed << " could not be unwrapped (see the audit log)";
    std::cout << "\n";
    if (report.failed > 0) return 1;
  }
  return 0;
}
