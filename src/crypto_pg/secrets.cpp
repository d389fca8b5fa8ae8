// keel::crypto_pg: secrets as envelopes in Postgres, and the audit log chained by HMAC.
//
// Every call is one transaction holding its audit row: the row is appended under the lock of
// the one-row head table (which holds the last row's number and hash), so rows are numbered
// densely in commit order and each row's hash covers the previous one's.
#include <keel/core/byte_io.hpp>
#include <keel/crypto/envelope.hpp>
#include <keel/crypto/kdf.hpp>
#include <keel/crypto_pg/secrets.hpp>
#include <keel/pg/migrations.hpp>
#include <keel/pg/transaction.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>

namespace keel::crypto {
namespace {

constexpr pg::migration secrets_migrations[] = {
    {1, "secrets and the audit log", R"sql(
CREATE TABLE keel_secrets (
  tenant     text        NOT NULL,
  name       text        NOT NULL,
  latest     integer     NOT NULL CHECK (latest >= 1),
  metadata   jsonb       NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  PRIMARY KEY (tenant, name)
);
-- One row per version; envelope is NULL once the version is destroyed. key_ids lists the data
-- keys wrapping it ("provider:key id", sorted), for listing and for rewrap to find what is left.
CREATE TABLE keel_secret_versions (
  tenant       text        NOT NULL,
  name         text        NOT NULL,
  version      integer     NOT NULL CHECK (version >= 1),
  envelope     bytea,
  key_ids      text[]      NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  destroyed_at timestamptz,
  PRIMARY KEY (tenant, name, version),
  FOREIGN KEY (tenant, name) REFERENCES keel_secrets ON DELETE CASCADE
);
CREATE TABLE keel_secrets_audit (
  seq     bigint      PRIMARY KEY CHECK (seq >= 1),
  at      timestamptz NOT NULL,
  actor   text        NOT NULL,
  action  text        NOT NULL,
  tenant  text        NOT NULL,
  name    text        NOT NULL,
  version integer     NOT NULL,
  outcome text        NOT NULL,
  hash    bytea       NOT NULL
);
CREATE TABLE keel_secrets_audit_head (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  seq      bigint  NOT NULL,
  hash     bytea   NOT NULL
);
INSERT INTO keel_secrets_audit_head (seq, hash) VALUES (0, '\x');
)sql"},
};

constexpr std::string_view chain_label = "keel secrets audit v1";
constexpr std::size_t audit_page = 1000;

std::int64_t micros(timestamp t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

bytes chain_input(bytes_view previous, std::int64_t seq, std::int64_t at_us, const audit_record& f) {
  // Started from the label rather than appended to an empty buffer: GCC 12 at -O3 warns falsely
  // (-Wstringop-overflow) on inserting into an empty vector.
  bytes out(chain_label.begin(), chain_label.end());
  out.reserve(chain_label.size() + previous.size() + f.actor.size() + f.action.size() + f.tenant.size() +
              f.name.size() + f.outcome.size() + 64);
  byte_writer w(out);
  w.append_varint_prefixed(previous);
  w.be(static_cast<std::uint64_t>(seq));
  w.be(static_cast<std::uint64_t>(at_us));
  for (const std::string_view text : {f.actor, f.action, f.tenant, f.name, f.outcome}) {
    w.append_varint_prefixed(as_bytes(text));
  }
  w.be(static_cast<std::uint32_t>(f.version));
  return out;
}

// Appends one audit row in the caller's transaction. The head row's lock orders the appends.
result<void> append_audit(pg::connection& c, bytes_view audit_key, const audit_record& f) {
  auto head = c.query("UPDATE keel_secrets_audit_head SET seq = seq + 1 RETURNING seq, hash");
  if (!head) return head.error();
  auto seq = (*head)[0].get<std::int64_t>(0);
  auto previous = (*head)[0].get<bytes>(1);
  if (!seq) return seq.error();
  if (!previous) return previous.error();
  const auto now = std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
  const timestamp at{std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch())};
  auto hash = hmac(hash_algorithm::sha256, audit_key, chain_input(*previous, *seq, micros(at), f));
  if (!hash) return hash.error();
  auto written = c.query(
      "WITH entry AS (INSERT INTO keel_secrets_audit (seq, at, actor, action, tenant, name, version, "
      "outcome, hash) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)) "
      "UPDATE keel_secrets_audit_head SET hash = $9",
      *seq, at, f.actor, f.action, f.tenant, f.name, f.version, f.outcome, *hash);
  if (!written) return written.error();
  return {};
}

bool valid_text(std::string_view text, std::size_t max) {
  if (text.empty() || text.size() > max) return false;
  return std::none_of(text.begin(), text.end(), [](char ch) {
    const auto u = static_cast<unsigned char>(ch);
    return u < 0x20 || u == 0x7f;
  });
}

result<void> check_ref(const secret_ref& ref) {
  if (!valid_text(ref.tenant, 255) || !valid_text(ref.name, 512)) return errc::invalid_secret_name;
  return {};
}

// The context each version is sealed under: a value copied onto another secret, tenant or
// version by SQL no longer matches what the reader expects.
encryption_context context_of(const secret_ref& ref, std::int32_t version) {
  return {{"keel.secret.tenant", ref.tenant},
          {"keel.secret.name", ref.name},
          {"keel.secret.version", std::to_string(version)}};
}

std::vector<std::string> key_ids_of(bytes_view envelope) {
  std::vector<std::string> ids;
  if (auto header = read_header(envelope)) {
    for (const auto& key : header->data_keys) ids.push_back(key.provider + ":" + key.key_id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string outcome_of(const error_code& e) {
  return e.message();
}

}  // namespace

secret_store::secret_store(secret_store_options options) : options_(std::move(options)) {
  if (options_.wrappers.empty())
    throw std::invalid_argument("secret_store: give at least one wrapper (a kms)");
  if (options_.audit_key.size() < 32)
    throw std::invalid_argument("secret_store: the audit key must be 32 bytes or more");
  if (options_.unwrappers.empty()) options_.unwrappers = options_.wrappers;
}

result<void> secret_store::migrate(pg::connection& c) {
  auto report = pg::migrate(c, "crypto_secrets", secrets_migrations);
  if (!report) return report.error();
  return {};
}

result<std::int32_t> secret_store::put(pg::connection& c, const secret_ref& ref, bytes_view value,
                                       std::string_view actor, std::optional<std::string_view> metadata) {
  if (auto valid = check_ref(ref); !valid) return valid.error();
  if (value.size() > options_.max_value_bytes) return errc::secret_too_large;
  auto tx = pg::transaction::begin(c);
  if (!tx) return tx.error();
  // The secret's row lock assigns the version: concurrent puts to one secret take turns.
  auto assigned = c.query(
      "INSERT INTO keel_secrets AS s (tenant, name, latest, metadata) VALUES ($1, $2, 1, coalesce($3::jsonb, "
      "'{}')) "
      "ON CONFLICT (tenant, name) DO UPDATE SET latest = s.latest + 1, deleted_at = NULL, updated_at = "
      "now(), "
      "metadata = coalesce($3::jsonb, s.metadata) RETURNING latest",
      ref.tenant, ref.name, metadata);
  if (!assigned) return assigned.error();
  auto version = (*assigned)[0].get<std::int32_t>(0);
  if (!version) return version.error();
  auto sealed = encrypt(options_.wrappers, value, context_of(ref, *version));
  if (!sealed) return sealed.error();
  auto stored = c.query(
      "INSERT INTO keel_secret_versions (tenant, name, version, envelope, key_ids) VALUES ($1, $2, $3, $4, "
      "$5)",
      ref.tenant, ref.name, *version, *sealed, key_ids_of(*sealed));
  if (!stored) return stored.error();
  if (auto audited =
          append_audit(c, options_.audit_key.view(), {"put", actor, ref.tenant, ref.name, *version});
      !audited)
    return audited.error();
  if (auto committed = tx->commit(); !committed) return committed.error();
  return *version;
}

result<secret_value> secret_store::get(pg::connection& c, const secret_ref& ref, std::string_view actor,
                                       std::int32_t version) {
  if (auto valid = check_ref(ref); !valid) return valid.error();
  auto tx = pg::transaction::begin(c);
  if (!tx) return tx.error();
  auto found = c.query(
      "SELECT s.deleted_at IS NOT NULL, v.version, v.envelope, v.version IS NULL "
      "FROM keel_secrets s LEFT JOIN keel_secret_versions v ON v.tenant = s.tenant AND v.name = s.name "
      "AND v.version = CASE WHEN $3 = 0 THEN s.latest ELSE $3 END WHERE s.tenant = $1 AND s.name = $2",
      ref.tenant, ref.name, version);
  if (!found) return found.error();
  result<secret_value> answer = errc::secret_not_found;
  std::int32_t read_version = version;
  if (!found->empty()) {
    auto fields = (*found)[0].as<bool, std::optional<std::int32_t>, std::optional<bytes>, bool>();
    if (!fields) return fields.error();
    auto& [deleted, stored_version, envelope, no_such_version] = *fields;
    if (deleted) {
      answer = errc::secret_deleted;
    } else if (no_such_version) {
      answer = errc::secret_not_found;
    } else {
      read_version = stored_version.value_or(0);
      if (!envelope) {
        answer = errc::secret_version_destroyed;
      } else {
        auto opened = decrypt(options_.unwrappers, *envelope,
                              {.expected_context = context_of(ref, read_version), .cache = options_.cache});
        if (opened) {
          answer = secret_value{secret_bytes::copy_of(opened->plaintext), read_version};
          cleanse(opened->plaintext);
        } else {
          answer = opened.error();
        }
      }
    }
  }
  // Failed attempts are audited as well as reads: they are what an audit is for.
  const std::string outcome = answer ? "ok" : outcome_of(answer.error());
  if (auto audited = append_audit(c, options_.audit_key.view(),
                                  {"read", actor, ref.tenant, ref.name, read_version, outcome});
      !audited)
    return audited.error();
  if (auto committed = tx->commit(); !committed) return committed.error();
  return answer;
}

result<std::vector<secret_info>> secret_store::list(pg::connection& c, std::string_view tenant,
                                                    std::string_view actor, std::string_view prefix) {
  if (!valid_text(tenant, 255)) return errc::invalid_secret_name;
  auto tx = pg::transaction::begin(c);
  if (!tx) return tx.error();
  auto found = c.query(
      "SELECT name, latest, metadata::text, created_at, updated_at, deleted_at FROM keel_secrets "
      "WHERE tenant = $1 AND starts_with(name, $2) ORDER BY name",
      tenant, prefix);
  if (!found) return found.error();
  std::vector<secret_info> out;
  out.reserve(found->size());
  for (const auto row : *found) {
    auto fields =
        row.as<std::string, std::int32_t, std::string, timestamp, timestamp, std::optional<timestamp>>();
    if (!fields) return fields.error();
    auto& [name, latest, metadata, created_at, updated_at, deleted_at] = *fields;
    out.push_back({std::string(tenant), std::move(name), latest, std::move(metadata), created_at, updated_at,
                   deleted_at});
  }
  if (auto audited = append_audit(c, options_.audit_key.view(), {"list", actor, tenant, prefix, 0}); !audited)
    return audited.error();
  if (auto committed = tx->commit(); !committed) return committed.error();
  return out;
}

result<std::vector<secret_version_info>> secret_store::history(pg::connection& c, const secret_ref& ref,
                                                               std::string_view actor) {
  if (auto valid = check_ref(ref); !valid) return valid.error();
  auto tx = pg::transaction::begin(c);
  if (!tx) return tx.error();
  auto found = c.query(
      "SELECT version, created_at, destroyed_at, key_ids FROM keel_secret_versions "
      "WHERE tenant = $1 AND name = $2 ORDER BY version",
      ref.tenant, ref.name);
  if (!found) return found.error();
  std::vector<secret_version_info> out;
  for (const auto row : *found) {
    auto fields = row.as<std::int32_t, timestamp, std::optional<timestamp>, std::vector<std::string>>();
    if (!fields) return fields.error();
    auto& [version, created_at, destroyed_at, key_ids] = *fields;
    out.push_back({version, created_at, destroyed_at, std::move(key_ids)});
  }
  const std::string outcome = out.empty() ? outcome_of(errc::secret_not_found) : "ok";
  if (auto audited =
          append_audit(c, options_.audit_key.view(), {"history", actor, ref.tenant, ref.name, 0, outcome});
      !audited)
    return audited.error();
  if (auto committed = tx->commit(); !committed) return committed.error();
  if (out.empty()) return errc::secret_not_found;
  return out;
}

namespace {

// One statement changing a secret's rows ($1 tenant, $2 name, $3 the version when there is one),
// audited with its outcome in the same transaction. @returns errc::secret_not_found when it
// changed no row (audited as such).
result<void> audited_change(pg::connection& c, bytes_view audit_key, const audit_record& what,
                            std::string_view sql) {
  auto tx = pg::transaction::begin(c);
  if (!tx) return tx.error();
  auto changed = what.version == 0 ? c.query(sql, what.tenant, what.name)
                                   : c.query(sql, what.tenant, what.name, what.version);
  if (!changed) return changed.error();
  const bool found = changed->affected() == 1;
  const std::string outcome = found ? "ok" : outcome_of(errc::secret_not_found);
  audit_record audited_as = what;
  audited_as.outcome = outcome;
  if (auto audited = append_audit(c, audit_key, audited_as); !audited) return audited.error();
  if (auto committed = tx->commit(); !committed) return committed.error();
  if (!found) return errc::secret_not_found;
  return {};
}

}  // namespace

result<void> secret_store::remove(pg::connection& c, const secret_ref& ref, std::string_view actor) {
  if (auto valid = check_ref(ref); !valid) return valid.error();
  return audited_change(
      c, options_.audit_key.view(), {"delete", actor, ref.tenant, ref.name, 0},
      "UPDATE keel_secrets SET deleted_at = coalesce(deleted_at, now()), updated_at = now() "
      "WHERE tenant = $1 AND name = $2");
}

result<void> secret_store::restore(pg::connection& c, const secret_ref& ref, std::string_view actor) {
  if (auto valid = check_ref(ref); !valid) return valid.error();
  return audited_change(
      c, options_.audit_key.view(), {"restore", actor, ref.tenant, ref.name, 0},
      "UPDATE keel_secrets SET deleted_at = NULL, updated_at = now() WHERE tenant = $1 AND name = $2");
}

result<void> secret_store::destroy(pg::connection& c, const secret_ref& ref, std::int32_t version,
                                   std::string_view actor) {
  if (auto valid = check_ref(ref); !valid) return valid.error();
  if (version < 1) return errc::secret_not_found;
  return audited_change(
      c, options_.audit_key.view(), {"destroy", actor, ref.tenant, ref.name, version},
      "UPDATE keel_secret_versions SET envelope = NULL, key_ids = '{}', "
      "destroyed_at = coalesce(destroyed_at, now()) WHERE tenant = $1 AND name = $2 AND version = $3");
}

result<rewrap_report> secret_store::rewrap(pg::connection& c, std::string_view actor, std::size_t batch) {
  // The key ids a version wrapped now would have: what each wrapper's current key calls itself.
  std::vector<std::string> current;
  {
    const auto probe = secret_bytes::random(32);
    for (kms* wrapper : options_.wrappers) {
      auto wrapped = wrapper->wrap(probe.view(), as_bytes("keel secrets rewrap probe"));
      if (!wrapped) return wrapped.error();
      current.push_back(wrapped->provider + ":" + wrapped->key_id);
    }
    std::sort(current.begin(), current.end());
  }
  rewrap_report report;
  // Keyset order, so that a version that fails is visited once and the rest still move.
  std::string after_tenant;
  std::string after_name;
  std::int32_t after_version = 0;
  for (;;) {
    auto tx = pg::transaction::begin(c);
    if (!tx) return tx.error();
    auto due = c.query(
        "SELECT tenant, name, version, envelope FROM keel_secret_versions "
        "WHERE envelope IS NOT NULL AND key_ids <> $1::text[] AND (tenant, name, version) > ($2, $3, $4) "
        "ORDER BY tenant, name, version LIMIT $5 FOR UPDATE",
        current, after_tenant, after_name, after_version,
        static_cast<std::int64_t>(std::max<std::size_t>(batch, 1)));
    if (!due) return due.error();
    if (due->empty()) break;
    for (const auto row : *due) {
      auto fields = row.as<std::string, std::string, std::int32_t, bytes>();
      if (!fields) return fields.error();
      auto& [tenant, name, version, envelope] = *fields;
      const secret_ref ref{std::move(tenant), std::move(name)};
      after_tenant = ref.tenant;
      after_name = ref.name;
      after_version = version;
      auto moved = crypto::rewrap(options_.unwrappers, options_.wrappers, envelope,
                                  {.expected_context = context_of(ref, version)});
      std::string outcome = "ok";
      if (moved) {
        auto stored = c.query(
            "UPDATE keel_secret_versions SET envelope = $4, key_ids = $5 WHERE tenant = $1 AND name = $2 AND "
            "version = $3",
            ref.tenant, ref.name, version, *moved, key_ids_of(*moved));
        if (!stored) return stored.error();
        ++report.rewrapped;
      } else {
        outcome = outcome_of(moved.error());
        ++report.failed;
      }
      if (auto audited = append_audit(c, options_.audit_key.view(),
                                      {"rewrap", actor, ref.tenant, ref.name, version, outcome});
          !audited)
        return audited.error();
    }
    if (auto committed = tx->commit(); !committed) return committed.error();
  }
  return report;
}

result<void> secret_store::record(pg::connection& c, std::string_view action, std::string_view actor,
                                  std::string_view detail) {
  return record(c, audit_record{.action = action, .actor = actor, .tenant = "", .name = detail});
}

result<void> secret_store::record(pg::connection& c, const audit_record& what) {
  auto tx = pg::transaction::begin(c);
  if (!tx) return tx.error();
  if (auto audited = append_audit(c, options_.audit_key.view(), what); !audited) return audited.error();
  return tx->commit();
}

result<std::vector<audit_entry>> read_audit(pg::connection& c, std::int64_t after_seq, std::size_t limit) {
  auto found = c.query(
      "SELECT seq, at, actor, action, tenant, name, version, outcome, hash FROM keel_secrets_audit "
      "WHERE seq > $1 ORDER BY seq LIMIT $2",
      after_seq, static_cast<std::int64_t>(limit));
  if (!found) return found.error();
  std::vector<audit_entry> out;
  out.reserve(found->size());
  for (const auto row : *found) {
    auto fields = row.as<std::int64_t, timestamp, std::string, std::string, std::string, std::string,
                         std::int32_t, std::string, bytes>();
    if (!fields) return fields.error();
    auto& [seq, at, actor, action, tenant, name, version, outcome, hash] = *fields;
    out.push_back({seq, at, std::move(actor), std::move(action), std::move(tenant), std::move(name), version,
                   std::move(outcome), std::move(hash)});
  }
  return out;
}

result<audit_report> verify_audit(pg::connection& c, bytes_view audit_key,
                                  const std::optional<audit_anchor>& anchor) {
  audit_report report;
  // One snapshot for the rows and the head, so appends while verifying do not look like damage.
  auto tx = pg::transaction::begin(c, {.level = pg::isolation::repeatable_read, .read_only = true});
  if (!tx) return tx.error();
  bytes previous;
  std::int64_t expected = 1;
  bool anchor_seen = false;
  auto fail = [&](std::int64_t seq, std::string problem) {
    report.intact = false;
    report.first_bad_seq = seq;
    report.problem = std::move(problem);
  };
  for (;;) {
    auto page = read_audit(c, expected - 1, audit_page);
    if (!page) return page.error();
    for (const auto& e : *page) {
      if (e.seq != expected) {
        fail(expected, "row " + std::to_string(expected) + " is missing (the next row is " +
                           std::to_string(e.seq) + ")");
        return report;
      }
      const audit_record fields{e.action, e.actor, e.tenant, e.name, e.version, e.outcome};
      auto hash = hmac(hash_algorithm::sha256, audit_key, chain_input(previous, e.seq, micros(e.at), fields));
      if (!hash) return hash.error();
      if (!equal_constant_time(*hash, e.hash)) {
        fail(e.seq, "row " + std::to_string(e.seq) +
                        " does not match its hash: it was changed, moved, or written with another audit key");
        return report;
      }
      if (anchor && anchor->seq == e.seq) {
        if (!equal_constant_time(anchor->hash, e.hash)) {
          fail(e.seq,
               "row " + std::to_string(e.seq) + " is not the row the anchor recorded: the log was rewritten");
          return report;
        }
        anchor_seen = true;
      }
      previous = e.hash;
      ++report.rows;
      ++expected;
    }
    if (page->size() < audit_page) break;
  }
  auto head = c.query("SELECT seq, hash FROM keel_secrets_audit_head");
  if (!head) return head.error();
  if (head->empty()) {
    fail(0, "the audit head row is missing");
    return report;
  }
  auto head_fields = (*head)[0].as<std::int64_t, bytes>();
  if (!head_fields) return head_fields.error();
  report.head_seq = std::get<0>(*head_fields);
  report.head_hash = std::get<1>(*head_fields);
  if (report.head_seq != expected - 1 || !equal_constant_time(report.head_hash, previous)) {
    fail(expected, "the log ends at row " + std::to_string(expected - 1) + " but its head says " +
                       std::to_string(report.head_seq) + ": rows were cut from the end");
    return report;
  }
  if (anchor && anchor->seq > 0 && !anchor_seen) {
    fail(anchor->seq, "the anchor's row " + std::to_string(anchor->seq) +
                          " is no longer in the log (it ends at " + std::to_string(expected - 1) +
                          "): rows were cut from the end");
    return report;
  }
  report.intact = true;
  return report;
}

}  // namespace keel::crypto
