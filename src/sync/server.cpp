// Yjs rooms: the y-websocket protocol on keel::net's WebSockets, documents kept as merged Yjs
// updates (keel::crdt::yjs), persisted as an append-only tail per room that a background thread
// compacts into one row. The protocol's messages are in protocol.hpp.
//
// Several processes serving one room pass what their clients send to each other through
// Postgres: an update's INSERT into the tail and its NOTIFY are one statement, so the
// notification is delivered when the row commits and a process that hears of an update can also
// find it in the tail. NOTIFY is chosen over Redis pub/sub because the rooms already need
// Postgres and its delivery follows commit: nothing a peer hears of can be lost from storage.
// A payload is "<origin>:<base64 frame>" (origin: 16 hex digits naming the sending process) or,
// for a frame too large for NOTIFY's 8,000 bytes, "<origin>#<id>" of a row in keel_sync_relay.
// A frame: kind ('u' update, 'a' awareness), the room (var-bytes), then the message body. A
// listener that lost its connection missed what was sent meanwhile: it reloads its open rooms
// from Postgres. Each process's listener shows its origin in pg_stat_activity.application_name;
// a process that vanished (killed) is noticed there and its clients' awareness removed.
#include <keel/core/byte_io.hpp>
#include <keel/core/bytes.hpp>
#include <keel/core/log.hpp>
#include <keel/core/varint.hpp>
#include <keel/crdt/yjs.hpp>
#include <keel/pg/async.hpp>
#include <keel/sync/error.hpp>
#include <keel/sync/server.hpp>

#include "protocol.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace keel::sync {
namespace {

namespace yjs = crdt::yjs;
using namespace protocol;  // NOLINT(google-build-using-namespace): the protocol's names, in its own file

constexpr std::size_t max_room_name_bytes = 256;
constexpr auto try_again_later = static_cast<net::close_code>(1013);

// Across processes.
constexpr std::uint8_t peer_update = 'u';
constexpr std::uint8_t peer_awareness = 'a';
constexpr std::size_t origin_digits = 16;
constexpr std::size_t max_outbox = 1'024;        // updates waiting for the appender per room
constexpr std::size_t max_inline_frame = 5'900;  // its base64 stays under NOTIFY's 8,000 bytes
constexpr auto peer_check_interval = std::chrono::seconds(1);
constexpr int relay_prune_every_checks = 30;
constexpr auto listen_timeout = std::chrono::seconds(15);
constexpr std::string_view application_name_prefix = "keel-sync-";

// One awareness state as a client last sent it.
struct awareness_state {
  std::uint64_t clock = 0;
  std::string state;  // JSON
  std::string peer;   // the process whose client sent it; empty: one of ours
};

using awareness_states = std::vector<std::pair<std::uint64_t, awareness_state>>;

// An awareness update: count, then (client id, clock, state JSON) each.
std::optional<awareness_states> parse_awareness(bytes_view update, std::string_view peer) {
  byte_reader in(update);
  const auto count = in.varint();
  if (!count) return std::nullopt;
  awareness_states states;
  for (std::uint64_t k = 0; k < *count; ++k) {
    const auto id = in.varint();
    const auto clock = in.varint();
    const auto json = in.take_varint_prefixed(any_length);
    if (!id || !clock || !json) return std::nullopt;
    states.push_back({*id, {*clock, std::string(as_chars(*json)), std::string(peer)}});
  }
  return states;
}

// What a process passes to the others: kind, room, body.
bytes peer_frame(std::uint8_t kind, std::string_view room_name, bytes_view body) {
  bytes frame{kind};
  append_varint(frame, room_name.size());
  frame.insert(frame.end(), room_name.begin(), room_name.end());
  frame.insert(frame.end(), body.begin(), body.end());
  return frame;
}

// An awareness update (what the other processes are told) and the message carrying it.
bytes awareness_update(const std::map<std::uint64_t, awareness_state>& states) {
  bytes update;
  append_varint(update, states.size());
  for (const auto& [client_id, s] : states) {
    append_varint(update, client_id);
    append_varint(update, s.clock);
    append_varint(update, s.state.size());
    update.insert(update.end(), s.state.begin(), s.state.end());
  }
  return update;
}

std::string awareness_message(bytes_view update) {
  std::string out;
  put_varuint(out, message_awareness);
  put_var_bytes(out, update);
  return out;
}

std::string awareness_message(const std::map<std::uint64_t, awareness_state>& states) {
  return awareness_message(awareness_update(states));
}

struct client {
  net::websocket_connection connection;
  access level = access::read_write;
  std::set<std::uint64_t> awareness_clients;  // the Yjs client ids this socket announced
  bool told_read_only = false;
};

struct room {
  std::mutex lock;
  std::string name;
  bool retired = false;  // left the open map: a joiner makes a new one
  bytes merged;          // the document, as one update
  std::vector<bytes> pending;
  std::size_t pending_bytes = 0;
  std::map<std::uint64_t, client> clients;  // by connection id
  std::map<std::uint64_t, awareness_state> awareness;
  std::map<std::uint64_t, std::uint64_t> awareness_clocks;  // the last clock per Yjs client, gone ones too
  std::size_t tail = 0;  // updates appended since the last compaction was asked for
  // Updates waiting for the appender (with a pool): appended together in one statement, then
  // passed on. `appending` while the room is queued for it or being appended.
  struct queued_update {
    bytes update;
    net::websocket_connection from;
  };
  std::vector<queued_update> outbox;
  bool appending = false;
  std::condition_variable outbox_taken;  // a writer waits on it while the outbox is full

  // Takes an awareness state (a removal when it is "null") unless a newer one is known: states
  // relayed by several processes can arrive out of order. @returns whether it was taken.
  // The rule is y-protocols', so that the server's view is the one its clients build from the
  // same messages: a higher clock wins, and at an equal clock only a removal of a present state.
  bool take_awareness(std::uint64_t id, awareness_state s) {
    const auto known = awareness_clocks.find(id);
    const bool removal = s.state == "null";
    if (known != awareness_clocks.end() && s.clock <= known->second &&
        !(s.clock == known->second && removal && awareness.contains(id)))
      return false;
    awareness_clocks[id] = s.clock;
    if (removal) {
      awareness.erase(id);
    } else {
      awareness[id] = std::move(s);
    }
    return true;
  }

  // Removes a state for everyone: a null one clock on. @returns the removal to send.
  awareness_state remove_awareness(std::uint64_t id) {
    awareness_state removal{awareness_clocks[id] + 1, "null", {}};
    (void)take_awareness(id, removal);
    return removal;
  }

  // Keeps an update apart, to be merged into the document with the others every `merge_after`.
  void take(bytes update, std::size_t merge_after, std::size_t max_bytes) {
    pending_bytes += update.size();
    pending.push_back(std::move(update));
    if (pending.size() >= merge_after) (void)document(max_bytes);
  }

  // The document, pending updates merged in first.
  result<const bytes*> document(std::size_t max_bytes) {
    if (!pending.empty()) {
      std::vector<bytes_view> parts;
      parts.reserve(pending.size() + 1);
      if (!merged.empty()) parts.emplace_back(merged);
      for (const auto& p : pending) parts.emplace_back(p);
      auto joined = yjs::merge_updates(parts);
      if (!joined) return joined.error();
      if (joined->size() > max_bytes) return crdt::errc::malformed_update;
      merged = std::move(*joined);
      pending.clear();
      pending_bytes = 0;
    }
    if (merged.empty()) merged = bytes{0, 0};  // the empty update
    return &merged;
  }
};

}  // namespace

struct rooms::state {
  rooms_options options;
  std::mutex lock;  // the open rooms
  std::map<std::string, std::shared_ptr<room>, std::less<>> open;

  std::atomic<std::uint64_t> updates_received{0}, updates_dropped{0}, refused{0}, compactions{0}, loaded{0};
  std::atomic<std::uint64_t> published{0}, from_peers{0}, catch_ups{0}, peers_gone{0}, appends{0};
  std::atomic<std::size_t> clients{0};

  // Across processes: this process's name among them, and the listener's thread.
  std::string origin;
  boost::asio::io_context io;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> io_work;
  std::thread io_thread;
  std::unique_ptr<pg::listener> listener;
  std::optional<boost::asio::steady_timer> peer_timer;
  int peer_checks = 0;
  std::promise<void> listening;
  bool listening_told = false;

  // Background compaction.
  std::mutex work_lock;
  std::condition_variable work_ready;
  std::set<std::string> to_compact;
  bool stopping = false;
  std::thread worker;
  // The appender: rooms with updates to append, one statement per room's batch.
  std::condition_variable append_ready;
  std::deque<std::shared_ptr<room>> to_append;
  std::thread appender;

  explicit state(rooms_options o) : options(std::move(o)) {
    std::random_device entropy;
    const auto id = (std::uint64_t{entropy()} << 32U) | entropy();
    bytes raw(8);
    for (std::size_t k = 0; k < raw.size(); ++k) raw[k] = static_cast<std::uint8_t>(id >> (8 * k));
    origin = to_hex(raw);
  }

  [[nodiscard]] bool across_processes() const noexcept {
    return options.pool != nullptr && options.across_processes;
  }

  // ---- Postgres ------------------------------------------------------------------------------
  result<bytes> load(std::string_view name) {
    auto c = options.pool->acquire();
    if (!c) return c.error();
    std::vector<bytes> parts;
    auto doc = (*c)->query("SELECT document FROM keel_sync_documents WHERE room = $1", name);
    if (!doc) return doc.error();
    for (const auto& row : *doc) parts.push_back(row.get<bytes>(0).value());
    auto tail = (*c)->query("SELECT document FROM keel_sync_updates WHERE room = $1 ORDER BY seq", name);
    if (!tail) return tail.error();
    for (const auto& row : *tail) parts.push_back(row.get<bytes>(0).value());
    loaded.fetch_add(1, std::memory_order_relaxed);
    if (parts.empty()) return bytes{};
    return yjs::merge_updates(std::span<const bytes>(parts));
  }

  // Appends an update to the room's tail; across processes, the same statement tells the others.
  result<void> append(std::string_view name, bytes_view update) {
    auto c = options.pool->acquire();
    if (!c) return c.error();
    appends.fetch_add(1, std::memory_order_relaxed);
    if (!across_processes()) {
      auto done = (*c)->query("INSERT INTO keel_sync_updates (room, document) VALUES ($1, $2)", name, update);
      if (!done) return done.error();
      return {};
    }
    const auto frame = peer_frame(peer_update, name, update);
    auto done = frame.size() <= max_inline_frame
                    ? (*c)->query(
                          "WITH kept AS (INSERT INTO keel_sync_updates (room, document) VALUES ($1, $2) "
                          "RETURNING seq) "
                          "SELECT pg_notify($3, $4) FROM kept",
                          name, update, options.channel, origin + ":" + to_base64(frame))
                    : (*c)->query(
                          "WITH kept AS (INSERT INTO keel_sync_updates (room, document) VALUES ($1, $2) "
                          "RETURNING seq), "
                          "relayed AS (INSERT INTO keel_sync_relay (message) VALUES ($4) RETURNING id) "
                          "SELECT pg_notify($3, $5 || relayed.id) FROM kept, relayed",
                          name, update, options.channel, bytes_view(frame), origin + "#");
    if (!done) return done.error();
    published.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  // Appends updates to a room's tail in one statement (and, across processes, their NOTIFYs in
  // the same one); an update too large for a NOTIFY payload goes alone through append().
  result<void> append_batch(std::string_view name, const std::vector<room::queued_update>& batch) {
    if (batch.size() == 1) return append(name, batch.front().update);
    std::vector<bytes> frames;
    if (across_processes()) {
      for (const auto& q : batch) {
        frames.push_back(peer_frame(peer_update, name, q.update));
        if (frames.back().size() > max_inline_frame) {
          for (const auto& each : batch) {
            if (auto kept = append(name, each.update); !kept) return kept;
          }
          return {};
        }
      }
    }
    auto c = options.pool->acquire();
    if (!c) return c.error();
    pg::params values;
    values.add(std::string(name));
    if (across_processes()) values.add(options.channel);
    std::string sql = "INSERT INTO keel_sync_updates (room, document) VALUES ";
    int at = across_processes() ? 3 : 2;
    for (std::size_t k = 0; k < batch.size(); ++k) {
      values.add(bytes_view(batch[k].update));
      sql.append(k == 0 ? "" : ", ").append("($1, $").append(std::to_string(at++)).append(")");
    }
    if (across_processes()) {
      sql = "WITH kept AS (" + sql + " RETURNING seq) SELECT pg_notify($2, v.n) FROM (VALUES ";
      for (std::size_t k = 0; k < frames.size(); ++k) {
        values.add(origin + ":" + to_base64(frames[k]));
        sql.append(k == 0 ? "" : ", ").append("($").append(std::to_string(at++)).append("::text)");
      }
      sql.append(") AS v(n), (SELECT count(*) FROM kept) AS k");
    }
    appends.fetch_add(1, std::memory_order_relaxed);
    auto done = (*c)->query_params(sql, values);
    if (!done) return done.error();
    if (across_processes()) published.fetch_add(batch.size(), std::memory_order_relaxed);
    return {};
  }

  void schedule_append(std::shared_ptr<room> r) {
    {
      const std::lock_guard guard(work_lock);
      to_append.push_back(std::move(r));
    }
    append_ready.notify_one();
  }

  void append_loop() {
    std::unique_lock guard(work_lock);
    while (true) {
      append_ready.wait(guard, [&] { return stopping || !to_append.empty(); });
      if (to_append.empty() && stopping) return;
      auto r = std::move(to_append.front());
      to_append.pop_front();
      guard.unlock();
      flush(r);
      guard.lock();
    }
  }

  // Appends what the room's outbox holds, then passes it on; again while more came meanwhile.
  void flush(const std::shared_ptr<room>& r) {
    while (true) {
      std::vector<room::queued_update> batch;
      {
        const std::lock_guard guard(r->lock);
        batch.swap(r->outbox);
        r->outbox_taken.notify_all();
        if (batch.empty()) {
          r->appending = false;
          return;
        }
      }
      const auto kept = append_batch(r->name, batch);
      const std::lock_guard guard(r->lock);
      for (auto& q : batch) {
        if (!kept) {
          refuse(q.from, net::close_code::internal_error, "the update could not be stored");
          continue;
        }
        count_in_tail(*r);
        updates_received.fetch_add(1, std::memory_order_relaxed);
        send_to_others(*r, q.from.id(), sync_message(sync_update, q.update));
        r->take(std::move(q.update), options.merge_after_updates, options.max_document_bytes);
      }
    }
  }

  // Tells the other processes of an awareness change. Presence is not stored: a failure loses
  // only this change, which the client renews within its 30 s outdated timeout anyway.
  void publish_awareness(std::string_view name, bytes_view update) {
    if (!across_processes()) return;
    auto c = options.pool->acquire();
    if (!c) return;
    const auto frame = peer_frame(peer_awareness, name, update);
    auto done =
        frame.size() <= max_inline_frame
            ? (*c)->query("SELECT pg_notify($1, $2)", options.channel, origin + ":" + to_base64(frame))
            : (*c)->query(
                  "WITH relayed AS (INSERT INTO keel_sync_relay (message) VALUES ($2) RETURNING id) "
                  "SELECT pg_notify($1, $3 || relayed.id) FROM relayed",
                  options.channel, bytes_view(frame), origin + "#");
    if (done) published.fetch_add(1, std::memory_order_relaxed);
  }

  // Merges a room's tail into its document row; deletes exactly the updates it merged, so an
  // update committed meanwhile (by another process too) stays in the tail.
  result<void> compact(const std::string& name) {
    auto c = options.pool->acquire();
    if (!c) return c.error();
    auto& conn = **c;
    if (auto begun = conn.execute("BEGIN"); !begun) return begun.error();
    auto run = [&]() -> result<void> {
      auto placeholder = conn.query(
          "INSERT INTO keel_sync_documents (room, document) VALUES ($1, '\\x0000') ON CONFLICT (room) DO "
          "NOTHING",
          name);
      if (!placeholder) return placeholder.error();
      auto doc = conn.query("SELECT document FROM keel_sync_documents WHERE room = $1 FOR UPDATE", name);
      if (!doc) return doc.error();
      std::vector<bytes> parts{(*doc)[0].get<bytes>(0).value()};
      auto tail =
          conn.query("SELECT seq, document FROM keel_sync_updates WHERE room = $1 ORDER BY seq", name);
      if (!tail) return tail.error();
      std::vector<std::int64_t> merged_seqs;
      for (const auto& row : *tail) {
        auto [seq, update] = row.as<std::int64_t, bytes>().value();
        merged_seqs.push_back(seq);
        parts.push_back(std::move(update));
      }
      if (merged_seqs.empty()) return {};
      auto joined = yjs::merge_updates(std::span<const bytes>(parts));
      if (!joined) return joined.error();
      auto written = conn.query("UPDATE keel_sync_documents SET document = $2 WHERE room = $1", name,
                                bytes_view(*joined));
      if (!written) return written.error();
      auto removed =
          conn.query("DELETE FROM keel_sync_updates WHERE room = $1 AND seq = ANY($2)", name, merged_seqs);
      if (!removed) return removed.error();
      return {};
    };
    if (auto ran = run(); !ran) {
      (void)conn.execute("ROLLBACK");
      return ran;
    }
    if (auto committed = conn.execute("COMMIT"); !committed) return committed.error();
    compactions.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  // One more update in a room's tail in Postgres: compacted every compact_after_updates.
  void count_in_tail(room& r) {
    if (++r.tail < options.compact_after_updates) return;
    r.tail = 0;
    schedule_compaction(r.name);
  }

  void schedule_compaction(const std::string& name) {
    {
      const std::lock_guard guard(work_lock);
      to_compact.insert(name);
    }
    work_ready.notify_one();
  }

  void compaction_loop() {
    std::unique_lock guard(work_lock);
    while (true) {
      work_ready.wait(guard, [&] { return stopping || !to_compact.empty(); });
      if (to_compact.empty() && stopping) return;
      const auto name = *to_compact.begin();
      to_compact.erase(to_compact.begin());
      guard.unlock();
      (void)compact(name);  // a failure leaves the tail: the next compaction or load takes it
      guard.lock();
    }
  }

  // ---- rooms ---------------------------------------------------------------------------------
  // The open room `name`, loaded if it was not; locked.
  result<std::pair<std::shared_ptr<room>, std::unique_lock<std::mutex>>> enter(std::string_view name) {
    while (true) {
      std::shared_ptr<room> r;
      bool fresh = false;
      {
        const std::lock_guard guard(lock);
        auto found = open.find(name);
        if (found == open.end()) {
          if (open.size() >= options.max_rooms) return errc::too_many_rooms;
          r = std::make_shared<room>();
          r->name = std::string(name);
          open.emplace(r->name, r);
          fresh = true;
        } else {
          r = found->second;
        }
      }
      std::unique_lock room_guard(r->lock);
      if (r->retired) continue;
      if (fresh && options.pool != nullptr) {
        auto document = load(name);
        if (!document) {
          r->retired = true;
          const std::lock_guard guard(lock);
          open.erase(r->name);
          return document.error();
        }
        r->merged = std::move(*document);
      }
      return std::pair{std::move(r), std::move(room_guard)};
    }
  }

  // Removes `r` from the open rooms if nobody is in it (its lock held).
  void leave_if_empty(const std::shared_ptr<room>& r) {
    if (!r->clients.empty()) return;
    r->retired = true;
    {
      const std::lock_guard guard(lock);
      open.erase(r->name);
    }
    if (options.pool != nullptr && r->tail > 0) schedule_compaction(r->name);
  }

  std::shared_ptr<room> find(std::string_view name) {
    const std::lock_guard guard(lock);
    auto found = open.find(name);
    return found == open.end() ? nullptr : found->second;
  }

  static void send_to_others(const room& r, std::uint64_t from, const std::string& message) {
    for (const auto& [id, c] : r.clients) {
      if (id != from) (void)c.connection.send_binary(message);
    }
  }

  static void send_to_all(const room& r, const std::string& message) {
    for (const auto& [id, c] : r.clients) (void)c.connection.send_binary(message);
  }

  // ---- other processes -----------------------------------------------------------------------
  // Runs on the listener's thread.
  void on_listener_event(const pg::listener_event& event) {
    switch (event.what) {
      case pg::listener_event::kind::connected:
        if (!listening_told) {
          listening_told = true;
          listening.set_value();
        }
        return;
      case pg::listener_event::kind::notification:
        return on_peer_message(event.message.payload);
      case pg::listener_event::kind::disconnected:
        return;
      case pg::listener_event::kind::reconnected:
        return catch_up();
    }
  }

  void on_peer_message(std::string_view payload) {
    if (payload.size() <= origin_digits) return;
    const auto peer = payload.substr(0, origin_digits);
    if (peer == origin) return;  // our own, delivered to our listener too
    const auto rest = payload.substr(origin_digits + 1);
    bytes frame;
    if (payload[origin_digits] == ':') {
      auto decoded = from_base64(rest);
      if (!decoded) return;
      frame = std::move(*decoded);
    } else if (payload[origin_digits] == '#') {
      std::int64_t id = 0;
      if (std::from_chars(rest.data(), rest.data() + rest.size(), id).ec != std::errc{}) return;
      auto c = options.pool->acquire();
      if (!c) return;
      auto found = (*c)->query("SELECT message FROM keel_sync_relay WHERE id = $1", id);
      if (!found || found->empty()) return;  // pruned: too late to matter
      frame = (*found)[0].get<bytes>(0).value();
    } else {
      return;
    }
    byte_reader in(frame);
    const auto kind = in.u8();
    const auto name = in.take_varint_prefixed(max_room_name_bytes);
    if (!kind || !name) return;
    const auto body = frame.size() > in.position() ? bytes_view(frame).subspan(in.position()) : bytes_view{};
    auto r = find(as_chars(*name));
    if (!r) return;  // not open here: loaded from Postgres when a client joins
    const std::lock_guard guard(r->lock);
    if (r->retired) return;
    from_peers.fetch_add(1, std::memory_order_relaxed);
    if (*kind == peer_update) {
      if (!yjs::state_vector_from_update(body)) return;
      send_to_all(*r, sync_message(sync_update, body));
      r->take(bytes(body.begin(), body.end()), options.merge_after_updates, options.max_document_bytes);
      count_in_tail(*r);  // any process may compact the tail: compaction deletes exactly what it merged
    } else if (*kind == peer_awareness) {
      auto states = parse_awareness(body, peer);
      if (!states) return;
      for (auto& [id, announced] : *states) (void)r->take_awareness(id, std::move(announced));
      send_to_all(*r, awareness_message(body));
    }
  }

  std::vector<std::shared_ptr<room>> open_rooms() {
    const std::lock_guard guard(lock);
    std::vector<std::shared_ptr<room>> out;
    out.reserve(open.size());
    for (const auto& [name, r] : open) out.push_back(r);
    return out;
  }

  // The listener was away: what the other processes sent meanwhile is in Postgres. Each open
  // room takes what it lacks from there and passes it to its clients.
  void catch_up() {
    catch_ups.fetch_add(1, std::memory_order_relaxed);
    for (const auto& r : open_rooms()) {
      auto stored = load(r->name);
      if (!stored || stored->empty()) continue;
      const std::lock_guard guard(r->lock);
      if (r->retired) continue;
      auto document = r->document(options.max_document_bytes);
      if (!document) continue;
      auto have = yjs::state_vector_from_update(**document);
      if (!have) continue;
      auto missing = yjs::diff_update(*stored, *have);
      if (!missing || missing->size() <= 2) continue;  // {0, 0}: nothing missing
      send_to_all(*r, sync_message(sync_update, *missing));
      r->take(std::move(*missing), options.merge_after_updates, options.max_document_bytes);
    }
  }

  // Every second: processes whose listener left pg_stat_activity (killed, or cut off) lose
  // their clients' awareness here; and now and then the relay's old rows go.
  void check_peers() {
    if (++peer_checks % relay_prune_every_checks == 0) {
      if (auto c = options.pool->acquire())
        (void)(*c)->query("DELETE FROM keel_sync_relay WHERE created < now() - interval '5 minutes'");
    }
    const auto rooms_now = open_rooms();
    std::set<std::string> peers;
    for (const auto& r : rooms_now) {
      const std::lock_guard guard(r->lock);
      for (const auto& [id, known] : r->awareness) {
        if (!known.peer.empty()) peers.insert(known.peer);
      }
    }
    if (peers.empty()) return;
    std::vector<std::string> names;
    names.reserve(peers.size());
    for (const auto& p : peers) names.push_back(std::string(application_name_prefix) + p);
    auto c = options.pool->acquire();
    if (!c) return;
    auto alive = (*c)->query(
        "SELECT substr(application_name, $2) FROM pg_stat_activity WHERE application_name = ANY($1)", names,
        static_cast<std::int32_t>(application_name_prefix.size() + 1));
    if (!alive) return;  // cannot tell: keep everything
    for (const auto& row : *alive) peers.erase(row.get<std::string>(0).value());
    if (peers.empty()) return;
    peers_gone.fetch_add(peers.size(), std::memory_order_relaxed);
    for (const auto& r : rooms_now) {
      const std::lock_guard guard(r->lock);
      std::vector<std::uint64_t> gone;
      for (const auto& [id, known] : r->awareness) {
        if (peers.contains(known.peer)) gone.push_back(id);
      }
      std::map<std::uint64_t, awareness_state> removed;
      for (const auto id : gone) removed[id] = r->remove_awareness(id);
      if (!removed.empty()) send_to_all(*r, awareness_message(removed));
    }
  }

  void schedule_peer_check() {
    peer_timer->expires_after(peer_check_interval);
    peer_timer->async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      check_peers();
      schedule_peer_check();
    });
  }

  result<void> start_listening() {
    io_work.emplace(io.get_executor());
    peer_timer.emplace(io);
    auto connect = options.pool->options().connect;
    connect.application_name = std::string(application_name_prefix) + origin;
    listener = std::make_unique<pg::listener>(
        io.get_executor(),
        pg::listener_options{
            .conninfo = options.pool->options().conninfo, .channels = {options.channel}, .connect = connect},
        [this](const pg::listener_event& event) { on_listener_event(event); });
    auto listening_now = listening.get_future();
    listener->start();
    schedule_peer_check();
    io_thread = std::thread([this] { io.run(); });
    if (listening_now.wait_for(listen_timeout) != std::future_status::ready) return errc::not_listening;
    return {};
  }

  void stop_listening() {
    if (!io_thread.joinable()) return;
    boost::asio::post(io, [this] {
      listener->stop();
      peer_timer->cancel();
      io_work.reset();
    });
    io_thread.join();
  }

  void refuse(const net::websocket_connection& conn, net::close_code code, std::string_view reason) {
    refused.fetch_add(1, std::memory_order_relaxed);
    conn.close(code, reason);
  }

  // ---- the protocol --------------------------------------------------------------------------
  void on_open(const net::websocket_connection& conn) {
    const auto name = conn.upgrade_request().path_param("room").value_or("");
    if (name.empty() || name.size() > max_room_name_bytes)
      return refuse(conn, net::close_code::policy_violation, "a room name of 1 to 256 bytes");
    const auto level =
        options.authorize ? options.authorize(name, conn.upgrade_request()) : access::read_write;
    if (level == access::denied) {
      (void)conn.send_binary(denied_message("no access to this room"));
      return conn.close(net::close_code::policy_violation, "no access to this room");
    }
    auto entered = enter(name);
    if (!entered) {
      return refuse(
          conn, try_again_later,
          entered.error() == errc::too_many_rooms ? "too many rooms open" : "the room could not be loaded");
    }
    auto& [r, guard] = *entered;
    if (r->clients.size() >= options.max_clients_per_room) {
      leave_if_empty(r);
      return refuse(conn, try_again_later, "the room is full");
    }
    r->clients.emplace(conn.id(), client{conn, level, {}, false});
    clients.fetch_add(1, std::memory_order_relaxed);
    // What the server has (the client answers with what it lacks), then who is here.
    auto document = r->document(options.max_document_bytes);
    if (!document) return refuse(conn, net::close_code::internal_error, "the room's document does not merge");
    (void)conn.send_binary(sync_message(sync_step1, yjs::state_vector_from_update(**document).value()));
    if (!r->awareness.empty()) (void)conn.send_binary(awareness_message(r->awareness));
  }

  void on_message(const net::websocket_connection& conn, std::string_view text, bool binary) {
    if (!binary) return refuse(conn, net::close_code::protocol_error, "y-websocket messages are binary");
    const auto name = conn.upgrade_request().path_param("room").value_or("");
    auto r = find(name);
    if (!r) return;
    std::unique_lock guard(r->lock);
    const auto self = r->clients.find(conn.id());
    if (self == r->clients.end()) return;
    byte_reader in(as_bytes(text));
    const auto kind = in.varint();
    if (!kind) return refuse(conn, net::close_code::protocol_error, "an empty message");
    if (*kind == message_sync) {
      const auto step = in.varint();
      const auto payload = in.take_varint_prefixed(any_length);
      if (!step || !payload || !in.empty())
        return refuse(conn, net::close_code::protocol_error, "a sync message that does not decode");
      if (*step == sync_step1) {
        auto document = r->document(options.max_document_bytes);
        if (!document)
          return refuse(conn, net::close_code::internal_error, "the room's document does not merge");
        auto missing = yjs::diff_update(**document, *payload);
        if (!missing)
          return refuse(conn, net::close_code::protocol_error, "a state vector that does not decode");
        (void)conn.send_binary(sync_message(sync_step2, *missing));
        return;
      }
      if (*step != sync_step2 && *step != sync_update)
        return refuse(conn, net::close_code::protocol_error, "an unknown sync message");
      return receive_update(r, guard, self->second, *payload);
    }
    if (*kind == message_awareness) {
      const auto payload = in.take_varint_prefixed(any_length);
      if (!payload || !in.empty())
        return refuse(conn, net::close_code::protocol_error, "an awareness message that does not decode");
      return receive_awareness(*r, self->second, *payload, text);
    }
    if (*kind == message_query_awareness) {
      (void)conn.send_binary(awareness_message(r->awareness));
      return;
    }
    if (*kind == message_auth) return;  // clients do not send it; nothing to do
    refuse(conn, net::close_code::protocol_error, "an unknown message type");
  }

  void receive_update(const std::shared_ptr<room>& shared, std::unique_lock<std::mutex>& guard, client& from,
                      bytes_view update) {
    auto& r = *shared;
    if (from.level != access::read_write) {
      updates_dropped.fetch_add(1, std::memory_order_relaxed);
      if (!from.told_read_only) {
        from.told_read_only = true;
        (void)from.connection.send_binary(denied_message("read-only: your changes are not kept"));
      }
      return;
    }
    // Checked whole before anything is kept.
    if (!yjs::state_vector_from_update(update))
      return refuse(from.connection, net::close_code::protocol_error, "a Yjs update that does not decode");
    if (r.merged.size() + r.pending_bytes + update.size() > options.max_document_bytes)
      return refuse(from.connection, net::close_code::too_big, "the room's document would pass its limit");
    if (options.pool != nullptr) {
      // Appended (with whatever else arrives meanwhile) and passed on by the appender. A full
      // outbox holds the writer here (and so its socket) until the appender takes it.
      r.outbox_taken.wait(guard, [&] { return r.outbox.size() < max_outbox; });
      r.outbox.push_back({bytes(update.begin(), update.end()), from.connection});
      if (!r.appending) {
        r.appending = true;
        schedule_append(shared);
      }
      return;
    }
    updates_received.fetch_add(1, std::memory_order_relaxed);
    r.take(bytes(update.begin(), update.end()), options.merge_after_updates, options.max_document_bytes);
    send_to_others(r, from.connection.id(), sync_message(sync_update, update));
  }

  void receive_awareness(room& r, client& from, bytes_view update, std::string_view raw) {
    auto states = parse_awareness(update, {});
    if (!states) {
      return refuse(from.connection, net::close_code::protocol_error,
                    "an awareness update that does not decode");
    }
    for (auto& [id, announced] : *states) {
      const bool removal = announced.state == "null";
      if (!r.take_awareness(id, std::move(announced))) continue;
      if (removal) {
        from.awareness_clients.erase(id);
      } else {
        from.awareness_clients.insert(id);
      }
    }
    send_to_others(r, from.connection.id(), std::string(raw));
    publish_awareness(r.name, update);
  }

  void on_close(const net::websocket_connection& conn) {
    const auto name = conn.upgrade_request().path_param("room").value_or("");
    auto r = find(name);
    if (!r) return;
    std::unique_lock guard(r->lock);
    const auto self = r->clients.find(conn.id());
    if (self == r->clients.end()) return;
    // Whatever this socket announced is gone for everyone: null states, one clock on.
    std::map<std::uint64_t, awareness_state> removed;
    for (const auto id : self->second.awareness_clients) removed[id] = r->remove_awareness(id);
    r->clients.erase(self);
    clients.fetch_sub(1, std::memory_order_relaxed);
    if (!removed.empty()) {
      const auto update = awareness_update(removed);
      send_to_others(*r, conn.id(), awareness_message(update));
      publish_awareness(r->name, update);
    }
    leave_if_empty(r);
  }
};

rooms::rooms(std::shared_ptr<state> s) noexcept : state_(std::move(s)) {}

rooms::~rooms() {  // NOLINT(bugprone-exception-escape): see the declaration
  {
    const std::lock_guard guard(state_->work_lock);
    state_->stopping = true;
  }
  state_->work_ready.notify_all();
  state_->append_ready.notify_all();
  if (state_->worker.joinable()) state_->worker.join();
  if (state_->appender.joinable()) state_->appender.join();
  state_->stop_listening();
}

result<std::shared_ptr<rooms>> rooms::mount(net::server& server, rooms_options options) {
  if (options.pool != nullptr) {
    auto c = options.pool->acquire();
    if (!c) return c.error();
    if (auto migrated = migrate(**c); !migrated) return migrated.error();
  }
  auto s = std::make_shared<state>(std::move(options));
  // Listening before any room loads, so that no update committed after a load goes unheard.
  if (s->across_processes()) {
    if (auto listening = s->start_listening(); !listening) {
      s->stop_listening();
      return listening.error();
    }
  }
  if (s->options.pool != nullptr) {
    s->worker = std::thread([raw = s.get()] { raw->compaction_loop(); });
    s->appender = std::thread([raw = s.get()] { raw->append_loop(); });
  }
  auto out = std::make_shared<rooms>(s);
  // The handlers hold the state, not the rooms object: its destructor stops the worker.
  server.websocket(
      s->options.path + "/{room}",
      {.on_open = [s](const net::websocket_connection& c) { s->on_open(c); },
       .on_message = [s](const net::websocket_connection& c, std::string_view m,
                         bool binary) { s->on_message(c, m, binary); },
       .on_close = [s](const net::websocket_connection& c, const net::close_reason&) { s->on_close(c); }});
  return out;
}

rooms_stats rooms::stats() const {
  rooms_stats out;
  {
    const std::lock_guard guard(state_->lock);
    out.rooms_open = state_->open.size();
  }
  out.clients = state_->clients.load();
  out.updates_received = state_->updates_received.load();
  out.updates_dropped_read_only = state_->updates_dropped.load();
  out.messages_refused = state_->refused.load();
  out.compactions = state_->compactions.load();
  out.rooms_loaded = state_->loaded.load();
  out.published = state_->published.load();
  out.append_statements = state_->appends.load();
  out.received_from_peers = state_->from_peers.load();
  out.catch_ups = state_->catch_ups.load();
  out.peers_gone = state_->peers_gone.load();
  return out;
}

result<bytes> rooms::document(std::string_view room_name) {
  if (auto r = state_->find(room_name)) {
    const std::lock_guard guard(r->lock);
    if (!r->retired) {
      auto document = r->document(state_->options.max_document_bytes);
      if (!document) return document.error();
      return **document;
    }
  }
  if (state_->options.pool == nullptr) return bytes{0, 0};
  auto loaded = state_->load(room_name);
  if (!loaded) return loaded.error();
  return loaded->empty() ? bytes{0, 0} : *loaded;
}

result<void> rooms::compact_now() {
  if (state_->options.pool == nullptr) return {};
  auto c = state_->options.pool->acquire();
  if (!c) return c.error();
  auto names = (*c)->query("SELECT DISTINCT room FROM keel_sync_updates");
  if (!names) return names.error();
  for (const auto& row : *names) {
    if (auto done = state_->compact(row.get<std::string>(0).value()); !done) return done;
  }
  return {};
}

result<void> migrate(pg::connection& c) {
  // One statement string runs as one transaction: the lock keeps processes starting together
  // from racing on CREATE TABLE IF NOT EXISTS (which can fail on pg_type's unique index).
  auto done = c.execute(R"sql(
    SELECT pg_advisory_xact_lock(hashtext('keel.sync.migrate'));
    CREATE TABLE IF NOT EXISTS keel_sync_documents (
      room     text  PRIMARY KEY,
      document bytea NOT NULL
    );
    CREATE TABLE IF NOT EXISTS keel_sync_updates (
      room     text      NOT NULL,
      seq      bigserial NOT NULL,
      document bytea     NOT NULL,
      PRIMARY KEY (room, seq)
    );
    CREATE TABLE IF NOT EXISTS keel_sync_relay (
      id      bigserial   PRIMARY KEY,
      message bytea       NOT NULL,
      created timestamptz NOT NULL DEFAULT now()
    ))sql");
  if (!done) return done.error();
  return {};
}

}  // namespace keel::sync
