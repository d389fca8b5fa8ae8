#include <keel/ledger/pg_engine.hpp>
#include <keel/pg/types.hpp>

#include <map>
#include <string>

namespace keel::ledger {

namespace {

std::string text(std::uint64_t v) {
  return std::to_string(v);
}

verify_report report(verify_report::verdict v, std::uint64_t first_bad, std::uint64_t checked,
                     std::string message) {
  verify_report r;
  r.result = v;
  r.first_bad = first_bad;
  r.entries_checked = checked;
  r.message = std::move(message);
  return r;
}

}  // namespace

result<verify_report> verify_journal(pg::connection& c, const checkpoint& trusted,
                                     const ed25519_public_key& key) {
  using verdict = verify_report::verdict;
  if (!trusted.verify(key))
    return report(verdict::checkpoint_invalid, 0, 0, "the checkpoint is not signed by the trusted key");
  const auto n = trusted.tree_size;

  // The stored leaf hashes are only evidence once they reproduce the signed root.
  auto leaves = c.query("SELECT idx, hash FROM keel_ledger_nodes WHERE level = 0 AND idx < $1 ORDER BY idx",
                        static_cast<std::int64_t>(n));
  if (!leaves) return leaves.error();
  merkle_tree stored;
  std::map<tree_hash, std::uint64_t> index_of;
  bool complete = leaves->size() == n;
  for (std::uint64_t i = 0; complete && i < n; ++i) {
    auto leaf = (*leaves)[i].as<std::int64_t, bytes>();
    if (!leaf || static_cast<std::uint64_t>(std::get<0>(*leaf)) != i ||
        std::get<1>(*leaf).size() != sizeof(tree_hash)) {
      complete = false;
      break;
    }
    const auto& hash = std::get<1>(*leaf);
    tree_hash h;
    std::copy(hash.begin(), hash.end(), h.begin());
    stored.append(h);
    index_of.emplace(h, i);
  }
  if (!complete || stored.root(n).value() != trusted.root) {
    return report(
        verdict::tree_altered, 0, 0,
        "the stored Merkle leaves do not reproduce the checkpoint's root: the tree itself was altered, so "
        "the damaged entry cannot be located; restore from a backup and verify again");
  }

  auto rows = c.query("SELECT sequence, entry FROM keel_ledger_journal ORDER BY sequence");
  if (!rows) return rows.error();
  struct row_leaf {
    std::uint64_t sequence;
    tree_hash hash;
  };
  std::vector<row_leaf> journal;
  std::vector<bytes> entries;
  journal.reserve(rows->size());
  for (const auto r : *rows) {
    auto fields = r.as<std::int64_t, bytes>();
    if (!fields) return fields.error();
    auto& [sequence, entry] = *fields;
    journal.push_back({static_cast<std::uint64_t>(sequence), leaf_hash(entry)});
    entries.push_back(std::move(entry));
  }

  std::size_t j = 0;
  for (std::uint64_t i = 0; i < n; ++i, ++j) {
    const auto expected = stored.leaf(i).value();
    if (j >= journal.size())
      return report(verdict::deleted, i, i, "entry " + text(i) + " was deleted (the journal ends before it)");
    const auto& row = journal[j];
    if (row.sequence == i && row.hash == expected) continue;
    if (row.sequence > i)
      return report(verdict::deleted, i, i, "entry " + text(i) + " was deleted (sequence gap)");
    if (i + 1 < n && row.hash == stored.leaf(i + 1).value()) {
      return report(verdict::deleted, i, i,
                    "entry " + text(i) + " was deleted (later entries were renumbered)");
    }
    if (j + 1 < journal.size() && journal[j + 1].hash == expected) {
      return report(verdict::inserted, row.sequence, i,
                    "a row that was never committed was inserted at sequence " + text(row.sequence));
    }
    if (const auto found = index_of.find(row.hash); found != index_of.end()) {
      auto r = report(verdict::reordered, i, i,
                      "entry " + text(i) + " holds the entry committed at sequence " + text(found->second) +
                          " (entries were reordered)");
      r.expected_at = found->second;
      return r;
    }
    return report(verdict::changed, i, i, "entry " + text(i) + " was changed after it was committed");
  }
  // The journal is intact: the balances must be what its entries add up to.
  std::map<u128, balance> expected;
  std::map<u128, u128> pending_amounts;
  for (std::size_t k = 0; k < entries.size(); ++k) {
    auto e = decode(entries[k]);
    if (!e) {
      return report(verdict::changed, journal[k].sequence, n,
                    "entry " + text(journal[k].sequence) + " (after the checkpoint) does not decode");
    }
    if (e->kind == entry_kind::account_created) {
      expected[e->account.id];
      continue;
    }
    const auto& t = e->transfer;
    auto& dr = expected[t.debit_account_id];
    auto& cr = expected[t.credit_account_id];
    if (e->kind == entry_kind::pending_expired || (t.flags & transfer_flags::void_pending) != 0) {
      dr.debits_pending -= t.amount;
      cr.credits_pending -= t.amount;
    } else if ((t.flags & transfer_flags::post_pending) != 0) {
      const auto reserved = pending_amounts[t.pending_id];
      dr.debits_pending -= reserved;
      cr.credits_pending -= reserved;
      dr.debits_posted += t.amount;
      cr.credits_posted += t.amount;
    } else if ((t.flags & transfer_flags::pending) != 0) {
      pending_amounts[t.id] = t.amount;
      dr.debits_pending += t.amount;
      cr.credits_pending += t.amount;
    } else {
      dr.debits_posted += t.amount;
      cr.credits_posted += t.amount;
    }
  }
  auto accounts = c.query(
      "SELECT id, debits_pending::text, debits_posted::text, credits_pending::text, credits_posted::text "
      "FROM keel_ledger_accounts");
  if (!accounts) return accounts.error();
  std::map<u128, balance> in_table;
  for (const auto r : *accounts) {
    auto fields = r.as<pg::uuid, std::string, std::string, std::string, std::string>();
    if (!fields) return fields.error();
    const auto& [id, debits_pending, debits_posted, credits_pending, credits_posted] = *fields;
    u128 account_id = 0;
    for (const auto byte : id.bytes) account_id = (account_id << 8U) | byte;
    balance b;
    for (const auto& [field, text] :
         {std::pair{&b.debits_pending, &debits_pending}, std::pair{&b.debits_posted, &debits_posted},
          std::pair{&b.credits_pending, &credits_pending}, std::pair{&b.credits_posted, &credits_posted}}) {
      auto value = parse_u128(*text);
      if (!value) return errc::storage_failure;  // numeric(39, 0) that is not a u128: not the ledger's
      *field = *value;
    }
    in_table.emplace(account_id, b);
  }
  for (const auto& [id, want] : expected) {
    const auto found = in_table.find(id);
    if (found == in_table.end() || found->second != want) {
      auto r = report(
          verdict::balances_differ, 0, n,
          "account " + to_string(id) +
              (found == in_table.end() ? " is missing from the accounts table"
                                       : "'s stored balances differ from what the journal adds up to"));
      r.account_id = id;
      return r;
    }
  }
  for (const auto& [id, have] : in_table) {
    if (expected.count(id) == 0) {
      auto r = report(verdict::balances_differ, 0, n,
                      "account " + to_string(id) + " was never created in the journal");
      r.account_id = id;
      return r;
    }
  }

  auto ok =
      report(verdict::ok, 0, n,
             "the first " + text(n) + " entries reproduce the checkpoint's root; " +
                 text(journal.size() > n ? journal.size() - n : 0) + " later entries are not covered by it");
  return ok;
}

}  // namespace keel::ledger
