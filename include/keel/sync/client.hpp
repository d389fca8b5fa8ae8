#pragma once
/// @file keel/sync/client.hpp
/// @brief C++ clients of keel::sync's rooms: `room_client` speaks the y-websocket protocol (the
/// room's document held as one Yjs update, kept in step through reconnects), and
/// `shared_document<D>` shares one of keel::crdt's documents — a text, a map, a set — between C++
/// services through a room.
///
/// A keel document travels in the room's Yjs document as binary items of the root array
/// "keel": each local edit appends one item holding the edit's delta (`delta_since` the version
/// before it), and every replica applies every delta it finds (keel's deltas apply in any
/// order, twice or late). So the room's persistence, compaction, fan-out across processes and
/// access rules are the Yjs rooms' own, and a joining replica gets the document from the
/// server's answer to its state vector.
///
/// @code
/// auto notes = keel::sync::shared_document<keel::crdt::text>::open(
///     {.port = 8080, .room = "notes"}, keel::crdt::text(replica_id)).value();
/// notes->edit([](keel::crdt::text& t) { t.insert(0, U"hello"); }).value();
/// notes->wait_until([](const keel::crdt::text& t) { return t.size() > 5; }, std::chrono::seconds(5));
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace keel::sync {

struct client_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  /// The rooms' path on the server (rooms_options::path); the room is `<path>/<room>`.
  std::string path = "/sync";
  std::string room;
  /// Query parameters for the server's authorize hook, e.g. "token=..." (already URL-encoded).
  std::string query;
  /// How long connect() waits for the first sync.
  std::chrono::milliseconds connect_timeout{10'000};
  /// After a lost connection the client reconnects, waiting this long, doubling up to the max.
  std::chrono::milliseconds min_reconnect_delay{50};
  std::chrono::milliseconds max_reconnect_delay{2'000};
};

/// A y-websocket client. The room's document is kept as one Yjs update; what this client sends
/// while disconnected reaches the server when it is back (the server asks for what it lacks).
/// Thread-safe; handlers run on the client's own thread.
class room_client {
 public:
  /// Called with each update the server sends (others' changes; on joining, what it lacked).
  using update_handler = std::function<void(bytes_view update)>;

  /// Connects and returns once the server's document has arrived. @returns errc::not_synced
  /// (unreachable, refused, or no answer within connect_timeout), errc::access_denied.
  [[nodiscard]] static result<std::unique_ptr<room_client>> connect(client_options options,
                                                                    update_handler on_update);
  /// Stops the client's thread. Posting the stop can only throw on allocation failure; then the
  /// thread could outlive the client, so terminating is the safe outcome.
  ~room_client();  // NOLINT(bugprone-exception-escape)
  room_client(const room_client&) = delete;
  room_client& operator=(const room_client&) = delete;

  /// Adds a Yjs update of this client's to the document and sends it (now, or after a
  /// reconnect). @returns crdt::errc::malformed_update for an update that does not decode.
  [[nodiscard]] result<void> send(bytes_view update);
  /// The document as one Yjs update.
  [[nodiscard]] bytes document() const;
  [[nodiscard]] bool connected() const;
  /// True once the server said this client may only read (its updates are dropped there).
  [[nodiscard]] bool read_only() const;
  [[nodiscard]] std::uint64_t reconnects() const;

  struct state;
  explicit room_client(std::shared_ptr<state> s) noexcept;

 private:
  std::shared_ptr<state> state_;
};

namespace detail {
/// The Yjs update appending `delta` to the root array "keel" as item (client, clock), after the
/// client's previous item `after` (if any).
[[nodiscard]] bytes keel_item_update(std::uint64_t client, std::uint64_t clock,
                                     const std::pair<std::uint64_t, std::uint64_t>* after, bytes_view delta);
/// The deltas in an update's items of the root array "keel" (found through their parent or
/// their origin, among `known`: the (client, clock) of items seen before, added to).
[[nodiscard]] result<std::vector<bytes>> keel_deltas(
    bytes_view update, std::set<std::pair<std::uint64_t, std::uint64_t>>& known);
/// A random Yjs client id (below 2^32, as Yjs draws them).
[[nodiscard]] std::uint64_t random_client_id();
}  // namespace detail

/// One of keel::crdt's documents (anything with version(), delta_since(version) and
/// apply(delta) → result<void>) shared through a room: local edits are sent as deltas, others'
/// applied as they arrive. Thread-safe.
template <class Document>
class shared_document {
 public:
  /// Joins `options.room` with `document` as this replica (give each replica its own replica id).
  [[nodiscard]] static result<std::unique_ptr<shared_document>> open(const client_options& options,
                                                                     Document document = Document{}) {
    auto shared = std::unique_ptr<shared_document>(new shared_document(std::move(document)));
    auto* raw = shared.get();
    auto client =
        room_client::connect(std::move(options), [raw](bytes_view update) { raw->receive(update); });
    if (!client) return client.error();
    shared->client_ = std::move(*client);
    // What this replica held before it joined goes to the room too.
    if (auto sent = shared->publish(shared->document_.delta_since({})); !sent) return sent.error();
    return shared;
  }

  /// Runs `change(document)` and sends what it changed.
  template <class Change>
  [[nodiscard]] result<void> edit(Change&& change) {
    std::unique_lock guard(lock_);
    const auto before = document_.version();
    std::forward<Change>(change)(document_);
    auto delta = document_.delta_since(before);
    guard.unlock();
    changed_.notify_all();
    return publish(std::move(delta));
  }

  /// Calls `look(document)` under the document's lock and returns what it returns.
  template <class Look>
  auto read(Look&& look) const {
    const std::lock_guard guard(lock_);
    return std::forward<Look>(look)(static_cast<const Document&>(document_));
  }

  /// Waits until `holds(document)` is true. @returns false if `timeout` passed first.
  template <class Predicate>
  bool wait_until(Predicate&& holds, std::chrono::milliseconds timeout) const {
    std::unique_lock guard(lock_);
    return changed_.wait_for(guard, timeout, [&] { return holds(static_cast<const Document&>(document_)); });
  }

  /// Deltas from others that did not apply (malformed).
  [[nodiscard]] std::uint64_t refused_deltas() const {
    const std::lock_guard guard(lock_);
    return refused_;
  }
  [[nodiscard]] room_client& client() noexcept { return *client_; }

 private:
  explicit shared_document(Document document) : document_(std::move(document)) {}

  result<void> publish(bytes delta) {
    bytes update;
    {
      const std::lock_guard guard(lock_);
      const auto after = last_item_;
      update = detail::keel_item_update(client_id_, next_clock_, next_clock_ == 0 ? nullptr : &after, delta);
      last_item_ = {client_id_, next_clock_++};
      known_.insert(last_item_);
    }
    return client_->send(update);
  }

  void receive(bytes_view update) {
    {
      const std::lock_guard guard(lock_);
      auto deltas = detail::keel_deltas(update, known_);
      if (!deltas) {
        ++refused_;
        return;
      }
      for (const auto& delta : *deltas) {
        if (!document_.apply(delta)) ++refused_;
      }
    }
    changed_.notify_all();
  }

  mutable std::mutex lock_;
  mutable std::condition_variable changed_;
  Document document_;
  std::uint64_t client_id_ = detail::random_client_id();
  std::uint64_t next_clock_ = 0;
  std::pair<std::uint64_t, std::uint64_t> last_item_{};
  std::set<std::pair<std::uint64_t, std::uint64_t>> known_;
  std::uint64_t refused_ = 0;
  std::unique_ptr<room_client> client_;  // last: destroyed first, so no handler runs on a dead document
};

}  // namespace keel::sync
