// docs/getting-started.md quotes this file; ctest runs it (examples.getting_started).
// A shop's order in four keel components: the payment in a ledger, a receipt job, the order
// amount as a time series, and a per-user rate limit. One Postgres serves all of them.
#include <keel/jobs.hpp>
#include <keel/ledger.hpp>
#include <keel/pg/local_cluster.hpp>
#include <keel/ratelimit.hpp>
#include <keel/tsdb.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>

int main() {
  using namespace std::chrono_literals;
  // KEEL_DATABASE_URL names your Postgres; without it, a throwaway one is started for the run.
  std::optional<keel::pg::local_cluster> cluster;
  const char* url = std::getenv("KEEL_DATABASE_URL");
  if (url == nullptr) cluster.emplace(keel::pg::local_cluster::start().value());
  const std::string conninfo = url != nullptr ? url : cluster->conninfo();
  auto c = keel::pg::connection::connect(conninfo).value();
  (void)keel::ledger::migrate(c).value();  // each component creates its tables once
  (void)keel::jobs::migrate(c).value();
  (void)keel::tsdb::migrate(c).value();

  // Rate limit first: 3 orders a minute per user, checked in process (no HTTP needed).
  keel::ratelimit::memory_backend limits;
  keel::ratelimit::limiter limiter(limits);
  (void)limiter
      .set_policies(keel::ratelimit::parse_policies(R"({"policies": [{"name": "orders", "key": ["user"],
          "limits": [{"algorithm": "sliding_window", "limit": 3, "period": "1m"}]}]})")
                        .value())
      .value();
  if (!limiter.check({.user = "alice"}).allowed()) return std::puts("slow down"), 1;

  // The payment: 12.50 from alice's wallet to the shop, in the ledger (double-entry, in Postgres).
  using namespace keel::ledger;
  pg_engine ledger(c);
  const account accounts[] = {{.id = 1, .ledger = 978, .code = 1}, {.id = 2, .ledger = 978, .code = 2}};
  (void)ledger.create_accounts(accounts).value();
  const transfer payment[] = {
      {.id = 100, .debit_account_id = 1, .credit_account_id = 2, .amount = 1250, .ledger = 978, .code = 1}};
  if (ledger.create_transfers(payment).value()[0] != transfer_result::ok) return 1;

  // A receipt, sent by a worker; the program waits for it (woken by the worker, no polling).
  keel::jobs::worker worker({.conninfo = conninfo});
  worker.handle("send_receipt", [](const keel::jobs::job_context& job) {
    std::printf("receipt for order %lld\n", static_cast<long long>(job.args->at("order").as_int64()));
    return keel::jobs::job_result::done();
  });
  (void)worker.start().value();
  const auto receipt = keel::jobs::enqueue(c, {.kind = "send_receipt", .args = R"({"order": 100})"}).value();
  const auto sent = keel::jobs::wait_for_job(c, receipt.id, 30s).value();
  worker.stop();

  // The order's amount as a time series point (milliseconds since the epoch).
  auto series = keel::tsdb::store::open(conninfo).value();
  const auto revenue = series.series("order_cents", {{"shop", "main"}}).value();
  const std::int64_t now_ms = 1'700'000'000'000;
  const std::int64_t times[] = {now_ms};
  const double amounts[] = {1250};
  (void)series.buffer(revenue, times, amounts).value();
  (void)series.flush().value();
  const auto minute =
      series.aggregate(revenue, {.from = now_ms, .to = now_ms + 60'000, .width = 60'000}).value();

  const auto shop = ledger.lookup_account(2).value();
  std::printf("shop credits %s, receipt %s, revenue this minute %.0f\n",
              to_string(shop->balances.credits_posted).c_str(), keel::jobs::to_string(sent.state).data(),
              minute.at(0).sum);
  return sent.state == keel::jobs::job_state::completed && minute.at(0).sum == 1250 ? 0 : 1;
}
