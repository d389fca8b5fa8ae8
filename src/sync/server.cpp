// Yjs rooms: the y-websocket protocol on keel::net's WebSockets, documents kept as merged Yjs
// updates (keel::crdt::yjs), persisted as an append-only tail per room that a background thread
// compacts into one row. The protocol, as y-protocols writes it (lib0 varuints and byte arrays):
//   sync      0, then 0 step 1 (a state vector) | 1 step 2 (an update) | 2 update (an update)
//   awareness 1, then an awareness update: count, (client id, clock, state JSON)*
//   auth      2, then 0 permission denied and a reason
//   query     3 (the client asks for every awareness state)
#include <keel/core/byte_io.hpp>
#include <keel/core/varint.hpp>
#include <keel/crdt/yjs.hpp>
#include <keel/sync/error.hpp>
#include <keel/sync/server.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace keel::sync {
namespace {

namespace yjs = crdt::yjs;

constexpr std::uint64_t message_sync = 0;
constexpr std::uint64_t message_awareness = 1;
constexpr std::uint64_t message_auth = 2;
constexpr std::uint64_t message_query_awareness = 3;
constexpr std::uint64_t sync_step1 = 0;
constexpr std::uint64_t sync_step2 = 1;
constexpr std::uint64_t sync_update = 2;
constexpr std::uint64_t permission_denied = 0;
constexpr std::size_t max_room_name_bytes = 256;
constexpr auto try_again_later = static_cast<net::close_code>(1013);

// lib0's varuints are LEB128 and its byte arrays varuint-prefixed: core's byte_reader reads
// both (varint(), take_varint_prefixed()); a message is at most keel::net's max_message_bytes.
constexpr std::size_t any_length = std::numeric_limits<std::size_t>::max();

void put_varuint(std::string& out, std::uint64_t v) {
  std::array<std::uint8_t, max_varint_size> buffer{};
  const auto n = encode_varint(v, buffer.data());
  out.append(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
}

void put_var_bytes(std::string& out, bytes_view data) {
  put_varuint(out, data.size());
  out.append(data.begin(), data.end());
}

std::string sync_message(std::uint64_t kind, bytes_view payload) {
  std::string out;
  put_varuint(out, message_sync);
  put_varuint(out, kind);
  put_var_bytes(out, payload);
  return out;
}

std::string denied_message(std::string_view reason) {
  std::string out;
  put_varuint(out, message_auth);
  put_varuint(out, permission_denied);
  put_var_bytes(out, as_bytes(reason));
  return out;
}

// One awareness state as a client last sent it.
struct awareness_state {
  std::uint64_t clock = 0;
  std::string state;  // JSON
  std::uint64_t connection = 0;
};

std::string awareness_message(const std::map<std::uint64_t, awareness_state>& states) {
  bytes update;
  append_varint(update, states.size());
  for (const auto& [client, s] : states) {
    append_varint(update, client);
    append_varint(update, s.clock);
    append_varint(update, s.state.size());
    update.insert(update.end(), s.state.begin(), s.state.end());
  }
  std::string out;
  put_varuint(out, message_awareness);
  put_var_bytes(out, update);
  return out;
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
  std::size_t tail = 0;  // updates appended since the last compaction was asked for

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
  std::atomic<std::size_t> clients{0};

  // Background compaction.
  std::mutex work_lock;
  std::condition_variable work_ready;
  std::set<std::string> to_compact;
  bool stopping = false;
  std::thread worker;

  explicit state(rooms_options o) : options(std::move(o)) {}

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

  result<void> append(std::string_view name, bytes_view update) {
    auto c = options.pool->acquire();
    if (!c) return c.error();
    auto done = (*c)->query("INSERT INTO keel_sync_updates (room, document) VALUES ($1, $2)", name, update);
    if (!done) return done.error();
    return {};
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
      return receive_update(*r, self->second, *payload);
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

  void receive_update(room& r, client& from, bytes_view update) {
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
      if (auto kept = append(r.name, update); !kept)
        return refuse(from.connection, net::close_code::internal_error, "the update could not be stored");
      if (++r.tail >= options.compact_after_updates) {
        r.tail = 0;
        schedule_compaction(r.name);
      }
    }
    updates_received.fetch_add(1, std::memory_order_relaxed);
    r.pending.emplace_back(update.begin(), update.end());
    r.pending_bytes += update.size();
    if (r.pending.size() >= options.merge_after_updates) (void)r.document(options.max_document_bytes);
    send_to_others(r, from.connection.id(), sync_message(sync_update, update));
  }

  void receive_awareness(room& r, client& from, bytes_view update, std::string_view raw) {
    byte_reader in(update);
    const auto count = in.varint();
    if (!count) {
      return refuse(from.connection, net::close_code::protocol_error,
                    "an awareness update that does not decode");
    }
    std::vector<std::pair<std::uint64_t, awareness_state>> states;
    for (std::uint64_t k = 0; k < *count; ++k) {
      const auto id = in.varint();
      const auto clock = in.varint();
      const auto json = in.take_varint_prefixed(any_length);
      if (!id || !clock || !json) {
        return refuse(from.connection, net::close_code::protocol_error,
                      "an awareness update that does not decode");
      }
      states.push_back({*id, {*clock, std::string(as_chars(*json)), from.connection.id()}});
    }
    for (auto& [id, s] : states) {
      if (s.state == "null") {
        r.awareness.erase(id);
        from.awareness_clients.erase(id);
      } else {
        from.awareness_clients.insert(id);
        r.awareness[id] = std::move(s);
      }
    }
    send_to_others(r, from.connection.id(), std::string(raw));
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
    for (const auto id : self->second.awareness_clients) {
      const auto known = r->awareness.find(id);
      removed[id] = {known == r->awareness.end() ? 1 : known->second.clock + 1, "null", conn.id()};
      if (known != r->awareness.end()) r->awareness.erase(known);
    }
    r->clients.erase(self);
    clients.fetch_sub(1, std::memory_order_relaxed);
    if (!removed.empty()) send_to_others(*r, conn.id(), awareness_message(removed));
    leave_if_empty(r);
  }
};

rooms::rooms(std::shared_ptr<state> s) noexcept : state_(std::move(s)) {}

rooms::~rooms() {
  {
    const std::lock_guard guard(state_->work_lock);
    state_->stopping = true;
  }
  state_->work_ready.notify_all();
  if (state_->worker.joinable()) state_->worker.join();
}

result<std::shared_ptr<rooms>> rooms::mount(net::server& server, rooms_options options) {
  if (options.pool != nullptr) {
    auto c = options.pool->acquire();
    if (!c) return c.error();
    if (auto migrated = migrate(**c); !migrated) return migrated.error();
  }
  auto s = std::make_shared<state>(std::move(options));
  if (s->options.pool != nullptr) s->worker = std::thread([raw = s.get()] { raw->compaction_loop(); });
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
  auto done = c.execute(R"sql(
    CREATE TABLE IF NOT EXISTS keel_sync_documents (
      room     text  PRIMARY KEY,
      document bytea NOT NULL
    );
    CREATE TABLE IF NOT EXISTS keel_sync_updates (
      room     text      NOT NULL,
      seq      bigserial NOT NULL,
      document bytea     NOT NULL,
      PRIMARY KEY (room, seq)
    ))sql");
  if (!done) return done.error();
  return {};
}

}  // namespace keel::sync
