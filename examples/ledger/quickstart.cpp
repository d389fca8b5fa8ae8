// docs/ledger.md quotes this file; ctest runs it (examples.ledger_quickstart).
#include <keel/ledger.hpp>

#include <cstdio>

int main() {
  using namespace keel::ledger;
  memory_engine ledger;  // pg_engine(connection) stores the same in Postgres
  const account accounts[] = {
      {.id = 1, .ledger = 840, .code = 1},
      {.id = 2, .ledger = 840, .code = 1, .flags = account_flags::debits_must_not_exceed_credits}};
  (void)ledger.create_accounts(accounts).value();

  // Reserve 500 (two-phase), post 300 of it; an overdraft is a result code, not an error.
  transfer batch[3] = {
      {.id = 10,
       .debit_account_id = 1,
       .credit_account_id = 2,
       .amount = 500,
       .ledger = 840,
       .code = 1,
       .flags = transfer_flags::pending},
      {.id = 11, .amount = 300, .pending_id = 10, .flags = transfer_flags::post_pending},
      {.id = 12, .debit_account_id = 2, .credit_account_id = 1, .amount = 301, .ledger = 840, .code = 1}};
  const auto results = ledger.create_transfers(batch).value();
  std::printf("%s %s %s\n", to_string(results[0]).data(), to_string(results[1]).data(),
              to_string(results[2]).data());

  // Every entry is a Merkle leaf: sign the tree head, prove entry 3 is in it.
  const auto key = keel::ed25519_private_key::generate();
  const auto head = ledger.make_checkpoint(key).value();
  const auto proof = to_bytes(ledger.inclusion_proof(3, head.tree_size).value());
  const bool proven =
      head.verify(key.public_key()) &&
      verify_inclusion(3, head.tree_size, leaf_hash(ledger.entry(3).value()), proof, head.root);
  std::printf("account 2 credits: %s, entry 3 proven: %d\n",
              to_string(ledger.lookup_account(2).value()->balances.credits_posted).c_str(), proven);
  return proven && results[2] == transfer_result::exceeds_credits ? 0 : 1;
}
