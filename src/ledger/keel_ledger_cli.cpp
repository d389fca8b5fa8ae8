// keel-ledger: checks a Postgres ledger journal against a trusted signed checkpoint.
//
//   keel-ledger checkpoint --db CONNINFO --seed-file FILE     prints a signed checkpoint (JSON)
//   keel-ledger verify --db CONNINFO --checkpoint FILE --key HEX
//
// verify exits 0 when the journal reproduces the checkpoint, 1 when it names the first entry
// that was changed, deleted, inserted or reordered (or the tree/checkpoint is bad), 2 on usage
// or connection errors.
#include <keel/ledger/pg_engine.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace {

int usage() {
  std::fputs(
      "usage: keel-ledger verify --db CONNINFO --checkpoint FILE --key PUBLIC_KEY_HEX\n"
      "       keel-ledger checkpoint --db CONNINFO --seed-file FILE\n"
      "verify exits 0 if the journal matches the checkpoint, 1 if it names a tampered entry, 2 on errors\n",
      stderr);
  return 2;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const char* verdict_name(keel::ledger::verify_report::verdict v) {
  using verdict = keel::ledger::verify_report::verdict;
  switch (v) {
    case verdict::ok:
      return "ok";
    case verdict::changed:
      return "changed";
    case verdict::deleted:
      return "deleted";
    case verdict::inserted:
      return "inserted";
    case verdict::reordered:
      return "reordered";
    case verdict::tree_altered:
      return "tree_altered";
    case verdict::checkpoint_invalid:
      return "checkpoint_invalid";
    case verdict::balances_differ:
      return "balances_differ";
  }
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string command = argv[1];
  std::map<std::string, std::string> options;
  for (int i = 2; i + 1 < argc; i += 2) options[argv[i]] = argv[i + 1];
  if ((argc - 2) % 2 != 0 || options.count("--db") == 0) return usage();

  auto c = keel::pg::connection::connect(options["--db"]);
  if (!c) {
    std::fprintf(stderr, "keel-ledger: cannot connect: %s\n", c.error().message().c_str());
    return 2;
  }
  if (command == "checkpoint") {
    const auto seed_text =
        options.count("--seed-file") != 0 ? read_file(options["--seed-file"]) : std::nullopt;
    if (!seed_text) return usage();
    auto seed = keel::from_hex(std::string_view(*seed_text).substr(0, 64));
    if (!seed) {
      std::fputs("keel-ledger: the seed file must start with 64 hex digits\n", stderr);
      return 2;
    }
    auto key = keel::ed25519_private_key::from_seed(*seed);
    if (!key) return usage();
    keel::ledger::pg_engine engine(*c);
    auto cp = engine.make_checkpoint(*key);
    if (!cp) {
      std::fprintf(stderr, "keel-ledger: %s\n", cp.error().message().c_str());
      return 2;
    }
    std::printf("%s\n", cp->to_json().c_str());
    return 0;
  }
  if (command != "verify" || options.count("--checkpoint") == 0 || options.count("--key") == 0)
    return usage();
  const auto json = read_file(options["--checkpoint"]);
  if (!json) {
    std::fprintf(stderr, "keel-ledger: cannot read %s\n", options["--checkpoint"].c_str());
    return 2;
  }
  auto cp = keel::ledger::checkpoint::from_json(*json);
  auto key_bytes = keel::from_hex(options["--key"]);
  if (!cp || !key_bytes) {
    std::fputs("keel-ledger: the checkpoint must be keel checkpoint JSON and --key 64 hex digits\n", stderr);
    return 2;
  }
  auto key = keel::ed25519_public_key::from_bytes(*key_bytes);
  if (!key) return usage();
  auto report = keel::ledger::verify_journal(*c, *cp, *key);
  if (!report) {
    std::fprintf(stderr, "keel-ledger: %s: %s\n", report.error().message().c_str(),
                 c->last_error().to_string().c_str());
    return 2;
  }
  using verdict = keel::ledger::verify_report::verdict;
  std::printf("%s first_bad=%llu: %s\n", verdict_name(report->result),
              static_cast<unsigned long long>(report->first_bad), report->message.c_str());
  return report->result == verdict::ok ? 0 : 1;
}
