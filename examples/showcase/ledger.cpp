// keel::ledger in the showcase: accounts and transfers as JSON (128-bit ids and amounts as
// decimal strings), balances as of a point, statements, signed checkpoints, inclusion proofs.
#include <keel/ledger.hpp>
#include <keel/ledger/pg_engine.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace showcase {

namespace {

namespace ledger = keel::ledger;
namespace net = keel::net;
using json = boost::json::value;

// The checkpoint signing key must outlive a restart, or checkpoints signed before it could not
// be checked against the key a client trusts. Its seed is kept in a file only the owner can
// read, in the format `keel-ledger checkpoint --seed-file` reads (64 hex digits).
keel::result<keel::ed25519_private_key> load_or_create_signing_key(const std::filesystem::path& path) {
  if (std::ifstream in(path); in) {
    std::stringstream text;
    text << in.rdbuf();
    const auto seed = keel::from_hex(text.str().substr(0, 64));
    if (!seed) {
      std::fprintf(stderr,
                   "%s does not start with 64 hex digits (an Ed25519 seed); move it away to make a new key\n",
                   path.c_str());
      return seed.error();
    }
    return keel::ed25519_private_key::from_seed(*seed);
  }
  auto key = keel::ed25519_private_key::generate();
  std::error_code ignored;
  std::filesystem::create_directories(path.parent_path(), ignored);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return keel::error_code(errno, boost::system::system_category());
  const auto text = keel::to_hex(key.seed()) + "\n";
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!written) return keel::error_code(EIO, boost::system::system_category());
  return key;
}

// Reads a u128 given as a decimal string (JSON numbers cannot hold 128 bits exactly).
std::optional<ledger::u128> u128_field(const boost::json::object& o, std::string_view key, bool required) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return required ? std::nullopt : std::optional<ledger::u128>(0);
  if (!v->is_string()) return std::nullopt;
  auto parsed = ledger::parse_u128(std::string_view(v->as_string()));
  if (!parsed) return std::nullopt;
  return *parsed;
}

template <class T>
std::optional<T> uint_field(const boost::json::object& o, std::string_view key, bool required) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return required ? std::nullopt : std::optional<T>(T{0});
  std::uint64_t n = 0;
  if (v->is_uint64())
    n = v->as_uint64();
  else if (v->is_int64() && v->as_int64() >= 0)
    n = static_cast<std::uint64_t>(v->as_int64());
  else
    return std::nullopt;
  if (n > std::numeric_limits<T>::max()) return std::nullopt;
  return static_cast<T>(n);
}

json balance_json(const ledger::balance& b) {
  return boost::json::object{{"debits_pending", ledger::to_string(b.debits_pending)},
                             {"debits_posted", ledger::to_string(b.debits_posted)},
                             {"credits_pending", ledger::to_string(b.credits_pending)},
                             {"credits_posted", ledger::to_string(b.credits_posted)}};
}

net::response bad_request(std::string_view detail) {
  return net::error_response(net::status::bad_request, "invalid ledger request", detail);
}

// ?as_of_sequence=N or ?as_of_timestamp=NS (nanoseconds since the epoch); neither: now.
std::optional<ledger::as_of> as_of_param(const net::request& req) {
  const auto parse = [](std::string_view text) -> std::optional<std::uint64_t> {
    auto v = ledger::parse_u128(text);
    if (!v || *v > UINT64_MAX) return std::nullopt;
    return static_cast<std::uint64_t>(*v);
  };
  if (auto s = req.query_param("as_of_sequence")) {
    auto v = parse(*s);
    if (!v) return std::nullopt;
    return ledger::as_of::at_sequence(*v);
  }
  if (auto t = req.query_param("as_of_timestamp")) {
    auto v = parse(*t);
    if (!v) return std::nullopt;
    return ledger::as_of::at_time(*v);
  }
  return ledger::as_of::now();
}

net::response engine_error(const keel::error_code& ec) {
  if (ec == ledger::errc::unknown_account) return net::error_response(net::status::not_found, ec);
  if (ec == ledger::errc::sequence_out_of_range || ec == ledger::errc::invalid_argument ||
      ec == ledger::errc::batch_too_large)
    return net::error_response(net::status::bad_request, ec);
  return net::error_response(net::status::internal_server_error, ec);
}

// The demo accounts the page shows (USD cents, ledger 840), created at first start with a few
// transfers, so the page has something to show. Ids from 1001 leave the small ones to callers.
struct demo_account {
  std::uint64_t id;
  std::uint16_t code;
  std::uint16_t flags;
};
constexpr demo_account demo_accounts[] = {
    {1001, 1, 0},                                                      // the bank's cash
    {1002, 2, ledger::account_flags::debits_must_not_exceed_credits},  // alice
    {1003, 2, ledger::account_flags::debits_must_not_exceed_credits},  // bob
};

keel::result<void> seed_demo_ledger(keel::pg::connection& c) {
  ledger::pg_engine engine(c);
  auto size = engine.journal_size();
  if (!size) return size.error();
  if (*size > 0) return {};  // not a new database: leave it as it is
  std::vector<ledger::account> accounts;
  for (const auto& a : demo_accounts)
    accounts.push_back({.id = a.id, .ledger = 840, .code = a.code, .flags = a.flags});
  if (auto made = engine.create_accounts(accounts); !made) return made.error();
  const ledger::transfer transfers[] = {{.id = 5001,
                                         .debit_account_id = 1001,
                                         .credit_account_id = 1002,
                                         .amount = 250'000,
                                         .ledger = 840,
                                         .code = 1},
                                        {.id = 5002,
                                         .debit_account_id = 1001,
                                         .credit_account_id = 1003,
                                         .amount = 120'000,
                                         .ledger = 840,
                                         .code = 1},
                                        {.id = 5003,
                                         .debit_account_id = 1002,
                                         .credit_account_id = 1003,
                                         .amount = 4'250,
                                         .ledger = 840,
                                         .code = 2},
                                        {.id = 5004,
                                         .debit_account_id = 1003,
                                         .credit_account_id = 1002,
                                         .amount = 1'999,
                                         .ledger = 840,
                                         .code = 2,
                                         .flags = ledger::transfer_flags::pending}};
  if (auto done = engine.create_transfers(transfers); !done) return done.error();
  return {};
}

constexpr std::string_view ledger_body = R"html(
<h1>Ledger</h1>
<p class="note">keel::ledger in Postgres: double-entry accounts in US cents (ledger 840). Every account and
transfer is an entry of an append-only journal, a leaf of an RFC 6962 Merkle tree.</p>
<h2>Accounts</h2>
<table id="accounts"><thead><tr><th>account</th><th>debits posted</th><th>credits posted</th><th>pending</th><th>balance</th></tr></thead><tbody></tbody></table>
<h2>Transfer</h2>
<form id="transfer">
  <label>from <select name="from"></select></label>
  <label>to <select name="to"></select></label>
  <label>amount (USD) <input name="amount" type="number" min="0.01" step="0.01" value="12.50" required></label>
  <button type="submit">transfer</button>
  <span id="transfer-result"></span>
</form>
<p class="note">alice and bob may not spend more than they hold: such a transfer comes back
<code>exceeds_credits</code>, a result, not an error, and nothing is written.</p>
<h2>Signed tree head</h2>
<table id="checkpoint"><tbody>
<tr><th>journal entries</th><td data-field="tree_size"></td></tr>
<tr><th>root</th><td><code data-field="root"></code></td></tr>
<tr><th>signed by (Ed25519)</th><td><code data-field="key"></code></td></tr>
<tr><th>latest entry</th><td data-field="proof"></td></tr>
</tbody></table>
)html";

constexpr std::string_view ledger_script = R"js(
const accounts = [{id: "1001", name: "cash (the bank)"}, {id: "1002", name: "alice"}, {id: "1003", name: "bob"}];
const money = new Intl.NumberFormat("en-US", {style: "currency", currency: "USD"});
const dollars = cents => money.format(Number(cents) / 100);
function cell(tr, text, cls) { const td = tr.appendChild(document.createElement("td")); td.textContent = text; if (cls) td.className = cls; return td; }
async function get(path) { const r = await fetch(path); if (!r.ok) throw new Error(path + ": " + r.status); return r.json(); }
async function refreshAccounts() {
  const body = document.querySelector("#accounts tbody");
  const rows = [];
  for (const a of accounts) {
    const b = (await get("/api/ledger/accounts/" + a.id + "/balance")).balance;
    const tr = document.createElement("tr");
    tr.dataset.account = a.id;
    cell(tr, a.name + " (" + a.id + ")");
    cell(tr, dollars(b.debits_posted), "num debits");
    cell(tr, dollars(b.credits_posted), "num credits");
    cell(tr, dollars(Number(b.credits_pending) - Number(b.debits_pending)), "num pending");
    cell(tr, dollars(Number(b.credits_posted) - Number(b.debits_posted)), "num balance");
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}
// RFC 6962 / 9162 inclusion proof, checked here with the browser's own SHA-256.
const hex = h => new Uint8Array(h.match(/../g).map(b => parseInt(b, 16)));
const toHex = b => Array.from(new Uint8Array(b), x => x.toString(16).padStart(2, "0")).join("");
async function node(left, right) {
  const m = new Uint8Array(65); m[0] = 1; m.set(left, 1); m.set(right, 33);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", m));
}
async function verifyInclusion(index, size, leaf, path, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = hex(leaf);
  for (const p of path.map(hex)) {
    if (sn === 0) return false;
    if ((fn & 1) === 1 || fn === sn) {
      r = await node(p, r);
      if ((fn & 1) === 0) while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = await node(r, p);
    }
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 && toHex(r) === root;
}
async function refreshCheckpoint() {
  const cp = await get("/api/ledger/checkpoint");
  const field = name => document.querySelector('#checkpoint [data-field="' + name + '"]');
  field("tree_size").textContent = Number(cp.tree_size).toLocaleString("en-US");
  field("root").textContent = cp.root;
  field("key").textContent = cp.key;
  const last = cp.tree_size - 1;
  const proof = await get("/api/ledger/proof/" + last + "?tree_size=" + cp.tree_size);
  const ok = await verifyInclusion(last, cp.tree_size, proof.leaf_hash, proof.proof, cp.root);
  const cellOf = field("proof");
  cellOf.textContent = "entry " + last.toLocaleString("en-US") + ": " + (ok ? "included in this root (proof of " +
      proof.proof.length + " hashes verified here)" : "proof did not verify");
  cellOf.className = ok ? "ok" : "bad";
  cellOf.dataset.verified = ok;
}
async function refresh() {
  try { await refreshAccounts(); await refreshCheckpoint(); }
  catch (e) { document.getElementById("transfer-result").textContent = "could not load: " + e.message; }
}
const form = document.getElementById("transfer");
for (const select of [form.from, form.to]) {
  for (const a of accounts) select.appendChild(new Option(a.name, a.id));
}
form.from.value = "1002"; form.to.value = "1003";
form.addEventListener("submit", async event => {
  event.preventDefault();
  const out = document.getElementById("transfer-result");
  const cents = Math.round(Number(form.amount.value) * 100);
  const transfer = {id: String(Date.now()) + String(Math.floor(Math.random() * 1000)).padStart(3, "0"),
                    debit_account_id: form.from.value, credit_account_id: form.to.value,
                    amount: String(cents), ledger: 840, code: 2};
  const r = await fetch("/api/ledger/transfers", {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify({transfers: [transfer]})});
  const answer = await r.json();
  const result = r.ok ? answer.results[0].result : (answer.error || "error " + r.status);
  out.textContent = result === "ok" ? dollars(cents) + " transferred" : result;
  out.className = result === "ok" ? "ok" : "bad";
  out.dataset.result = result;
  await refresh();
});
refresh();
)js";

}  // namespace

keel::result<void> mount_ledger(context& ctx) {
  {
    auto c = ctx.pool.acquire();
    if (!c) return c.error();
    if (auto migrated = ledger::migrate(**c); !migrated) return migrated.error();
    if (auto seeded = seed_demo_ledger(**c); !seeded) return seeded.error();
  }
  // Checkpoints are signed with a key kept across restarts; its public half is in each one.
  const char* seed_file = std::getenv("KEEL_LEDGER_SEED_FILE");
  auto loaded = load_or_create_signing_key(seed_file != nullptr ? std::filesystem::path(seed_file)
                                                                : std::filesystem::path(ctx.state_dir) /
                                                                      "ledger-signing.seed");
  if (!loaded) return loaded.error();
  auto key = std::make_shared<keel::ed25519_private_key>(std::move(*loaded));
  auto& pool = ctx.pool;

  ctx.server.post(
      "/api/ledger/accounts", net::json_handler([&pool](const net::request&, const json& body) {
        const auto* list = body.is_object() ? body.as_object().if_contains("accounts") : nullptr;
        if (list == nullptr || !list->is_array() || list->as_array().empty() ||
            list->as_array().size() > ledger::max_batch)
          return bad_request(
              "send {\"accounts\": [{\"id\": \"1\", \"ledger\": 1, \"code\": 1, \"flags\": 0}, ...]}");
        std::vector<ledger::account> batch;
        for (const auto& item : list->as_array()) {
          if (!item.is_object()) return bad_request("each account is an object");
          const auto& o = item.as_object();
          const auto id = u128_field(o, "id", true);
          const auto user_data = u128_field(o, "user_data", false);
          const auto ledger_id = uint_field<std::uint32_t>(o, "ledger", true);
          const auto code = uint_field<std::uint16_t>(o, "code", true);
          const auto flags = uint_field<std::uint16_t>(o, "flags", false);
          if (!id || !user_data || !ledger_id || !code || !flags)
            return bad_request(
                "id and user_data are decimal strings (0 .. 2^128-1); ledger, code, flags are numbers");
          batch.push_back({.id = *id,
                           .user_data = *user_data,
                           .ledger = *ledger_id,
                           .code = *code,
                           .flags = *flags,
                           .timestamp = 0,
                           .balances = {}});
        }
        auto c = pool.acquire();
        if (!c) return net::error_response(net::status::service_unavailable, c.error());
        ledger::pg_engine engine(**c);
        auto results = engine.create_accounts(batch);
        if (!results) return engine_error(results.error());
        boost::json::array out;
        for (std::size_t i = 0; i < results->size(); ++i)
          out.push_back({{"index", i}, {"result", ledger::to_string((*results)[i])}});
        return net::json_response(boost::json::object{{"results", out}});
      }));

  ctx.server.post("/api/ledger/transfers", net::json_handler([&pool](const net::request&, const json& body) {
                    const auto* list = body.is_object() ? body.as_object().if_contains("transfers") : nullptr;
                    if (list == nullptr || !list->is_array() || list->as_array().empty() ||
                        list->as_array().size() > ledger::max_batch)
                      return bad_request(
                          "send {\"transfers\": [{\"id\": \"1\", \"debit_account_id\": \"1\", "
                          "\"credit_account_id\": \"2\", "
                          "\"amount\": \"100\", \"ledger\": 1, \"code\": 1}, ...]}");
                    std::vector<ledger::transfer> batch;
                    for (const auto& item : list->as_array()) {
                      if (!item.is_object()) return bad_request("each transfer is an object");
                      const auto& o = item.as_object();
                      const auto id = u128_field(o, "id", true);
                      const auto debit = u128_field(o, "debit_account_id", false);
                      const auto credit = u128_field(o, "credit_account_id", false);
                      const auto amount = u128_field(o, "amount", false);
                      const auto pending_id = u128_field(o, "pending_id", false);
                      const auto user_data = u128_field(o, "user_data", false);
                      const auto ledger_id = uint_field<std::uint32_t>(o, "ledger", false);
                      const auto code = uint_field<std::uint16_t>(o, "code", false);
                      const auto flags = uint_field<std::uint16_t>(o, "flags", false);
                      const auto timeout = uint_field<std::uint32_t>(o, "timeout", false);
                      if (!id || !debit || !credit || !amount || !pending_id || !user_data || !ledger_id ||
                          !code || !flags || !timeout)
                        return bad_request(
                            "ids, amount and user_data are decimal strings (0 .. 2^128-1); ledger, code, "
                            "flags, timeout are numbers");
                      ledger::transfer t;
                      t.id = *id;
                      t.debit_account_id = *debit;
                      t.credit_account_id = *credit;
                      t.amount = *amount;
                      t.pending_id = *pending_id;
                      t.user_data = *user_data;
                      t.ledger = *ledger_id;
                      t.code = *code;
                      t.flags = *flags;
                      t.timeout = *timeout;
                      batch.push_back(t);
                    }
                    auto c = pool.acquire();
                    if (!c) return net::error_response(net::status::service_unavailable, c.error());
                    ledger::pg_engine engine(**c);
                    auto results = engine.create_transfers(batch);
                    if (!results) return engine_error(results.error());
                    boost::json::array out;
                    for (std::size_t i = 0; i < results->size(); ++i)
                      out.push_back({{"index", i}, {"result", ledger::to_string((*results)[i])}});
                    return net::json_response(boost::json::object{{"results", out}});
                  }));

  ctx.server.get("/api/ledger/accounts/{id}/balance", [&pool](const net::request& req) {
    const auto id = ledger::parse_u128(req.path_param("id").value_or(""));
    const auto point = as_of_param(req);
    if (!id || !point)
      return bad_request("the account id and as_of_sequence / as_of_timestamp are decimal numbers");
    auto c = pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    ledger::pg_engine engine(**c);
    auto b = engine.balance_as_of(*id, *point);
    if (!b) return engine_error(b.error());
    return net::json_response(
        boost::json::object{{"account_id", ledger::to_string(*id)}, {"balance", balance_json(*b)}});
  });

  ctx.server.get("/api/ledger/accounts/{id}/statement", [&pool](const net::request& req) {
    const auto id = ledger::parse_u128(req.path_param("id").value_or(""));
    const auto from = ledger::parse_u128(req.query_param("from").value_or("0"));
    const auto limit = ledger::parse_u128(req.query_param("limit").value_or("50"));
    if (!id || !from || !limit || *from > INT64_MAX || *limit == 0 || *limit > 1000)
      return bad_request("the account id and from are decimal numbers; limit is 1..1000");
    auto c = pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    ledger::pg_engine engine(**c);
    auto page = engine.statement(*id, {.from_sequence = static_cast<std::uint64_t>(*from),
                                       .to_sequence = UINT64_MAX,
                                       .limit = static_cast<std::size_t>(*limit)});
    if (!page) return engine_error(page.error());
    boost::json::array lines;
    for (const auto& l : page->lines)
      lines.push_back({{"sequence", l.sequence},
                       {"timestamp", l.timestamp},
                       {"transfer_id", ledger::to_string(l.transfer_id)},
                       {"balance", balance_json(l.after)}});
    boost::json::object out{{"lines", lines}};
    out["next"] = page->next_sequence ? json(*page->next_sequence) : json(nullptr);
    return net::json_response(out);
  });

  ctx.server.get("/api/ledger/checkpoint", [&pool, key](const net::request&) {
    auto c = pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    ledger::pg_engine engine(**c);
    auto cp = engine.make_checkpoint(*key);
    if (!cp) return engine_error(cp.error());
    return net::json_response(boost::json::parse(cp->to_json()));
  });

  ctx.server.get("/api/ledger/proof/{sequence}", [&pool](const net::request& req) {
    const auto sequence = ledger::parse_u128(req.path_param("sequence").value_or(""));
    if (!sequence || *sequence > INT64_MAX) return bad_request("the sequence is a decimal number");
    auto c = pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    ledger::pg_engine engine(**c);
    auto size = engine.journal_size();
    if (!size) return engine_error(size.error());
    std::uint64_t tree_size = *size;
    if (auto t = req.query_param("tree_size")) {
      const auto parsed = ledger::parse_u128(*t);
      if (!parsed || *parsed > INT64_MAX) return bad_request("tree_size is a decimal number");
      tree_size = static_cast<std::uint64_t>(*parsed);
    }
    const auto s = static_cast<std::uint64_t>(*sequence);
    auto proof = engine.inclusion_proof(s, tree_size);
    auto entry = engine.entry(s);
    auto root = engine.root(tree_size);
    if (!proof) return engine_error(proof.error());
    if (!entry) return engine_error(entry.error());
    if (!root) return engine_error(root.error());
    boost::json::array path;
    for (const auto& h : *proof) path.push_back(boost::json::string(keel::to_hex(h)));
    return net::json_response(boost::json::object{{"sequence", s},
                                                  {"tree_size", tree_size},
                                                  {"entry", keel::to_hex(*entry)},
                                                  {"leaf_hash", keel::to_hex(ledger::leaf_hash(*entry))},
                                                  {"proof", path},
                                                  {"root", keel::to_hex(*root)}});
  });

  ctx.server.get("/ledger", [html = page("ledger", ledger_body, ledger_script)](const net::request&) {
    return net::text_response(html, net::status::ok, "text/html; charset=utf-8");
  });
  ctx.endpoints.push_back({"GET", "/ledger", "the ledger page: accounts, a transfer form, a verified proof"});
  ctx.endpoints.push_back({"POST", "/api/ledger/accounts", "creates ledger accounts: {\"accounts\": [...]}"});
  ctx.endpoints.push_back({"POST", "/api/ledger/transfers", "creates transfers, one result code each"});
  ctx.endpoints.push_back(
      {"GET", "/api/ledger/accounts/1002/balance", "balance now, or ?as_of_sequence= / ?as_of_timestamp="});
  ctx.endpoints.push_back(
      {"GET", "/api/ledger/accounts/1002/statement", "entries with running balance (?from=&limit=)"});
  ctx.endpoints.push_back({"GET", "/api/ledger/checkpoint", "an Ed25519-signed tree head of the journal"});
  ctx.endpoints.push_back({"GET", "/api/ledger/proof/0", "inclusion proof of a journal entry (?tree_size=)"});
  return {};
}

}  // namespace showcase
