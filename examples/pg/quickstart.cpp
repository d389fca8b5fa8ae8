// docs/pg.md quotes this file; ctest runs it (examples.pg_quickstart).
#include <keel/pg/local_cluster.hpp>
#include <keel/pg/pool.hpp>
#include <keel/pg/transaction.hpp>

#include <cstdio>

int main() {
  // A private Postgres for this process; stopped (and deleted) when `cluster` goes away.
  auto cluster = keel::pg::local_cluster::start().value();
  keel::pg::pool pool({.conninfo = cluster.conninfo(), .max_size = 4});

  auto c = pool.acquire().value();
  (void)c->execute("CREATE TABLE accounts (id int8 PRIMARY KEY, balance int8 NOT NULL)").value();
  (void)c->query("INSERT INTO accounts VALUES ($1, $2), ($3, $4)", 1L, 100L, 2L, 0L).value();

  // Move 30 from account 1 to 2; re-run automatically on serialization failures.
  auto moved = keel::pg::retry_transaction(
      *c,
      [](keel::pg::transaction& tx) -> keel::result<void> {
        if (auto r = tx.query("UPDATE accounts SET balance = balance - $1 WHERE id = 1", 30L); !r)
          return r.error();
        if (auto r = tx.query("UPDATE accounts SET balance = balance + $1 WHERE id = 2", 30L); !r)
          return r.error();
        return {};
      },
      {.transaction = {.level = keel::pg::isolation::serializable}});
  if (!moved) return std::fprintf(stderr, "%s\n", c->last_error().to_string().c_str()), 1;

  auto balance = c->query("SELECT balance FROM accounts WHERE id = $1", 2L)->value<std::int64_t>();
  std::printf("account 2 holds %lld\n", static_cast<long long>(balance.value()));
  return balance.value() == 30 ? 0 : 1;
}
