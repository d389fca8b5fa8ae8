// keel::sync's C++ client: the y-websocket protocol over a Beast WebSocket on a thread of its
// own. On every (re)connection it sends its state vector (sync step 1) and answers the server's
// with what the server lacks (step 2), so what was sent while disconnected is not lost; the
// document is one Yjs update merged with keel's codec, as on the server. One Asio thread does all
// the socket work; send() posts to it.
#include <keel/core/backoff.hpp>
#include <keel/core/byte_io.hpp>
#include <keel/crdt/yjs.hpp>
#include <keel/sync/client.hpp>
#include <keel/sync/error.hpp>

#include "protocol.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <deque>
#include <optional>
#include <random>
#include <thread>

namespace keel::sync {
namespace {

namespace asio = boost::asio;
namespace websocket = boost::beast::websocket;
namespace yjs = crdt::yjs;
using tcp = asio::ip::tcp;
using namespace protocol;  // NOLINT(google-build-using-namespace): the protocol's names, in its own file

constexpr std::string_view keel_array = "keel";

}  // namespace

struct room_client::state : std::enable_shared_from_this<room_client::state> {
  client_options options;
  update_handler on_update;

  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::optional<websocket::stream<tcp::socket>> socket;
  boost::beast::flat_buffer incoming;
  std::deque<std::string> outgoing;  // the front one is being written
  asio::steady_timer retry{io};
  backoff delays;
  std::thread thread;

  mutable std::mutex lock;  // the document and the flags
  std::condition_variable changed;
  bytes document{0, 0};
  // Updates wait apart and are merged into the document every 64, or when it is read: merging
  // the whole document per update would make each one cost the document's size.
  std::vector<bytes> pending;
  bool is_connected = false;
  bool synced_once = false;
  bool denied = false;
  bool refused = false;  // denied before it ever synced: it stops trying
  bool stopping = false;
  std::atomic<std::uint64_t> reconnect_count{0};

  explicit state(client_options o, update_handler handler)
      : options(std::move(o)),
        on_update(std::move(handler)),
        delays(backoff_policy{.initial = options.min_reconnect_delay, .max = options.max_reconnect_delay}) {}

  // ---- on the io thread ----------------------------------------------------------------------
  void connect() {
    if (stopping) return;
    boost::system::error_code ec;
    tcp::resolver resolver(io);
    const auto endpoints = resolver.resolve(options.host, std::to_string(options.port), ec);
    socket.emplace(io);
    if (!ec) asio::connect(socket->next_layer(), endpoints, ec);
    auto target = options.path + "/" + options.room;
    if (!options.query.empty()) target += "?" + options.query;
    if (!ec) socket->handshake(options.host + ":" + std::to_string(options.port), target, ec);
    if (ec) return lost();
    socket->binary(true);
    delays.reset();
    {
      const std::lock_guard guard(lock);
      is_connected = true;
    }
    // What this client has; the server answers with what it lacks, and sends its own step 1.
    write(sync_message(sync_step1, yjs::state_vector_from_update(current()).value()));
    read();
  }

  static constexpr std::size_t merge_after = 64;

  // Keeps a checked update (the lock held).
  void keep(bytes_view update) {
    pending.emplace_back(update.begin(), update.end());
    if (pending.size() >= merge_after) merge_pending();
  }

  void merge_pending() {
    if (pending.empty()) return;
    std::vector<bytes_view> parts{bytes_view(document)};
    parts.insert(parts.end(), pending.begin(), pending.end());
    if (auto merged = yjs::merge_updates(parts)) document = std::move(*merged);
    pending.clear();
  }

  bytes current() {
    const std::lock_guard guard(lock);
    merge_pending();
    return document;
  }

  void read() {
    socket->async_read(incoming, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
      if (ec) return self->lost();
      const auto data = self->incoming.cdata();
      const std::string message(static_cast<const char*>(data.data()), data.size());
      self->incoming.consume(self->incoming.size());
      self->receive(message);
      if (self->socket) self->read();
    });
  }

  void receive(std::string_view message) {
    byte_reader in(as_bytes(message));
    const auto kind = in.varint();
    if (!kind) return;
    if (*kind == message_auth) {
      const std::lock_guard guard(lock);
      denied = true;  // read-only, or refused (then the server closes the socket)
      changed.notify_all();
      return;
    }
    if (*kind != message_sync) return;  // awareness: not kept by this client
    const auto step = in.varint();
    const auto payload = in.take_varint_prefixed(any_length);
    if (!step || !payload) return;
    if (*step == sync_step1) {
      auto missing = yjs::diff_update(current(), *payload);
      if (missing) write(sync_message(sync_step2, *missing));
      return;
    }
    if (*step != sync_step2 && *step != sync_update) return;
    if (!yjs::state_vector_from_update(*payload)) return;  // a server sends what it checked
    {
      const std::lock_guard guard(lock);
      keep(*payload);
    }
    if (on_update) on_update(*payload);
    if (*step == sync_step2) {
      const std::lock_guard guard(lock);
      synced_once = true;
      changed.notify_all();
    }
  }

  void write(std::string message) {
    if (!socket) return;  // disconnected: the next connection's sync carries it
    outgoing.push_back(std::move(message));
    if (outgoing.size() == 1) write_front();
  }

  void write_front() {
    socket->async_write(asio::buffer(outgoing.front()),
                        [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                          if (ec) return self->lost();
                          self->outgoing.pop_front();
                          if (!self->outgoing.empty() && self->socket) self->write_front();
                        });
  }

  void lost() {
    if (socket) {
      boost::system::error_code ignored;
      (void)socket->next_layer().close(ignored);
      socket.reset();
    }
    outgoing.clear();
    incoming.consume(incoming.size());
    {
      const std::lock_guard guard(lock);
      is_connected = false;
      if (denied && !synced_once) {
        refused = true;
        changed.notify_all();
      }
      if (stopping || refused) return;
    }
    reconnect_count.fetch_add(1, std::memory_order_relaxed);
    retry.expires_after(delays.next());
    retry.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->connect();
    });
  }

  void stop() {
    {
      const std::lock_guard guard(lock);
      stopping = true;
    }
    retry.cancel();
    if (socket) {
      boost::system::error_code ignored;
      (void)socket->next_layer().close(ignored);
      socket.reset();
    }
    work.reset();
  }
};

room_client::room_client(std::shared_ptr<state> s) noexcept : state_(std::move(s)) {}

room_client::~room_client() {  // NOLINT(bugprone-exception-escape): see the declaration
  asio::post(state_->io, [s = state_] { s->stop(); });
  if (state_->thread.joinable()) state_->thread.join();
}

result<std::unique_ptr<room_client>> room_client::connect(client_options options, update_handler on_update) {
  auto s = std::make_shared<state>(std::move(options), std::move(on_update));
  s->work.emplace(s->io.get_executor());
  asio::post(s->io, [s] { s->connect(); });
  s->thread = std::thread([raw = s.get()] { raw->io.run(); });
  auto client = std::make_unique<room_client>(s);
  std::unique_lock guard(s->lock);
  s->changed.wait_for(guard, s->options.connect_timeout, [&] { return s->synced_once || s->refused; });
  const bool synced = s->synced_once, refused = s->refused;
  guard.unlock();
  if (!synced) return refused ? errc::access_denied : errc::not_synced;
  return client;
}

result<void> room_client::send(bytes_view update) {
  if (!crdt::yjs::state_vector_from_update(update)) return crdt::errc::malformed_update;
  {
    const std::lock_guard guard(state_->lock);
    state_->keep(update);
  }
  asio::post(state_->io, [s = state_, message = sync_message(sync_update, update)]() mutable {
    s->write(std::move(message));
  });
  return {};
}

bytes room_client::document() const {
  return state_->current();
}

bool room_client::connected() const {
  const std::lock_guard guard(state_->lock);
  return state_->is_connected;
}

bool room_client::read_only() const {
  const std::lock_guard guard(state_->lock);
  return state_->denied;
}

std::uint64_t room_client::reconnects() const {
  return state_->reconnect_count.load(std::memory_order_relaxed);
}

namespace detail {

bytes keel_item_update(std::uint64_t client, std::uint64_t clock,
                       const std::pair<std::uint64_t, std::uint64_t>* after, bytes_view delta) {
  yjs::block item;
  item.kind = yjs::struct_kind::item;
  item.start = {client, clock};
  item.length = 1;
  if (after != nullptr) {
    item.origin = yjs::id{after->first, after->second};
  } else {
    item.parent_root = std::string(keel_array);
  }
  item.content.kind = yjs::content_kind::binary;
  item.content.data.assign(delta.begin(), delta.end());
  yjs::update update;
  update.blocks.push_back(std::move(item));
  return yjs::encode_update(update);
}

result<std::vector<bytes>> keel_deltas(bytes_view update,
                                       std::set<std::pair<std::uint64_t, std::uint64_t>>& known) {
  auto decoded = yjs::decode_update(update);
  if (!decoded) return decoded.error();
  // An item is keel's when its parent is the root array, or its origin is one of keel's: origins
  // may come later in the update (it is grouped by client), so look until nothing new is found.
  std::vector<bytes> out;
  std::vector<bool> taken(decoded->blocks.size(), false);
  for (bool found = true; found;) {
    found = false;
    for (std::size_t k = 0; k < decoded->blocks.size(); ++k) {
      auto& b = decoded->blocks[k];
      if (taken[k] || b.kind != yjs::struct_kind::item || b.content.kind != yjs::content_kind::binary)
        continue;
      const bool ours = (b.parent_root && *b.parent_root == keel_array) ||
                        (b.origin && known.contains({b.origin->client, b.origin->clock}));
      if (!ours) continue;
      taken[k] = true;
      found = true;
      known.insert({b.start.client, b.start.clock});
      out.push_back(std::move(b.content.data));
    }
  }
  return out;
}

std::uint64_t random_client_id() {
  std::random_device entropy;
  return entropy();
}

}  // namespace detail

}  // namespace keel::sync
