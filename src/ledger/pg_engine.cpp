#include <keel/core/backoff.hpp>
#include <keel/core/log.hpp>
#include <keel/ledger/pg_engine.hpp>
#include <keel/pg/advisory_lock.hpp>
#include <keel/pg/copy.hpp>
#include <keel/pg/transaction.hpp>
#include <keel/pg/types.hpp>

#include "state_machine.hpp"
#include "u128_numeric.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace keel::ledger {

namespace {

using detail::u128_numeric;

// Every table is append-only except accounts (balances) and transfers (pending state); the
// journal, the Merkle nodes and the balance history reject UPDATE, DELETE and TRUNCATE.
constexpr std::string_view schema_v1 = R"sql(
CREATE TABLE keel_ledger_head (
  id int2 PRIMARY KEY CHECK (id = 1),
  size int8 NOT NULL,
  last_timestamp int8 NOT NULL,
  frontier bytea NOT NULL
);
INSERT INTO keel_ledger_head VALUES (1, 0, 0, '');
CREATE TABLE keel_ledger_journal (
  sequence int8 PRIMARY KEY,
  timestamp int8 NOT NULL,
  entry bytea NOT NULL
);
CREATE INDEX keel_ledger_journal_timestamp ON keel_ledger_journal USING brin (timestamp);
CREATE TABLE keel_ledger_nodes (
  level int2 NOT NULL,
  idx int8 NOT NULL,
  hash bytea NOT NULL,
  PRIMARY KEY (level, idx)
);
CREATE TABLE keel_ledger_accounts (
  id uuid PRIMARY KEY,
  ledger int8 NOT NULL,
  code int4 NOT NULL,
  flags int4 NOT NULL,
  user_data uuid NOT NULL,
  timestamp int8 NOT NULL,
  sequence int8 NOT NULL,
  debits_pending numeric(39, 0) NOT NULL DEFAULT 0,
  debits_posted numeric(39, 0) NOT NULL DEFAULT 0,
  credits_pending numeric(39, 0) NOT NULL DEFAULT 0,
  credits_posted numeric(39, 0) NOT NULL DEFAULT 0
) WITH (fillfactor = 50);
CREATE INDEX keel_ledger_accounts_ledger ON keel_ledger_accounts (ledger, sequence);
CREATE TABLE keel_ledger_transfers (
  id uuid PRIMARY KEY,
  debit_account_id uuid NOT NULL,
  credit_account_id uuid NOT NULL,
  amount numeric(39, 0) NOT NULL,
  pending_id uuid NOT NULL,
  user_data uuid NOT NULL,
  timeout int8 NOT NULL,
  ledger int8 NOT NULL,
  code int4 NOT NULL,
  flags int4 NOT NULL,
  timestamp int8 NOT NULL,
  state int2 NOT NULL,
  expires_at int8 NOT NULL
);
CREATE INDEX keel_ledger_transfers_expiry ON keel_ledger_transfers (expires_at) WHERE state = 1 AND expires_at > 0;
CREATE TABLE keel_ledger_balances (
  account_id uuid NOT NULL,
  sequence int8 NOT NULL,
  timestamp int8 NOT NULL,
  transfer_id uuid NOT NULL,
  debits_pending numeric(39, 0) NOT NULL,
  debits_posted numeric(39, 0) NOT NULL,
  credits_pending numeric(39, 0) NOT NULL,
  credits_posted numeric(39, 0) NOT NULL,
  PRIMARY KEY (account_id, sequence)
);
CREATE FUNCTION keel_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'keel.ledger: % is append-only (% rejected)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER keel_ledger_journal_append_only BEFORE UPDATE OR DELETE ON keel_ledger_journal
  FOR EACH ROW EXECUTE FUNCTION keel_ledger_append_only();
CREATE TRIGGER keel_ledger_journal_no_truncate BEFORE TRUNCATE ON keel_ledger_journal
  FOR EACH STATEMENT EXECUTE FUNCTION keel_ledger_append_only();
CREATE TRIGGER keel_ledger_nodes_append_only BEFORE UPDATE OR DELETE ON keel_ledger_nodes
  FOR EACH ROW EXECUTE FUNCTION keel_ledger_append_only();
CREATE TRIGGER keel_ledger_nodes_no_truncate BEFORE TRUNCATE ON keel_ledger_nodes
  FOR EACH STATEMENT EXECUTE FUNCTION keel_ledger_append_only();
CREATE TRIGGER keel_ledger_balances_append_only BEFORE UPDATE OR DELETE ON keel_ledger_balances
  FOR EACH ROW EXECUTE FUNCTION keel_ledger_append_only();
CREATE TRIGGER keel_ledger_balances_no_truncate BEFORE TRUNCATE ON keel_ledger_balances
  FOR EACH STATEMENT EXECUTE FUNCTION keel_ledger_append_only();
)sql";

const pg::migration all_migrations[] = {
    {.version = 1, .name = "journal, merkle nodes, accounts, transfers, balance history", .sql = schema_v1},
};

pg::uuid to_uuid(u128 v) noexcept {
  pg::uuid u;
  for (int i = 15; i >= 0; --i) {
    u.bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
    v >>= 8U;
  }
  return u;
}

u128 from_uuid(const pg::uuid& u) noexcept {
  u128 v = 0;
  for (const auto b : u.bytes) v = (v << 8U) | b;
  return v;
}

std::string uuid_text(u128 v) {
  return to_uuid(v).to_string();
}

std::int64_t i64(std::uint64_t v) noexcept {
  return static_cast<std::int64_t>(v);
}
std::uint64_t u64(std::int64_t v) noexcept {
  return static_cast<std::uint64_t>(v);
}

// Amounts and balances are read as numeric(39, 0)::text. Text that is not a u128 was not
// written by the ledger: that is a storage failure, not a bad request.
result<u128> stored_u128(const std::string& text) {
  auto value = parse_u128(text);
  if (!value) return errc::storage_failure;
  return *value;
}

result<balance> balance_at(const pg::row& r, std::size_t first) {
  auto texts = r.as<std::string, std::string, std::string, std::string>(first);
  if (!texts) return texts.error();
  const auto& [debits_pending, debits_posted, credits_pending, credits_posted] = *texts;
  balance b;
  for (const auto& [field, text] :
       {std::pair{&b.debits_pending, &debits_pending}, std::pair{&b.debits_posted, &debits_posted},
        std::pair{&b.credits_pending, &credits_pending}, std::pair{&b.credits_posted, &credits_posted}}) {
    auto value = stored_u128(*text);
    if (!value) return value.error();
    *field = *value;
  }
  return b;
}

constexpr std::string_view account_columns =
    "id, ledger, code, flags, user_data, timestamp, debits_pending::text, debits_posted::text, "
    "credits_pending::text, credits_posted::text, sequence";

// `first`: the column account_columns start at.
result<account> account_from(const pg::row& r, std::size_t first = 0) {
  auto fields = r.as<pg::uuid, std::int64_t, std::int32_t, std::int32_t, pg::uuid, std::int64_t>(first);
  if (!fields) return fields.error();
  auto balances = balance_at(r, first + 6);
  if (!balances) return balances.error();
  const auto& [id, ledger_id, code, flags, user_data, ts] = *fields;
  account a;
  a.id = from_uuid(id);
  a.ledger = static_cast<std::uint32_t>(ledger_id);
  a.code = static_cast<std::uint16_t>(code);
  a.flags = static_cast<std::uint16_t>(flags);
  a.user_data = from_uuid(user_data);
  a.timestamp = u64(ts);
  a.balances = *balances;
  return a;
}

constexpr std::string_view transfer_columns =
    "id, debit_account_id, credit_account_id, amount::text, pending_id, user_data, timeout, ledger, code, "
    "flags, "
    "timestamp, state, expires_at";
constexpr std::size_t transfer_column_count = 13;
constexpr std::size_t account_column_count = 11;

// "a, b::text" with each column qualified by `table`: "t.a, t.b::text".
std::string qualified(std::string_view columns, std::string_view table) {
  std::string out;
  std::size_t at = 0;
  while (at < columns.size()) {
    auto end = columns.find(", ", at);
    if (end == std::string_view::npos) end = columns.size();
    if (!out.empty()) out += ", ";
    out.append(table).append(".").append(columns.substr(at, end - at));
    at = end + 2;
  }
  return out;
}

result<detail::transfer_record> transfer_from(const pg::row& r) {
  auto fields = r.as<pg::uuid, pg::uuid, pg::uuid, std::string, pg::uuid, pg::uuid, std::int64_t,
                     std::int64_t, std::int32_t, std::int32_t, std::int64_t, std::int16_t, std::int64_t>();
  if (!fields) return fields.error();
  const auto& [id, debit, credit, amount_text, pending, user_data, timeout, ledger_id, code, flags, ts, state,
               expires] = *fields;
  auto amount = stored_u128(amount_text);
  if (!amount) return amount.error();
  detail::transfer_record t;
  t.value.id = from_uuid(id);
  t.value.debit_account_id = from_uuid(debit);
  t.value.credit_account_id = from_uuid(credit);
  t.value.amount = *amount;
  t.value.pending_id = from_uuid(pending);
  t.value.user_data = from_uuid(user_data);
  t.value.timeout = static_cast<std::uint32_t>(timeout);
  t.value.ledger = static_cast<std::uint32_t>(ledger_id);
  t.value.code = static_cast<std::uint16_t>(code);
  t.value.flags = static_cast<std::uint16_t>(flags);
  t.value.timestamp = u64(ts);
  t.state = static_cast<pending_state>(state);
  t.expires_at = u64(expires);
  return t;
}

std::uint64_t to_ns(timestamp t) noexcept {
  return static_cast<std::uint64_t>(t.time_since_epoch().count());
}

struct head_row {
  std::uint64_t size = 0;
  std::uint64_t last_timestamp = 0;
  merkle_frontier frontier;
};

result<head_row> lock_head(pg::connection& c) {
  auto rows = c.query("SELECT size, last_timestamp, frontier FROM keel_ledger_head WHERE id = 1 FOR UPDATE");
  if (!rows) return rows.error();
  if (rows->size() != 1) return errc::storage_failure;  // the migration inserts the one head row
  auto fields = (*rows)[0].as<std::int64_t, std::int64_t, bytes>();
  if (!fields) return fields.error();
  auto& [size, last, frontier] = *fields;
  auto parsed = merkle_frontier::parse(u64(size), frontier);
  if (!parsed) return parsed.error();
  return head_row{u64(size), u64(last), std::move(*parsed)};
}

// Loads the rows a batch can touch into the working set, under the head lock.
result<void> load_transfers(pg::connection& c, detail::working_set& ws, std::string_view where,
                            const pg::params& params,
                            std::unordered_map<u128, pending_state, detail::u128_hash>& loaded) {
  const auto sql = std::string("SELECT ") + std::string(transfer_columns) +
                   " FROM keel_ledger_transfers WHERE " + std::string(where);
  auto rows = c.query_params(sql, params);
  if (!rows) return rows.error();
  for (const auto r : *rows) {
    auto t = transfer_from(r);
    if (!t) return t.error();
    if (ws.transfers.count(t->value.id) != 0) continue;
    loaded[t->value.id] = t->state;
    if (t->state == pending_state::pending && t->expires_at != 0)
      ws.expiries.emplace(t->expires_at, t->value.id);
    ws.transfers.emplace(t->value.id, *t);
  }
  return {};
}

result<void> load_accounts(pg::connection& c, detail::working_set& ws, const std::vector<std::string>& ids) {
  if (ids.empty()) return {};
  auto rows = c.query(std::string("SELECT ") + std::string(account_columns) +
                          " FROM keel_ledger_accounts WHERE id = ANY($1::uuid[])",
                      ids);
  if (!rows) return rows.error();
  for (const auto r : *rows) {
    auto a = account_from(r);
    if (!a) return a.error();
    ws.accounts.emplace(a->id, *a);
  }
  return {};
}

// The expiries due by `now` that no entry records yet (filtered by `where` on the pending
// transfer t, with `filter` as $2), and the journal size they follow. One statement reads the
// holds, both their accounts and the head, so they come from one snapshot.
struct projected {
  detail::expiry_projection due;
  std::uint64_t size = 0;
};

template <class... Filter>
result<projected> project(pg::connection& c, std::uint64_t now, std::string_view where,
                          const Filter&... filter) {
  const auto sql = "SELECT " + qualified(transfer_columns, "t") + ", " + qualified(account_columns, "d") +
                   ", " + qualified(account_columns, "k") +
                   ", h.size, h.last_timestamp FROM keel_ledger_transfers t "
                   "JOIN keel_ledger_accounts d ON d.id = t.debit_account_id "
                   "JOIN keel_ledger_accounts k ON k.id = t.credit_account_id CROSS JOIN keel_ledger_head h "
                   "WHERE t.state = 1 AND t.expires_at > 0 AND t.expires_at <= $1 " +
                   std::string(where);
  auto rows = c.query(sql, i64(std::min<std::uint64_t>(now, INT64_MAX)), filter...);
  if (!rows) return rows.error();
  projected out;
  if (rows->empty()) return out;
  detail::working_set ws;
  for (const pg::row r : *rows) {
    auto t = transfer_from(r);
    auto debit = account_from(r, transfer_column_count);
    auto credit = account_from(r, transfer_column_count + account_column_count);
    auto head = r.as<std::int64_t, std::int64_t>(transfer_column_count + 2 * account_column_count);
    if (!t) return t.error();
    if (!debit) return debit.error();
    if (!credit) return credit.error();
    if (!head) return head.error();
    const auto [size, last] = *head;
    out.size = u64(size);
    ws.last_timestamp = u64(last);
    ws.accounts.emplace(debit->id, *debit);
    ws.accounts.emplace(credit->id, *credit);
    ws.expiries.emplace(t->expires_at, t->value.id);
    ws.transfers.emplace(t->value.id, *t);
  }
  out.due = detail::project_expiries(ws, now);
  return out;
}

// Appends the committed entries: journal rows and Merkle nodes by binary COPY, the head row.
result<void> write_journal(pg::connection& c, head_row& head,
                           const std::vector<detail::applied_entry>& applied, std::uint64_t last_timestamp) {
  if (!applied.empty()) {
    std::vector<completed_node> completed;
    completed.reserve(applied.size() * 2 + 64);
    auto journal = pg::copy_writer::start(c, "keel_ledger_journal", {"sequence", "timestamp", "entry"});
    if (!journal) return journal.error();
    bytes entry_bytes(entry_size);
    for (const auto& a : applied) {
      const auto sequence = head.frontier.size();
      const auto encoded = encode(a.entry);
      head.frontier.append(leaf_hash(encoded), completed);
      std::copy(encoded.begin(), encoded.end(), entry_bytes.begin());
      if (auto done = journal->write_row(i64(sequence), i64(a.entry.timestamp()), entry_bytes); !done)
        return done.error();
    }
    if (auto done = journal->finish(); !done) return done.error();
    auto nodes = pg::copy_writer::start(c, "keel_ledger_nodes", {"level", "idx", "hash"});
    if (!nodes) return nodes.error();
    bytes hash_bytes(sizeof(tree_hash));
    for (const auto& n : completed) {
      std::copy(n.hash.begin(), n.hash.end(), hash_bytes.begin());
      if (auto done = nodes->write_row(static_cast<std::int16_t>(n.level), i64(n.index), hash_bytes); !done)
        return done.error();
    }
    if (auto done = nodes->finish(); !done) return done.error();
  }
  if (auto done =
          c.query("UPDATE keel_ledger_head SET size = $1, last_timestamp = $2, frontier = $3 WHERE id = 1",
                  i64(head.frontier.size()), i64(last_timestamp), head.frontier.serialize());
      !done)
    return done.error();
  return {};
}

}  // namespace

std::span<const pg::migration> migrations() noexcept {
  return all_migrations;
}

result<pg::migration_report> migrate(pg::connection& c) {
  return pg::migrate(c, "ledger", migrations());
}

pg_engine::pg_engine(pg::connection& c, pg_options options) noexcept
    : c_(&c), clock_(options.clock != nullptr ? options.clock : &system_clock::instance()) {}

template <class Result, class Event>
result<std::vector<Result>> pg_engine::write_batch(std::span<const Event> batch, std::uint64_t* appended) {
  if (batch.size() > max_batch) return errc::batch_too_large;
  auto tx = pg::transaction::begin(*c_);
  if (!tx) return tx.error();
  // One writer at a time per journal: the head row lock orders batches (gap-free sequences)
  // and is the only lock taken first, so writers queue instead of deadlocking.
  auto head = lock_head(*c_);
  if (!head) return head.error();
  detail::working_set ws;
  ws.last_timestamp = head->last_timestamp;
  const auto now = to_ns(clock_->now());
  std::vector<Result> results;
  results.reserve(batch.size());
  std::vector<detail::applied_entry> applied;
  std::unordered_map<u128, pending_state, detail::u128_hash> loaded_states;
  detail::state_machine machine(ws);

  if constexpr (std::is_same_v<Event, account>) {
    std::vector<std::string> ids;
    for (const auto& a : batch) ids.push_back(uuid_text(a.id));
    if (auto r = load_accounts(*c_, ws, ids); !r) return r.error();
    machine.create_accounts(batch, now, results, applied);
  } else {
    std::vector<std::string> transfer_ids;
    std::unordered_set<u128, detail::u128_hash> account_ids;
    for (const auto& t : batch) {
      transfer_ids.push_back(uuid_text(t.id));
      if (t.pending_id != 0) transfer_ids.push_back(uuid_text(t.pending_id));
      if (t.debit_account_id != 0) account_ids.insert(t.debit_account_id);
      if (t.credit_account_id != 0) account_ids.insert(t.credit_account_id);
    }
    if (auto r = load_transfers(*c_, ws, "id = ANY($1::uuid[])", pg::params(transfer_ids), loaded_states); !r)
      return r.error();
    if (auto r = load_transfers(*c_, ws, "state = 1 AND expires_at > 0 AND expires_at <= $1",
                                pg::params(i64(now)), loaded_states);
        !r)
      return r.error();
    ws.transfers.for_each([&](u128, const detail::transfer_record& t) {
      account_ids.insert(t.value.debit_account_id);
      account_ids.insert(t.value.credit_account_id);
    });
    std::vector<std::string> ids;
    ids.reserve(account_ids.size());
    for (const auto id : account_ids) ids.push_back(uuid_text(id));
    if (auto r = load_accounts(*c_, ws, ids); !r) return r.error();
    machine.expire(now, applied);
    machine.create_transfers(batch, now, results, applied);
  }

  // Sequences of the entries, and everything they changed, in set-based statements.
  const auto first_sequence = head->frontier.size();
  if constexpr (std::is_same_v<Event, account>) {
    std::vector<std::string> id, user_data;
    std::vector<std::int64_t> ledger_id, code, flags, ts, sequence;
    for (std::size_t i = 0; i < applied.size(); ++i) {
      const auto& a = applied[i].entry.account;
      id.push_back(uuid_text(a.id));
      user_data.push_back(uuid_text(a.user_data));
      ledger_id.push_back(a.ledger);
      code.push_back(a.code);
      flags.push_back(a.flags);
      ts.push_back(i64(a.timestamp));
      sequence.push_back(i64(first_sequence + i));
    }
    if (!id.empty()) {
      auto inserted = c_->query(
          "INSERT INTO keel_ledger_accounts (id, ledger, code, flags, user_data, timestamp, sequence) "
          "SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[]::int4[], $4::int8[]::int4[], "
          "$5::uuid[], "
          "$6::int8[], $7::int8[])",
          id, ledger_id, code, flags, user_data, ts, sequence);
      if (!inserted) return inserted.error();
    }
  } else {
    // New transfers with their state as it stands after the batch, and two balance-history
    // rows per entry: binary COPY, no per-row statements.
    auto transfers = pg::copy_writer::start(
        *c_, "keel_ledger_transfers",
        {"id", "debit_account_id", "credit_account_id", "amount", "pending_id", "user_data", "timeout",
         "ledger", "code", "flags", "timestamp", "state", "expires_at"});
    if (!transfers) return transfers.error();
    std::unordered_set<u128, detail::u128_hash> touched;
    for (const auto& a : applied) {
      touched.insert(a.debit_id);
      touched.insert(a.credit_id);
      if (a.entry.kind != entry_kind::transfer) continue;
      const auto& t = a.entry.transfer;
      const auto& record = ws.transfers.at(t.id);
      if (auto done = transfers->write_row(
              to_uuid(t.id), to_uuid(t.debit_account_id), to_uuid(t.credit_account_id),
              u128_numeric{t.amount}, to_uuid(t.pending_id), to_uuid(t.user_data),
              static_cast<std::int64_t>(t.timeout), static_cast<std::int64_t>(t.ledger),
              static_cast<std::int32_t>(t.code), static_cast<std::int32_t>(t.flags), i64(t.timestamp),
              static_cast<std::int16_t>(record.state), i64(record.expires_at));
          !done)
        return done.error();
    }
    if (auto done = transfers->finish(); !done) return done.error();

    auto history =
        pg::copy_writer::start(*c_, "keel_ledger_balances",
                               {"account_id", "sequence", "timestamp", "transfer_id", "debits_pending",
                                "debits_posted", "credits_pending", "credits_posted"});
    if (!history) return history.error();
    for (std::size_t i = 0; i < applied.size(); ++i) {
      const auto& a = applied[i];
      const auto sequence = i64(first_sequence + i);
      const auto ts = i64(a.entry.transfer.timestamp);
      const auto tid = to_uuid(a.entry.transfer.id);
      for (const auto& [aid, b] :
           {std::pair{a.debit_id, a.debit_after}, std::pair{a.credit_id, a.credit_after}}) {
        if (auto done = history->write_row(to_uuid(aid), sequence, ts, tid, u128_numeric{b.debits_pending},
                                           u128_numeric{b.debits_posted}, u128_numeric{b.credits_pending},
                                           u128_numeric{b.credits_posted});
            !done)
          return done.error();
      }
    }
    if (auto done = history->finish(); !done) return done.error();

    // Pending transfers loaded from the database whose state this batch changed.
    std::vector<std::string> changed_id;
    std::vector<std::int64_t> changed_state;
    for (const auto& [tid, old_state] : loaded_states) {
      const auto now_state = ws.transfers.at(tid).state;
      if (now_state == old_state) continue;
      changed_id.push_back(uuid_text(tid));
      changed_state.push_back(static_cast<std::int64_t>(now_state));
    }
    if (!changed_id.empty()) {
      auto updated = c_->query(
          "UPDATE keel_ledger_transfers t SET state = v.state FROM unnest($1::uuid[], $2::int8[]::int2[]) "
          "AS v(id, state) WHERE t.id = v.id",
          changed_id, changed_state);
      if (!updated) return updated.error();
    }

    // Final balances: COPY into a per-session temporary table, one UPDATE from it.
    if (!touched.empty()) {
      auto exists = c_->query("SELECT to_regclass('pg_temp.keel_ledger_balance_updates') IS NOT NULL");
      if (!exists) return exists.error();
      const auto present = exists->value<bool>();
      if (!present) return present.error();
      if (!*present) {
        auto created = c_->execute(
            "CREATE TEMP TABLE keel_ledger_balance_updates (id uuid, flags int4, "
            "debits_pending numeric, debits_posted numeric, credits_pending numeric, "
            "credits_posted numeric) ON COMMIT DELETE ROWS");
        if (!created) return created.error();
      }
      auto updates = pg::copy_writer::start(
          *c_, "keel_ledger_balance_updates",
          {"id", "flags", "debits_pending", "debits_posted", "credits_pending", "credits_posted"});
      if (!updates) return updates.error();
      for (const auto aid : touched) {
        const auto& a = ws.accounts.at(aid);
        const auto& b = a.balances;
        if (auto done = updates->write_row(to_uuid(aid), static_cast<std::int32_t>(a.flags),
                                           u128_numeric{b.debits_pending}, u128_numeric{b.debits_posted},
                                           u128_numeric{b.credits_pending}, u128_numeric{b.credits_posted});
            !done)
          return done.error();
      }
      if (auto done = updates->finish(); !done) return done.error();
      if (auto done = c_->query(
              "UPDATE keel_ledger_accounts a SET flags = v.flags, debits_pending = v.debits_pending, "
              "debits_posted = v.debits_posted, credits_pending = v.credits_pending, "
              "credits_posted = v.credits_posted FROM keel_ledger_balance_updates v WHERE a.id = v.id");
          !done)
        return done.error();
    }
  }
  if (auto r = write_journal(*c_, *head, applied, ws.last_timestamp); !r) return r.error();
  if (auto done = tx->commit(); !done) return done.error();
  if (appended != nullptr) *appended = applied.size();
  return results;
}

result<std::vector<account_result>> pg_engine::create_accounts(std::span<const account> batch) {
  return write_batch<account_result>(batch);
}

result<std::vector<transfer_result>> pg_engine::create_transfers(std::span<const transfer> batch) {
  return write_batch<transfer_result>(batch);
}

result<std::uint64_t> pg_engine::expire_pending() {
  // Most passes find nothing due: ask first, without queueing for the journal head lock.
  auto due = c_->query(
      "SELECT EXISTS (SELECT 1 FROM keel_ledger_transfers WHERE state = 1 AND expires_at > 0 AND expires_at "
      "<= $1)",
      i64(to_ns(clock_->now())));
  if (!due) return due.error();
  auto any = due->value<bool>();
  if (!any) return any.error();
  if (!*any) return std::uint64_t{0};
  std::uint64_t appended = 0;
  // An empty batch is exactly the expiry the next batch would run first.
  auto r = write_batch<transfer_result>(std::span<const transfer>{}, &appended);
  if (!r) return r.error();
  return appended;
}

result<std::optional<account>> pg_engine::lookup_account(u128 id) {
  auto due = project(*c_, to_ns(clock_->now()), "AND (t.debit_account_id = $2 OR t.credit_account_id = $2)",
                     to_uuid(id));
  if (!due) return due.error();
  if (const auto* after = due->due.accounts.find(id); after != nullptr) return std::optional<account>{*after};
  auto rows = c_->query(
      std::string("SELECT ") + std::string(account_columns) + " FROM keel_ledger_accounts WHERE id = $1",
      to_uuid(id));
  if (!rows) return rows.error();
  if (rows->empty()) return std::optional<account>{};
  auto a = account_from((*rows)[0]);
  if (!a) return a.error();
  return std::optional<account>{*a};
}

result<std::optional<transfer>> pg_engine::lookup_transfer(u128 id) {
  auto rows = c_->query(
      std::string("SELECT ") + std::string(transfer_columns) + " FROM keel_ledger_transfers WHERE id = $1",
      to_uuid(id));
  if (!rows) return rows.error();
  if (rows->empty()) return std::optional<transfer>{};
  auto t = transfer_from((*rows)[0]);
  if (!t) return t.error();
  return std::optional<transfer>{t->value};
}

result<pg_engine::resolved> pg_engine::resolve(as_of point) {
  auto size = journal_size();
  if (!size) return size.error();
  const auto now = to_ns(clock_->now());
  if (point.sequence) {
    if (*point.sequence >= *size) return errc::sequence_out_of_range;
    return resolved{*point.sequence + 1, std::nullopt};
  }
  if (point.timestamp) {
    const auto present = std::optional<std::uint64_t>{std::min(*point.timestamp, now)};
    if (*point.timestamp > static_cast<std::uint64_t>(INT64_MAX)) return resolved{*size, present};
    auto rows =
        c_->query("SELECT coalesce(max(sequence) + 1, 0) FROM keel_ledger_journal WHERE timestamp <= $1",
                  i64(*point.timestamp));
    if (!rows) return rows.error();
    auto count = rows->value<std::int64_t>();
    if (!count) return count.error();
    const auto n = u64(*count);
    return resolved{n, n == *size ? present : std::nullopt};
  }
  return resolved{*size, now};
}

result<balance> pg_engine::balance_as_of(u128 account_id, as_of point) {
  auto point_at = resolve(point);
  if (!point_at) return point_at.error();
  if (point_at->present) {
    auto due = project(*c_, *point_at->present, "AND (t.debit_account_id = $2 OR t.credit_account_id = $2)",
                       to_uuid(account_id));
    if (!due) return due.error();
    if (const auto* after = due->due.accounts.find(account_id); after != nullptr) return after->balances;
  }
  auto rows = c_->query(
      "SELECT h.debits_pending::text, h.debits_posted::text, h.credits_pending::text, h.credits_posted::text "
      "FROM keel_ledger_accounts a LEFT JOIN LATERAL (SELECT * FROM keel_ledger_balances b WHERE "
      "b.account_id = a.id "
      "AND b.sequence < $2 ORDER BY b.sequence DESC LIMIT 1) h ON true WHERE a.id = $1 AND a.sequence < $2",
      to_uuid(account_id), i64(point_at->count));
  if (!rows) return rows.error();
  if (rows->empty()) return errc::unknown_account;
  if ((*rows)[0].is_null(0)) return balance{};
  return balance_at((*rows)[0], 0);
}

result<statement_page> pg_engine::statement(u128 account_id, const statement_query& query) {
  if (query.limit == 0 || query.limit > 10'000) return errc::invalid_argument;
  // The recorded lines and the expiries due after them are read from one snapshot, so an
  // expiry the expirer records in between is neither missed nor listed twice. Inside the
  // caller's transaction its own isolation decides.
  std::optional<pg::transaction> snapshot;
  if (!c_->in_transaction()) {
    auto begun = pg::transaction::begin(*c_, {.level = pg::isolation::repeatable_read, .read_only = true});
    if (!begun) return begun.error();
    snapshot.emplace(std::move(*begun));
  }
  auto exists = c_->query("SELECT 1 FROM keel_ledger_accounts WHERE id = $1", to_uuid(account_id));
  if (!exists) return exists.error();
  if (exists->empty()) return errc::unknown_account;
  const auto to = std::min<std::uint64_t>(query.to_sequence, INT64_MAX);
  const auto from = std::min<std::uint64_t>(query.from_sequence, INT64_MAX);
  auto rows = c_->query(
      "SELECT sequence, timestamp, transfer_id, debits_pending::text, debits_posted::text, "
      "credits_pending::text, "
      "credits_posted::text FROM keel_ledger_balances WHERE account_id = $1 AND sequence BETWEEN $2 AND $3 "
      "ORDER BY sequence LIMIT $4",
      to_uuid(account_id), i64(from), i64(to), static_cast<std::int64_t>(query.limit + 1));
  if (!rows) return rows.error();
  statement_page page;
  for (const auto r : *rows) {
    auto fields = r.as<std::int64_t, std::int64_t, pg::uuid>();
    if (!fields) return fields.error();
    auto after = balance_at(r, 3);
    if (!after) return after.error();
    const auto& [sequence, ts, tid] = *fields;
    if (page.lines.size() == query.limit) {
      page.next_sequence = u64(sequence);
      break;
    }
    page.lines.push_back({u64(sequence), u64(ts), from_uuid(tid), *after});
  }
  if (page.next_sequence) return page;
  // Expiries due but not recorded come next, at the sequences they will be recorded at.
  auto due = project(*c_, to_ns(clock_->now()), "");
  if (!due) return due.error();
  detail::append_due_lines(page, due->due, due->size, account_id, query);
  return page;
}

result<trial_balance> pg_engine::trial_balance_as_of(std::uint32_t ledger_id, as_of point) {
  auto point_at = resolve(point);
  if (!point_at) return point_at.error();
  const auto count = std::optional<std::uint64_t>{point_at->count};
  auto rows = c_->query(
      "SELECT count(*), coalesce(sum(h.debits_pending), 0)::text, coalesce(sum(h.debits_posted), 0)::text, "
      "coalesce(sum(h.credits_pending), 0)::text, coalesce(sum(h.credits_posted), 0)::text "
      "FROM keel_ledger_accounts a LEFT JOIN LATERAL (SELECT * FROM keel_ledger_balances b WHERE "
      "b.account_id = a.id "
      "AND b.sequence < $2 ORDER BY b.sequence DESC LIMIT 1) h ON true WHERE a.ledger = $1 AND a.sequence < "
      "$2",
      static_cast<std::int64_t>(ledger_id), i64(*count));
  if (!rows) return rows.error();
  auto accounts = rows->value<std::int64_t>();  // an aggregate: always one row
  if (!accounts) return accounts.error();
  auto totals = balance_at((*rows)[0], 1);
  if (!totals) return totals.error();
  trial_balance out{ledger_id, u64(*accounts), *totals};
  if (point_at->present) {
    auto due = project(*c_, *point_at->present, "AND t.ledger = $2", static_cast<std::int64_t>(ledger_id));
    if (!due) return due.error();
    for (const auto& a : due->due.entries) {
      out.totals.debits_pending -= a.entry.transfer.amount;
      out.totals.credits_pending -= a.entry.transfer.amount;
    }
  }
  return out;
}

result<std::uint64_t> pg_engine::journal_size() {
  auto rows = c_->query("SELECT size FROM keel_ledger_head WHERE id = 1");
  if (!rows) return rows.error();
  auto size = rows->value<std::int64_t>();
  if (!size) return size.error();
  return u64(*size);
}

result<encoded_entry> pg_engine::entry(std::uint64_t sequence) {
  auto rows = c_->query("SELECT entry FROM keel_ledger_journal WHERE sequence = $1", i64(sequence));
  if (!rows) return rows.error();
  if (rows->empty()) return errc::sequence_out_of_range;
  auto data = rows->value<bytes>();
  if (!data) return data.error();
  if (data->size() != entry_size) return errc::corrupt_entry;
  encoded_entry out;
  std::copy(data->begin(), data->end(), out.begin());
  return out;
}

node_reader pg_engine::nodes() {
  return [c = c_](unsigned level, std::uint64_t index) -> result<tree_hash> {
    auto rows = c->query("SELECT hash FROM keel_ledger_nodes WHERE level = $1 AND idx = $2",
                         static_cast<std::int16_t>(level), i64(index));
    if (!rows) return rows.error();
    if (rows->empty()) return errc::sequence_out_of_range;
    auto h = rows->value<bytes>();
    if (!h || h->size() != sizeof(tree_hash)) return errc::corrupt_entry;
    tree_hash out;
    std::copy(h->begin(), h->end(), out.begin());
    return out;
  };
}

result<tree_hash> pg_engine::root(std::uint64_t tree_size) {
  auto size = journal_size();
  if (!size) return size.error();
  if (tree_size > *size) return errc::sequence_out_of_range;
  if (tree_size == 0) return empty_root();
  return subtree_hash(nodes(), 0, tree_size);
}

result<std::vector<tree_hash>> pg_engine::inclusion_proof(std::uint64_t sequence, std::uint64_t tree_size) {
  auto size = journal_size();
  if (!size) return size.error();
  if (tree_size > *size || sequence >= tree_size) return errc::sequence_out_of_range;
  return ledger::inclusion_proof(nodes(), sequence, tree_size);
}

result<std::vector<tree_hash>> pg_engine::consistency_proof(std::uint64_t old_size, std::uint64_t new_size) {
  auto size = journal_size();
  if (!size) return size.error();
  if (old_size == 0 || old_size > new_size || new_size > *size) return errc::sequence_out_of_range;
  return ledger::consistency_proof(nodes(), old_size, new_size);
}

// ---------------------------------------------------------------- the expirer

namespace {
// One elected expirer per schema: ledgers in different schemas of a database each get one.
constexpr auto expirer_lock = pg::advisory_key::named("keel.ledger.expirer");
}  // namespace

struct pg_expirer::impl {
  pg_expirer_options options;
  mutable std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  status now;
  std::thread thread;
  // The lock refers to the connection, so it is always reset before the connection is.
  std::optional<pg::connection> conn;
  std::optional<pg::advisory_lock> lead;

  void drop_connection() {
    lead.reset();
    conn.reset();
  }

  // One look: connect if needed, try to lead, and record what is due if leading. False when
  // Postgres could not be reached, so the next look backs off.
  bool pass() {
    if (!conn || !conn->is_open()) {
      drop_connection();
      auto connected = pg::connection::connect(options.conninfo);
      if (!connected) {
        log::warn("keel.ledger: the expirer cannot connect; retrying with backoff",
                  {{"error", connected.error().message()}});
        return false;
      }
      conn.emplace(std::move(*connected));
    }
    if (!lead) {
      auto won = pg::advisory_lock::try_acquire(*conn, expirer_lock);
      if (!won) return conn->is_open();
      if (!*won) return true;  // another process leads
      lead.emplace(std::move(**won));
    }
    pg_engine engine(*conn, {.clock = options.clock});
    auto recorded = engine.expire_pending();
    if (!recorded) {
      log::warn("keel.ledger: recording expiries failed; retrying",
                {{"error", conn->last_error().to_string()}});
      if (!conn->is_open()) {
        drop_connection();
        return false;
      }
      return true;
    }
    std::lock_guard lock(mutex);
    now.recorded += *recorded;
    return true;
  }

  void run() {
    backoff reconnect({.initial = options.every,
                       .max = std::max<std::chrono::milliseconds>(options.every, std::chrono::seconds(30))});
    std::unique_lock lock(mutex);
    while (!stopping) {
      lock.unlock();
      const bool reached = pass();
      const auto wait = reached ? options.every : reconnect.next();
      if (reached) reconnect.reset();
      lock.lock();
      now.leading = lead.has_value();
      ++now.passes;
      wake.wait_for(lock, wait, [this] { return stopping; });
    }
    lock.unlock();
    drop_connection();  // releases the lead, so another process takes over at once
  }
};

pg_expirer::pg_expirer(pg_expirer_options options) : impl_(std::make_unique<impl>()) {
  impl_->options = std::move(options);
  if (impl_->options.clock == nullptr) impl_->options.clock = &system_clock::instance();
  impl_->thread = std::thread([this] { impl_->run(); });
}

pg_expirer::~pg_expirer() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

pg_expirer::status pg_expirer::current() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->now;
}

}  // namespace keel::ledger
