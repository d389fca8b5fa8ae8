// A program a keel user would write: link keel::core, use it, check the answers.
#include <keel/core.hpp>
#ifdef KEEL_CONSUMER_PG
#include <keel/pg/connection.hpp>
#endif
#ifdef KEEL_CONSUMER_NET
#include <keel/net.hpp>
#endif
#ifdef KEEL_CONSUMER_LEDGER
#include <keel/ledger.hpp>
#endif
#ifdef KEEL_CONSUMER_TSDB
#include <keel/tsdb.hpp>
#endif
#ifdef KEEL_CONSUMER_JOBS
#include <keel/jobs.hpp>
#endif
#ifdef KEEL_CONSUMER_EVENTS
#include <keel/events.hpp>
#endif
#ifdef KEEL_CONSUMER_CRYPTO
#include <keel/crypto.hpp>
#endif
#ifdef KEEL_CONSUMER_CRYPTO_PKCS11
#include <keel/crypto_pkcs11.hpp>
#endif
#ifdef KEEL_CONSUMER_CRYPTO_PG
#include <keel/crypto_pg.hpp>
#endif
#ifdef KEEL_CONSUMER_DSL
#include <keel/dsl.hpp>
#endif
#ifdef KEEL_CONSUMER_CRDT
#include <keel/crdt.hpp>
#endif
#ifdef KEEL_CONSUMER_SYNC
#include <keel/sync.hpp>
#endif
#ifdef KEEL_CONSUMER_DSL_PG
#include <keel/dsl_pg.hpp>
#endif
#ifdef KEEL_CONSUMER_DSL_HTTP
#include <keel/dsl_http.hpp>
#endif
#ifdef KEEL_CONSUMER_EVENTS_HTTP
#include <keel/events_http.hpp>
#include <keel/net/server.hpp>
#endif
#ifdef KEEL_CONSUMER_JOBS_HTTP
#include <keel/jobs_http.hpp>
#include <keel/net/server.hpp>
#endif
#ifdef KEEL_CONSUMER_TSDB_HTTP
#include <keel/tsdb.hpp>
#include <keel/tsdb_http.hpp>
#endif
#ifdef KEEL_CONSUMER_REDIS
#include <keel/redis.hpp>
#endif
#ifdef KEEL_CONSUMER_RATELIMIT
#include <keel/ratelimit.hpp>
#endif
#ifdef KEEL_CONSUMER_RATELIMIT_REDIS
#include <keel/ratelimit_redis.hpp>
#endif
#ifdef KEEL_CONSUMER_RATELIMIT_PG
#include <keel/pg/pool.hpp>
#include <keel/ratelimit_pg.hpp>
#endif
#ifdef KEEL_CONSUMER_RATELIMIT_HTTP
#include <keel/ratelimit_http.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <utility>
#include <vector>

int main() {
  const auto digest = keel::sha256(keel::as_bytes("abc"));
  const bool sha_ok =
      keel::to_hex(digest) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  const bool base64_ok = keel::to_base64(keel::as_bytes("foobar")) == "Zm9vYmFy";
  const bool error_ok = keel::from_hex("xyz").error() == keel::errc::hex_odd_length;
  const bool xxh_ok = keel::xxh3_64(keel::as_bytes("")) == 0x2D06800538D394C2ULL;
  const auto key = keel::ed25519_private_key::generate();
  const bool sign_ok = key.public_key().verify(keel::as_bytes("m"), key.sign(keel::as_bytes("m")));
  std::printf("keel %.*s: sha256 %d, base64 %d, errors %d, xxh3 %d, ed25519 %d\n",
              static_cast<int>(keel::version.size()), keel::version.data(), sha_ok, base64_ok, error_ok,
              xxh_ok, sign_ok);
  bool pg_ok = true;
#ifdef KEEL_CONSUMER_PG
  // No server here: a refused connection must come back as a clear error, not a crash.
  pg_ok = keel::pg::connection::connect("host=127.0.0.1 port=1 connect_timeout=1").error() ==
          keel::pg::errc::connection_failed;
  std::printf("pg: refused connection reported %d\n", pg_ok);
#endif
  bool components_ok = true;
#ifdef KEEL_CONSUMER_NET
  keel::net::server web({.port = 0});
  web.get("/ping", [](const keel::net::request&) { return keel::net::response{}; });
  std::printf("net: route added\n");
#endif
#ifdef KEEL_CONSUMER_LEDGER
  // Two accounts and a transfer in the in-memory engine: the balances must move.
  keel::ledger::memory_engine books;
  const keel::ledger::account accounts[] = {{.id = 1, .ledger = 1, .code = 1},
                                            {.id = 2, .ledger = 1, .code = 1}};
  const keel::ledger::transfer payment{
      .id = 10, .debit_account_id = 1, .credit_account_id = 2, .amount = 5, .ledger = 1, .code = 1};
  const auto created = books.create_accounts(accounts);
  const auto moved = books.create_transfers({&payment, 1});
  const auto credited = books.lookup_account(2);
  const bool ledger_ok =
      created && moved && credited && *credited && (*credited)->balances.credits_posted == 5;
  std::printf("ledger: transfer posted %d\n", ledger_ok);
  components_ok = components_ok && ledger_ok;
#endif
#ifdef KEEL_CONSUMER_TSDB
  // A block of points round-trips through the codecs bit for bit.
  const std::int64_t times[] = {1000, 2000, 3000};
  const double values[] = {1.5, -0.0, 1e300};
  std::vector<std::int64_t> times_back;
  std::vector<double> values_back;
  const auto block = keel::tsdb::encode_block(times, values);
  const bool tsdb_ok = block && keel::tsdb::decode_block(*block, times_back, values_back) &&
                       times_back.size() == 3 && values_back[2] == 1e300;
  std::printf("tsdb: block round trip %d\n", tsdb_ok);
  components_ok = components_ok && tsdb_ok;
#endif
#ifdef KEEL_CONSUMER_JOBS
  const bool jobs_ok = keel::jobs::parse_job_state("running") == keel::jobs::job_state::running &&
                       !keel::jobs::parse_job_state("nonesuch");
  std::printf("jobs: job states parsed %d\n", jobs_ok);
  components_ok = components_ok && jobs_ok;
#endif
#ifdef KEEL_CONSUMER_CRYPTO
  // Links keel::crypto and OpenSSL: seal and open a message.
  const auto crypto_key = keel::crypto::secret_bytes::random(32);
  const auto crypto_nonce = keel::crypto::random_bytes(keel::crypto::aead_nonce_bytes);
  const auto crypto_sealed = keel::crypto::seal(keel::crypto::aead_algorithm::aes_gcm, crypto_key.view(),
                                                crypto_nonce, keel::as_bytes("hello"));
  const bool crypto_ok = crypto_sealed && keel::crypto::open(keel::crypto::aead_algorithm::aes_gcm,
                                                             crypto_key.view(), crypto_nonce, *crypto_sealed)
                                              .has_value();
  std::printf("crypto: sealed and opened %d\n", crypto_ok);
  components_ok = components_ok && crypto_ok;
#endif
#ifdef KEEL_CONSUMER_CRYPTO_PKCS11
  // Links keel::crypto_pkcs11 (dlopen): a module that is not there is a clear error.
  keel::crypto::pkcs11_options pkcs11;
  pkcs11.module = "/nonexistent/module.so";
  const bool pkcs11_ok = keel::crypto::pkcs11_kms::open(std::move(pkcs11)).error() ==
                         keel::crypto::errc::pkcs11_module_unavailable;
  std::printf("crypto_pkcs11: missing module refused %d\n", pkcs11_ok);
  components_ok = components_ok && pkcs11_ok;
#endif
#ifdef KEEL_CONSUMER_CRYPTO_PG
  // Links keel::crypto_pg: a store needs a wrapper and an audit key (checked without a server).
  keel::crypto::keyring secrets_ring("consumer");
  secrets_ring.rotate();
  const keel::crypto::secret_store store({.wrappers = {&secrets_ring},
                                          .audit_key = keel::crypto::secret_bytes::random(32)});
  (void)store;
  std::printf("crypto_pg: store made 1\n");
#endif
#ifdef KEEL_CONSUMER_DSL
  // Links keel::dsl and its Boost.JSON: a catalog from JSON, a query compiled under a role.
  auto dsl_catalog = keel::dsl::catalog::from_json(
      R"({"tables": [{"name": "t", "columns": [{"name": "a", "type": "integer"}]}],
          "roles": [{"name": "r", "grants": [{"table": "t", "columns": ["*"]}]}]})");
  bool dsl_ok = dsl_catalog.has_value();
  if (dsl_ok) {
    auto dsl_compiler = keel::dsl::compiler::create(std::move(*dsl_catalog));
    dsl_ok = dsl_compiler && dsl_compiler->compile("from t | filter a > 1", {.role = "r"}).has_value();
  }
  std::printf("dsl: compiled 1 %d\n", dsl_ok);
  components_ok = components_ok && dsl_ok;
#endif
#ifdef KEEL_CONSUMER_CRDT
  // Links keel::crdt: two replicas of a text converge.
  keel::crdt::text crdt_a(1), crdt_b(2);
  bool crdt_ok = crdt_a.insert(0, "hi").has_value() && crdt_b.apply(crdt_a.delta_since({})).has_value() &&
                 crdt_b.str() == "hi";
  std::printf("crdt: converged 1 %d\n", crdt_ok);
  components_ok = components_ok && crdt_ok;
#endif
#ifdef KEEL_CONSUMER_SYNC
  // Links keel::sync: rooms mount on a server (not started).
  keel::net::server sync_server({.address = "127.0.0.1", .port = 0});
  const bool sync_ok = keel::sync::rooms::mount(sync_server, {}).has_value();
  std::printf("sync: mounted 1 %d\n", sync_ok);
  components_ok = components_ok && sync_ok;
#endif
#ifdef KEEL_CONSUMER_DSL_PG
  // Links keel::dsl_pg: running needs a server, so only its symbols are taken.
  auto* dsl_run = &keel::dsl::run;
  std::printf("dsl_pg: linked %d\n", dsl_run != nullptr);
#endif
#ifdef KEEL_CONSUMER_DSL_HTTP
  // Links keel::dsl_http: mounting needs a server and a pool, so only its symbol is taken.
  auto* dsl_mount = &keel::dsl_http::mount;
  std::printf("dsl_http: linked %d\n", dsl_mount != nullptr);
#endif
#ifdef KEEL_CONSUMER_EVENTS
  // Links keel::events and its Boost.JSON: validating a name and a batch needs no server.
  const bool events_ok = keel::events::category_of("order-42") == "order" &&
                         !keel::events::validate_stream_name("$all") &&
                         keel::events::all_position::parse("7/3").value() == keel::events::all_position{7, 3};
  std::printf("events: names and positions %d\n", events_ok);
  components_ok = components_ok && events_ok;
#endif
#ifdef KEEL_CONSUMER_EVENTS_HTTP
  {
    // Mounting pulls in keel::events, keel::net and keel::pg: a missing link dependency fails here.
    keel::net::server server({.address = "127.0.0.1", .port = 0});
    keel::pg::pool pool({.conninfo = "host=127.0.0.1 port=1 connect_timeout=1", .max_size = 1});
    keel::events_http::mount(server, pool);
    std::printf("events_http: mounted\n");
  }
#endif
  bool jobs_http_ok = true;
#ifdef KEEL_CONSUMER_JOBS_HTTP
  // Mounting pulls in keel::jobs, keel::net and keel::pg: a missing link dependency fails here.
  keel::pg::pool pool({.conninfo = "host=127.0.0.1 port=1 connect_timeout=1", .max_size = 1});
  keel::net::server server({.port = 0});
  keel::jobs_http::mount(server, pool);
  keel::net::request remote;
  remote.remote_address = "192.0.2.1";
  jobs_http_ok = !keel::jobs_http::default_authorization()(remote, keel::jobs_http::access::act);
  std::printf("jobs_http: remote action refused %d\n", jobs_http_ok);
#endif
  bool tsdb_http_ok = true;
#ifdef KEEL_CONSUMER_TSDB_HTTP
  // No server for a store here: the refusal is an error, and the routes link (keel::tsdb,
  // keel::net and keel::pg with them) or this fails to build.
  const bool store_refused = !keel::tsdb::store::open("host=127.0.0.1 port=1 connect_timeout=1");
  void (*mount_tsdb)(keel::net::server&, keel::tsdb::store&, keel::tsdb_http::options) =
      &keel::tsdb_http::mount;
  keel::net::request writer;
  writer.remote_address = "192.0.2.1";
  tsdb_http_ok = store_refused && mount_tsdb != nullptr &&
                 !keel::tsdb_http::default_authorization()(writer, keel::tsdb_http::access::write);
  std::printf("tsdb_http: unreachable store reported, remote write refused %d\n", tsdb_http_ok);
#endif
  bool redis_ok = true;
#ifdef KEEL_CONSUMER_REDIS
  // No server here either: refused, as an error of keel::redis.
  redis_ok = keel::redis::connection::connect({.port = 1}).error() == keel::redis::errc::unavailable &&
             keel::redis::client({.port = 1}).command({"PING"}).error() == keel::redis::errc::unavailable;
  std::printf("redis: refused connection reported %d\n", redis_ok);
#endif
  bool ratelimit_ok = true;
#if defined(KEEL_CONSUMER_RATELIMIT) || defined(KEEL_CONSUMER_RATELIMIT_REDIS) || \
    defined(KEEL_CONSUMER_RATELIMIT_PG) || defined(KEEL_CONSUMER_RATELIMIT_HTTP)
  const keel::ratelimit::limit one_per_hour{
      .algorithm = keel::ratelimit::algorithm::gcra, .count = 1, .period = std::chrono::hours(1)};
  const keel::ratelimit::keyed_limit keyed{"consumer", &one_per_hour};
  keel::ratelimit::decision first;
  keel::ratelimit::decision second;
  keel::ratelimit::memory_backend memory;
  ratelimit_ok = memory.decide({&keyed, 1}, 1, {&first, 1}) && memory.decide({&keyed, 1}, 1, {&second, 1}) &&
                 first.allowed && !second.allowed;
  std::printf("ratelimit: one allowed, then denied %d\n", ratelimit_ok);
#endif
#ifdef KEEL_CONSUMER_RATELIMIT_REDIS
  keel::ratelimit::redis_backend redis_store({.port = 1});
  const bool redis_down =
      redis_store.decide({&keyed, 1}, 1, {&first, 1}).error() == keel::ratelimit::errc::backend_unavailable;
  std::printf("ratelimit_redis: unreachable store reported %d\n", redis_down);
  ratelimit_ok = ratelimit_ok && redis_down;
#endif
#ifdef KEEL_CONSUMER_RATELIMIT_PG
  keel::pg::pool limit_pool({.conninfo = "host=127.0.0.1 port=1 connect_timeout=1", .max_size = 1});
  keel::ratelimit::postgres_backend pg_store(limit_pool);
  const bool pg_down = !pg_store.decide({&keyed, 1}, 1, {&first, 1});
  std::printf("ratelimit_pg: unreachable store reported %d\n", pg_down);
  ratelimit_ok = ratelimit_ok && pg_down;
#endif
#ifdef KEEL_CONSUMER_RATELIMIT_HTTP
  keel::ratelimit::limiter http_limiter(memory);
  const auto mw = keel::ratelimit::middleware(http_limiter);
  std::printf("ratelimit_http: middleware built %d\n", static_cast<bool>(mw));
  ratelimit_ok = ratelimit_ok && static_cast<bool>(mw);
#endif
  return sha_ok && base64_ok && error_ok && xxh_ok && sign_ok && pg_ok && components_ok && jobs_http_ok &&
                 tsdb_http_ok && redis_ok && ratelimit_ok
             ? 0
             : 1;
}
