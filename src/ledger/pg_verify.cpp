#include <keel/ledger/pg_engine.hpp>

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
  if (!leaves) return errc::storage_failure;
  merkle_tree stored;
  std::map<tree_hash, std::uint64_t> index_of;
  bool complete = leaves->size() == n;
  for (std::uint64_t i = 0; complete && i < n; ++i) {
    auto idx = (*leaves)[i].get<std::int64_t>(0);
    auto hash = (*leaves)[i].get<bytes>(1);
    if (!idx || !hash || static_cast<std::uint64_t>(*idx) != i || hash->size() != sizeof(tree_hash)) {
      complete = false;
      break;
    }
    tree_hash h;
    std::copy(hash->begin(), hash->end(), h.begin());
    stored.append(h);
    index_of.emplace(h, i);
  }
  if (!complete || stored.root(n).value() != trusted.root)
    return report(
        verdict::tree_altered, 0, 0,
        "the stored Merkle leaves do not reproduce the checkpoint's root: the tree itself was altered, so "
        "the damaged entry cannot be located; restore from a backup and verify again");

  auto rows = c.query("SELECT sequence, entry FROM keel_ledger_journal ORDER BY sequence");
  if (!rows) return errc::storage_failure;
  struct row_leaf {
    std::uint64_t sequence;
    tree_hash hash;
  };
  std::vector<row_leaf> journal;
  journal.reserve(rows->size());
  for (const auto r : *rows) {
    auto sequence = r.get<std::int64_t>(0);
    auto entry = r.get<bytes>(1);
    if (!sequence || !entry) return errc::storage_failure;
    journal.push_back({static_cast<std::uint64_t>(*sequence), leaf_hash(*entry)});
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
    if (i + 1 < n && row.hash == stored.leaf(i + 1).value())
      return report(verdict::deleted, i, i,
                    "entry " + text(i) + " was deleted (later entries were renumbered)");
    if (j + 1 < journal.size() && journal[j + 1].hash == expected)
      return report(verdict::inserted, row.sequence, i,
                    "a row that was never committed was inserted at sequence " + text(row.sequence));
    if (const auto found = index_of.find(row.hash); found != index_of.end()) {
      auto r = report(verdict::reordered, i, i,
                      "entry " + text(i) + " holds the entry committed at sequence " + text(found->second) +
                          " (entries were reordered)");
      r.expected_at = found->second;
      return r;
    }
    return report(verdict::changed, i, i, "entry " + text(i) + " was changed after it was committed");
  }
  auto ok =
      report(verdict::ok, 0, n,
             "the first " + text(n) + " entries reproduce the checkpoint's root; " +
                 text(journal.size() > n ? journal.size() - n : 0) + " later entries are not covered by it");
  return ok;
}

}  // namespace keel::ledger
