// Live table changes: a trigger per published table writes each row change into
// keel_sync_changes in the writer's transaction; one reader thread serves every subscriber from
// that table, each from its own position; one listener thread wakes it on NOTIFY.
//
// The order is (transaction_id, id): the writer's xid8 (as bigint), then a sequence number
// drawn at insert. Sequence numbers are drawn before commit, so a reader that followed them
// alone would skip a change whose transaction commits after a later one's. Readers read only
// below the horizon, pg_snapshot_xmin(pg_current_snapshot()): every transaction below it has
// ended, so what is there is final, and every transaction that may still commit has an id at
// or above it, so it sorts after any position already delivered. A position is the pair; "from
// now" is (horizon - 1, the largest id): everything below the horizon counts as seen.
//
// Retention deletes a prefix of that order (below the horizon only, so that nothing can commit
// into the deleted range) and records its end in keel_sync_changes_pruned in the same
// transaction; every read checks the client's position against it in the statement that reads,
// so a position in the deleted range is told to resync, never silently skipped.
#include <keel/core/assert.hpp>
#include <keel/core/log.hpp>
#include <keel/pg/migrations.hpp>
#include <keel/sync/changes.hpp>
#include <keel/sync/error.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <compare>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

namespace keel::sync {
namespace {

constexpr std::string_view channel = "keel_sync_changes";
constexpr auto resync_close = static_cast<net::close_code>(4000);
// Slices the listener waits in, so that it notices stop() soon.
constexpr std::chrono::milliseconds listen_slice{200};

constexpr pg::migration changes_migrations[] = {
    {1, "sync changes", R"sql(
CREATE TABLE keel_sync_changes (
  transaction_id bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
  id             bigint      GENERATED ALWAYS AS IDENTITY,
  table_oid      oid         NOT NULL,
  op             text        NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
  row_data       jsonb,      -- the row after the change; NULL for a delete
  old_data       jsonb,      -- the row before it; NULL for an insert
  captured_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (transaction_id, id)
);
-- Each subscriber reads one table in order.
CREATE INDEX keel_sync_changes_table ON keel_sync_changes (table_oid, transaction_id, id);

-- The end of the pruned prefix: a position before it may have missed changes.
CREATE TABLE keel_sync_changes_pruned (
  singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  transaction_id bigint  NOT NULL,
  id             bigint  NOT NULL
);
INSERT INTO keel_sync_changes_pruned (transaction_id, id) VALUES (0, 0);

-- The search_path is the installer's, so that writers with another one reach the change table.
CREATE FUNCTION keel_sync_capture() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO keel_sync_changes (table_oid, op, row_data) VALUES (TG_RELID, 'insert', to_jsonb(NEW));
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO keel_sync_changes (table_oid, op, row_data, old_data)
    VALUES (TG_RELID, 'update', to_jsonb(NEW), to_jsonb(OLD));
  ELSE
    INSERT INTO keel_sync_changes (table_oid, op, old_data) VALUES (TG_RELID, 'delete', to_jsonb(OLD));
  END IF;
  -- Only "look again": readers read the table, never the payload. Sent at commit, once per
  -- transaction (Postgres folds equal notifications).
  PERFORM pg_notify('keel_sync_changes', '');
  RETURN NULL;
END $$;
)sql"},
};

// One statement: a head row (horizon, pruned transaction, pruned id; `matches` NULL), then up to
// $6 changes of table $3 after ($1, $2) below the horizon, each with whether it matches the
// filter (columns $4 equal to values $5, in text form, on the row after or before the change)
// and, when it does, what is sent (the columns $7 of it; NULL: all). Non-matching rows come
// back without their data, so that the position passes them.
constexpr std::string_view read_sql = R"sql(
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon)
SELECT h.horizon, p.transaction_id, p.id, NULL::boolean, NULL::text, NULL::text, NULL::text
FROM h, keel_sync_changes_pruned p
UNION ALL
(SELECT c.transaction_id, c.id, NULL::bigint, m.matches, c.op,
        CASE WHEN m.matches THEN
          (CASE WHEN $7::text[] IS NULL OR c.row_data IS NULL THEN c.row_data
                ELSE (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
                      FROM jsonb_each(c.row_data) e WHERE e.key = ANY($7::text[])) END)::text END,
        CASE WHEN m.matches THEN
          (CASE WHEN $7::text[] IS NULL OR c.old_data IS NULL THEN c.old_data
                ELSE (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
                      FROM jsonb_each(c.old_data) e WHERE e.key = ANY($7::text[])) END)::text END
 FROM keel_sync_changes c
 CROSS JOIN LATERAL (SELECT
   (c.row_data IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM unnest($4::text[], $5::text[]) f(k, v) WHERE (c.row_data ->> f.k) IS DISTINCT FROM f.v))
   OR (c.old_data IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM unnest($4::text[], $5::text[]) f(k, v) WHERE (c.old_data ->> f.k) IS DISTINCT FROM f.v))
   AS matches) m
 WHERE c.table_oid = ($3::bigint)::oid AND (c.transaction_id, c.id) > ($1, $2)
   AND c.transaction_id < (SELECT horizon FROM h)
 ORDER BY c.transaction_id, c.id
 LIMIT $6))sql";

constexpr std::string_view horizon_sql = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

// The end of the prefix retention removes, below the horizon: the newest change past the $1
// newest ones, or the last one before the first change younger than $2 ms (NULL: no age
// limit), whichever is later.
constexpr std::string_view prune_cut_sql = R"sql(
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon),
below AS (SELECT transaction_id, id, captured_at FROM keel_sync_changes
          WHERE transaction_id < (SELECT horizon FROM h)),
by_count AS (SELECT transaction_id, id FROM below ORDER BY transaction_id DESC, id DESC OFFSET $1 LIMIT 1),
first_young AS (SELECT transaction_id, id FROM below
                WHERE $2::bigint IS NULL OR captured_at >= now() - $2::bigint * interval '1 millisecond'
                ORDER BY transaction_id, id LIMIT 1),
by_age AS (SELECT b.transaction_id, b.id FROM below b
           WHERE NOT EXISTS (SELECT 1 FROM first_young)
              OR (b.transaction_id, b.id) < (SELECT y.transaction_id, y.id FROM first_young y)
           ORDER BY b.transaction_id DESC, b.id DESC LIMIT 1)
SELECT transaction_id, id FROM (SELECT * FROM by_count UNION ALL SELECT * FROM by_age) cut
ORDER BY transaction_id DESC, id DESC LIMIT 1)sql";

struct position {
  std::int64_t transaction = 0;
  std::int64_t id = 0;
  auto operator<=>(const position&) const = default;  // NOLINT(modernize-use-nullptr)
};

std::string token(position p) {
  return std::to_string(p.transaction) + "/" + std::to_string(p.id);
}

std::optional<position> parse_token(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  position p;
  const auto* first = text.data();
  const auto* middle = first + slash;
  const auto* last = first + text.size();
  const auto a = std::from_chars(first, middle, p.transaction);
  const auto b = std::from_chars(middle + 1, last, p.id);
  if (a.ec != std::errc{} || a.ptr != middle || b.ec != std::errc{} || b.ptr != last) return std::nullopt;
  if (p.transaction < 0 || p.id < 0) return std::nullopt;
  return p;
}

// A JSON string literal for a message the server writes.
std::string json_string(std::string_view text) {
  return boost::json::serialize(boost::json::value(text));
}

struct published {
  publication spec;
  std::int64_t table_oid = 0;
  std::optional<std::vector<std::string>> columns;  // nullopt: all
};

struct subscription {
  net::websocket_connection connection;
  const published* pub = nullptr;
  std::vector<std::string> keys, values;
  std::optional<position> after;     // as asked; nullopt: from now
  std::atomic<bool> started{false};  // acknowledged
  position at;                       // read up to here
  position told;                     // the last position the client was given
  std::atomic<bool> closed{false};

  subscription(net::websocket_connection c, const published* p) : connection(std::move(c)), pub(p) {}
};

}  // namespace

struct changes::state {
  changes_options options;
  std::vector<published> publications;

  std::mutex subscriptions_lock;
  std::map<std::uint64_t, std::shared_ptr<subscription>> subscriptions;  // by connection id
  std::set<std::uint64_t> answered;  // connections that sent their subscribe message

  std::atomic<std::uint64_t> sent{0}, resyncs{0}, refused{0}, reads{0}, notifications{0}, pruned{0};

  std::mutex work_lock;
  std::condition_variable work_ready;
  bool woken = false;
  bool stopping = false;
  std::thread reader, listener;

  explicit state(changes_options o) : options(std::move(o)) {}

  void wake() {
    {
      const std::lock_guard guard(work_lock);
      woken = true;
    }
    work_ready.notify_all();
  }

  bool stopped() {
    const std::lock_guard guard(work_lock);
    return stopping;
  }

  // ---- the protocol --------------------------------------------------------------------------
  void refuse(const net::websocket_connection& conn, net::close_code code, std::string_view reason) {
    refused.fetch_add(1, std::memory_order_relaxed);
    (void)conn.send(R"({"error":)" + json_string(reason) + "}");
    conn.close(code, reason);
  }

  void resync(subscription& s, std::string_view reason) {
    resyncs.fetch_add(1, std::memory_order_relaxed);
    s.closed = true;
    (void)s.connection.send(R"({"resync":)" + json_string(reason) + "}");
    s.connection.close(resync_close, reason);
  }

  [[nodiscard]] const published* find(std::string_view name) const {
    for (const auto& p : publications) {
      if (p.spec.name == name) return &p;
    }
    return nullptr;
  }

  void on_message(const net::websocket_connection& conn, std::string_view text, bool binary) {
    {
      const std::lock_guard guard(subscriptions_lock);
      if (!answered.insert(conn.id()).second) {
        return refuse(conn, net::close_code::policy_violation,
                      "one subscription per connection: open another connection for another");
      }
    }
    if (binary) return refuse(conn, net::close_code::protocol_error, "messages are JSON text, not binary");
    boost::system::error_code ec;
    const auto parsed = boost::json::parse(text, ec);
    if (ec || !parsed.is_object()) {
      return refuse(conn, net::close_code::protocol_error,
                    R"(not a JSON object: send {"subscribe": "<publication>", "filter": {}, "after": null})");
    }
    const auto& request = parsed.as_object();
    const auto* name = request.if_contains("subscribe");
    if (name == nullptr || !name->is_string())
      return refuse(conn, net::close_code::policy_violation, R"("subscribe" must name a publication)");
    const auto* pub = find(name->as_string());
    if (pub == nullptr) return refuse(conn, net::close_code::policy_violation, "no such publication");

    changes_filter filter;
    if (const auto* f = request.if_contains("filter"); f != nullptr && !f->is_null()) {
      if (!f->is_object()) {
        return refuse(conn, net::close_code::policy_violation,
                      R"("filter" must be an object of column: value)");
      }
      for (const auto& [key, value] : f->as_object()) {
        const auto& allowed = pub->spec.filter_columns;
        if (std::find(allowed.begin(), allowed.end(), std::string_view(key)) == allowed.end()) {
          return refuse(conn, net::close_code::policy_violation,
                        "this publication cannot be filtered on column " + json_string(key).substr(0, 60));
        }
        if (value.is_string()) {
          filter.emplace(key, value.as_string());
        } else if (value.is_int64() || value.is_uint64() || value.is_bool()) {
          filter.emplace(key, boost::json::serialize(value));
        } else {
          return refuse(conn, net::close_code::policy_violation,
                        "filter values are strings, integers or booleans");
        }
      }
    }
    std::optional<position> after;
    if (const auto* a = request.if_contains("after"); a != nullptr && !a->is_null()) {
      if (!a->is_string()) {
        return refuse(conn, net::close_code::policy_violation,
                      R"("after" must be a position string or null)");
      }
      after = parse_token(a->as_string());
      if (!after) {
        return refuse(conn, net::close_code::policy_violation,
                      "not a position: send one this server gave you, or null for from now");
      }
    }
    if (options.authorize && !options.authorize(pub->spec.name, filter, conn.upgrade_request())) {
      return refuse(conn, net::close_code::policy_violation,
                    "not authorized for this publication and filter");
    }

    auto s = std::make_shared<subscription>(conn, pub);
    for (auto& [key, value] : filter) {
      s->keys.push_back(key);
      s->values.push_back(std::move(value));
    }
    s->after = after;
    {
      const std::lock_guard guard(subscriptions_lock);
      // Closed while this ran: on_close ran first (it comes after every on_message), so there is
      // nothing to register.
      if (answered.contains(conn.id())) subscriptions.emplace(conn.id(), std::move(s));
    }
    wake();
  }

  void on_close(const net::websocket_connection& conn) {
    const std::lock_guard guard(subscriptions_lock);
    answered.erase(conn.id());
    const auto found = subscriptions.find(conn.id());
    if (found == subscriptions.end()) return;
    found->second->closed = true;
    subscriptions.erase(found);
  }

  // ---- reading -------------------------------------------------------------------------------
  bool send(subscription& s, std::string message) {
    if (!s.connection.send(std::move(message))) {
      s.closed = true;  // closed, or its queue full: keel::net closes it
      return false;
    }
    return true;
  }

  // Serves one subscriber a batch. @returns true when more changes may be waiting for it, or
  // the connection failed (in `failed`).
  bool serve(pg::connection& c, subscription& s, error_code& failed) {
    if (s.closed) return false;
    if (!s.started && !s.after) {
      auto h = c.query(horizon_sql);
      if (!h) {
        failed = h.error();
        return false;
      }
      const auto horizon = h->value<std::int64_t>().value();
      s.after = position{horizon - 1, std::numeric_limits<std::int64_t>::max()};
    }
    if (!s.started) s.at = s.told = *s.after;

    const auto queued = s.connection.queued_messages();
    const auto room = queued >= options.max_queued ? 0 : options.max_queued - queued;
    const auto limit = static_cast<std::int64_t>(std::max<std::size_t>(1, std::min(room, options.batch)));
    auto read = c.query(read_sql, s.at.transaction, s.at.id, s.pub->table_oid, s.keys, s.values, limit,
                        s.pub->columns);
    reads.fetch_add(1, std::memory_order_relaxed);
    if (!read) {
      failed = read.error();
      return false;
    }
    const auto& rows = *read;
    KEEL_ASSERT(rows.size() >= 1);
    const auto [horizon, pruned_tx, pruned_id] =
        rows[0].as<std::int64_t, std::int64_t, std::int64_t>().value();
    if (s.at < position{pruned_tx, pruned_id}) {
      resync(
          s,
          "the changes after your position were pruned: reload the table, then subscribe with after: null");
      return false;
    }
    // Every position this server gives is below the horizon it read; one at or past it comes
    // from elsewhere (another database, one restored from a backup) and would skip changes.
    if (!s.started && s.at.transaction >= horizon) {
      resync(s, "your position is ahead of this database: reload the table, then subscribe with after: null");
      return false;
    }
    if (!s.started) {
      s.started = true;
      if (!send(s, R"({"subscribed":)" + json_string(s.pub->spec.name) + R"(,"position":")" + token(s.at) +
                       "\"}"))
        return false;
    }
    const auto count = rows.size() - 1;
    if (room == 0 && count > 0) {
      resync(s, "too far behind: your queue is full and changes are waiting; reload, then subscribe again");
      return false;
    }
    bool passed_unmatched = false;
    for (std::size_t i = 1; i < rows.size(); ++i) {
      const auto& r = rows[i];
      const position p{r.get<std::int64_t>(0).value(), r.get<std::int64_t>(1).value()};
      KEEL_ASSERT(s.at < p);
      s.at = p;
      if (!r.get<bool>(3).value()) {
        passed_unmatched = true;
        continue;
      }
      passed_unmatched = false;
      const auto op = r.get<std::string>(4).value();
      const auto row = r.get<std::optional<std::string>>(5).value();
      const auto old = r.get<std::optional<std::string>>(6).value();
      std::string message = R"({"position":")" + token(p) + R"(","op":")" + op + "\"";
      if (row) message += R"(,"row":)" + *row;
      if (old) message += R"(,"old":)" + *old;
      message += "}";
      if (!send(s, std::move(message))) return false;
      s.told = p;
      sent.fetch_add(1, std::memory_order_relaxed);
    }
    const bool full = static_cast<std::int64_t>(count) >= limit;
    // Caught up: everything below the horizon is seen, so filtered readers do not scan the
    // same non-matching changes again.
    if (!full && s.at < position{horizon - 1, std::numeric_limits<std::int64_t>::max()})
      s.at = {horizon - 1, std::numeric_limits<std::int64_t>::max()};
    // Passed changes the client does not see: give it the position, so that it does not come
    // back from before them (and find them pruned).
    if (passed_unmatched && s.told < s.at) {
      if (!send(s, R"({"progress":")" + token(s.at) + "\"}")) return false;
      s.told = s.at;
    }
    return full;
  }

  // @returns true when some subscriber has more waiting.
  bool serve_all() {
    std::vector<std::shared_ptr<subscription>> current;
    {
      const std::lock_guard guard(subscriptions_lock);
      current.reserve(subscriptions.size());
      for (const auto& [id, s] : subscriptions) current.push_back(s);
    }
    if (current.empty()) return false;
    auto c = options.pool->acquire();
    if (!c) {
      log::warn("keel::sync changes: no connection to read with; retrying", {{"error", c.error().message()}});
      return false;
    }
    bool more = false;
    for (const auto& s : current) {
      error_code failed;
      more = serve(**c, *s, failed) || more;
      if (failed) {
        log::warn("keel::sync changes: a read failed; retrying", {{"error", failed.message()}});
        if (!(*c)->is_open()) return true;  // a new connection next round
      }
    }
    return more;
  }

  void reader_loop() {
    auto next_prune = std::chrono::steady_clock::now() + options.retention.interval;
    std::unique_lock guard(work_lock);
    while (true) {
      const auto until = std::min(std::chrono::steady_clock::now() + options.poll_interval, next_prune);
      work_ready.wait_until(guard, until, [&] { return stopping || woken; });
      if (stopping) return;
      woken = false;
      guard.unlock();
      const bool more = serve_all();
      if (std::chrono::steady_clock::now() >= next_prune) {
        if (auto done = prune(); !done)
          log::warn("keel::sync changes: pruning failed", {{"error", done.error().message()}});
        next_prune = std::chrono::steady_clock::now() + options.retention.interval;
      }
      guard.lock();
      if (more) woken = true;
    }
  }

  // Holds a connection LISTENing; after a loss, reconnects and wakes the reader, which catches
  // up from the table (what was notified meanwhile is not lost, only late).
  void listener_loop() {
    std::optional<pg::pooled_connection> c;
    auto delay = std::chrono::milliseconds(50);
    while (!stopped()) {
      if (!c) {
        auto acquired = options.pool->acquire();
        if (acquired) {
          if (auto listening = (*acquired)->execute(std::string("LISTEN ") + std::string(channel))) {
            c.emplace(std::move(*acquired));
            delay = std::chrono::milliseconds(50);
            wake();
            continue;
          }
        }
        std::unique_lock guard(work_lock);
        work_ready.wait_for(guard, delay, [&] { return stopping; });
        delay = std::min(delay * 2, std::chrono::milliseconds(5000));
        continue;
      }
      auto arrived = (*c)->wait_for_notifications(std::min(listen_slice, options.poll_interval));
      if (!arrived) {
        c.reset();  // broken: the pool replaces it
        continue;
      }
      if (*arrived > 0) {
        notifications.fetch_add(1, std::memory_order_relaxed);
        wake();
      }
    }
    if (c) (void)(*c)->execute("UNLISTEN *");
  }

  result<std::uint64_t> prune() {
    auto acquired = options.pool->acquire();
    if (!acquired) return acquired.error();
    auto& c = **acquired;
    if (auto begun = c.execute("BEGIN"); !begun) return begun.error();
    auto run = [&]() -> result<std::uint64_t> {
      // One pruner at a time.
      auto locked = c.query("SELECT transaction_id, id FROM keel_sync_changes_pruned FOR UPDATE");
      if (!locked) return locked.error();
      const auto max_count = static_cast<std::int64_t>(
          std::min<std::size_t>(options.retention.max_count, std::numeric_limits<std::int64_t>::max()));
      const auto max_age_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(options.retention.max_age).count();
      auto cut = c.query(prune_cut_sql, max_count, static_cast<std::int64_t>(max_age_ms));
      if (!cut) return cut.error();
      if (cut->size() == 0) return std::uint64_t{0};
      const auto [tx, id] = (*cut)[0].as<std::int64_t, std::int64_t>().value();
      auto removed = c.query("DELETE FROM keel_sync_changes WHERE (transaction_id, id) <= ($1, $2)", tx, id);
      if (!removed) return removed.error();
      auto marked = c.query(
          "UPDATE keel_sync_changes_pruned SET transaction_id = $1, id = $2 WHERE (transaction_id, id) < "
          "($1, $2)",
          tx, id);
      if (!marked) return marked.error();
      return removed->affected();
    };
    auto done = run();
    if (!done) {
      (void)c.execute("ROLLBACK");
      return done;
    }
    if (auto committed = c.execute("COMMIT"); !committed) return committed.error();
    pruned.fetch_add(*done, std::memory_order_relaxed);
    return done;
  }
};

changes::changes(std::shared_ptr<state> s) noexcept : state_(std::move(s)) {}

changes::~changes() {
  {
    const std::lock_guard guard(state_->work_lock);
    state_->stopping = true;
  }
  state_->work_ready.notify_all();
  if (state_->reader.joinable()) state_->reader.join();
  if (state_->listener.joinable()) state_->listener.join();
}

result<std::shared_ptr<changes>> changes::mount(net::server& server, changes_options options) {
  if (options.pool == nullptr)
    throw std::invalid_argument("keel::sync::changes: changes_options::pool is required");
  std::set<std::string_view> names;
  for (const auto& p : options.publications) {
    if (p.name.empty() || p.table.empty() || !names.insert(p.name).second) return errc::invalid_publication;
  }
  auto s = std::make_shared<state>(std::move(options));
  {
    auto c = s->options.pool->acquire();
    if (!c) return c.error();
    if (s->options.install) {
      if (auto installed = install_changes(**c, s->options.publications); !installed)
        return installed.error();
    }
    for (const auto& p : s->options.publications) {
      auto table = (*c)->quote_identifier(p.table);
      if (!table) return table.error();
      std::string qualified = *table;
      if (!p.schema.empty()) {
        auto schema = (*c)->quote_identifier(p.schema);
        if (!schema) return schema.error();
        qualified = *schema + "." + *table;
      }
      // The name goes in as a parameter: to_regclass parses it, nothing is spliced into SQL.
      auto found = (*c)->query("SELECT to_regclass($1)::oid::bigint", qualified);
      if (!found) return found.error();
      const auto oid = (*found)[0].get<std::optional<std::int64_t>>(0).value();
      if (!oid) return errc::unknown_table;
      published entry{p, *oid, std::nullopt};
      if (!p.columns.empty()) entry.columns = p.columns;
      s->publications.push_back(std::move(entry));
    }
  }
  s->reader = std::thread([raw = s.get()] { raw->reader_loop(); });
  s->listener = std::thread([raw = s.get()] { raw->listener_loop(); });
  auto out = std::make_shared<changes>(s);
  // The handlers hold the state, not the changes object: its destructor stops the threads.
  server.websocket(s->options.path, {.on_message = [s](const net::websocket_connection& c, std::string_view m,
                                                       bool binary) { s->on_message(c, m, binary); },
                                     .on_close = [s](const net::websocket_connection& c,
                                                     const net::close_reason&) { s->on_close(c); }});
  return out;
}

changes_stats changes::stats() const {
  changes_stats out;
  {
    const std::lock_guard guard(state_->subscriptions_lock);
    for (const auto& [id, s] : state_->subscriptions) {
      if (s->started && !s->closed) ++out.subscriptions;
    }
  }
  out.changes_sent = state_->sent.load();
  out.resyncs = state_->resyncs.load();
  out.refused = state_->refused.load();
  out.reads = state_->reads.load();
  out.notifications = state_->notifications.load();
  out.pruned = state_->pruned.load();
  return out;
}

result<std::uint64_t> changes::prune_now() {
  return state_->prune();
}

result<void> install_changes(pg::connection& c, std::span<const publication> publications) {
  if (auto migrated = pg::migrate(c, "sync_changes", changes_migrations); !migrated) return migrated.error();
  for (const auto& p : publications) {
    auto table = c.quote_identifier(p.table);
    if (!table) return table.error();
    std::string qualified = *table;
    if (!p.schema.empty()) {
      auto schema = c.quote_identifier(p.schema);
      if (!schema) return schema.error();
      qualified = *schema + "." + *table;
    }
    // The identifiers are the application's, quoted: nothing a client sent reaches this SQL.
    auto done = c.execute("CREATE OR REPLACE TRIGGER keel_sync_capture AFTER INSERT OR UPDATE OR DELETE ON " +
                          qualified + " FOR EACH ROW EXECUTE FUNCTION keel_sync_capture()");
    if (!done) return done.error();
  }
  return {};
}

}  // namespace keel::sync
