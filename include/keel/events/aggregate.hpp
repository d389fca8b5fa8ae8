#pragma once
/// @file keel/events/aggregate.hpp
/// @brief Aggregates: load a stream's state from its latest snapshot plus the events after it,
/// decide what happens next, append with the version the decision was made on, and decide
/// again on a conflict. Snapshots are taken every N events, tagged with the state's schema.
///
/// @code
/// struct cart { std::int64_t items = 0; };
/// const keel::events::aggregate_type<cart> carts{
///     .apply = [](cart& c, const keel::events::recorded_event& e) { if (e.type == "added") ++c.items; },
///     .to_json = [](const cart& c) { return "{\"items\": " + std::to_string(c.items) + "}"; },
///     .from_json = [](std::string_view json) -> std::optional<cart> { ... },
///     .snapshot_every = 100};
/// auto done = keel::events::execute(store, c, "cart-7", carts,
///     [](const cart& now) -> keel::result<std::vector<keel::events::new_event>> {
///       if (now.items >= 50) return std::vector<keel::events::new_event>{};  // nothing to do
///       return std::vector<keel::events::new_event>{{.type = "added"}};
///     });
/// @endcode
#include <keel/events/store.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace keel::events {

/// How to fold a stream into a State, and how to snapshot it.
template <class State>
struct aggregate_type {
  /// Evolves the state by one event.
  std::function<void(State&, const recorded_event&)> apply;
  /// The state as JSON, for snapshots (no snapshots when empty).
  std::function<std::string(const State&)> to_json{};
  /// The state from a snapshot's JSON; nullopt ignores the snapshot (the stream is replayed).
  std::function<std::optional<State>(std::string_view)> from_json{};
  /// The shape of State: raise it when State changes, and older snapshots are ignored.
  std::int32_t schema_version = 1;
  /// A snapshot after every this many events (0: never).
  std::int64_t snapshot_every = 0;
  /// Events read per page while loading.
  std::size_t page_size = 1000;
};

/// A stream's state as loaded.
template <class State>
struct loaded {
  State state{};
  std::int64_t version = -1;     ///< the last event folded in (-1: none)
  std::int64_t events_read = 0;  ///< events read after the snapshot (or from the start)
  bool from_snapshot = false;
  stream_status status = stream_status::not_found;
};

/// Loads `stream`: the latest snapshot of the type's schema, then the events after it.
template <class State>
[[nodiscard]] result<loaded<State>> load(const store& events, pg::connection& c, std::string_view stream,
                                         const aggregate_type<State>& type) {
  loaded<State> out;
  std::int64_t from = 0;
  if (type.from_json) {
    auto snap = events.load_snapshot(c, stream);
    if (!snap) return snap.error();
    if (*snap && (*snap)->schema_version == type.schema_version) {
      if (auto state = type.from_json((*snap)->state)) {
        out.state = std::move(*state);
        out.version = (*snap)->version;
        out.from_snapshot = true;
        from = out.version + 1;
      }
    }
  }
  for (;;) {
    auto page = events.read_stream(c, stream, {.from_version = from, .max_count = type.page_size});
    if (!page) return page.error();
    out.status = page->status;
    for (const auto& e : page->events) {
      type.apply(out.state, e);
      out.version = e.version;
      ++out.events_read;
    }
    if (page->end_of_stream) break;
    from = page->next_version;
  }
  return out;
}

/// Loads `stream`, calls `decide(const State&) -> result<std::vector<new_event>>`, and appends
/// what it returns with the version it was decided on; on wrong_expected_version (another
/// writer was first) it loads and decides again, up to `max_attempts` times. An empty decision
/// appends nothing. Takes a snapshot when the append crosses a multiple of snapshot_every; a
/// snapshot that cannot be saved is not an error (the next load reads more events).
/// @returns the last append's outcome (wrong_expected_version once attempts run out), or the
/// decision's or the store's error.
template <class State, class Decide>
[[nodiscard]] result<append_result> execute(const store& events, pg::connection& c, std::string_view stream,
                                            const aggregate_type<State>& type, Decide&& decide,
                                            int max_attempts = 5) {
  append_result last;
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    auto current = load(events, c, stream, type);
    if (!current) return current.error();
    result<std::vector<new_event>> decided = decide(std::as_const(current->state));
    if (!decided) return decided.error();
    if (decided->empty()) {
      last = append_result{.status = append_status::already_appended,
                           .stream = std::string(stream),
                           .version = current->version};
      return last;
    }
    auto appended = events.append(c, stream, expected_version::exact(current->version), *decided);
    if (!appended) return appended.error();
    last = std::move(*appended);
    if (!last) continue;  // someone else appended first: decide again on the new state
    if (type.snapshot_every > 0 && type.to_json &&
        last.version / type.snapshot_every != current->version / type.snapshot_every) {
      // Fold the new events in as they were stored, and snapshot the result.
      for (std::size_t k = 0; k < decided->size(); ++k) {
        recorded_event e{.id = (*decided)[k].id.value_or(pg::uuid{}),
                         .stream = std::string(stream),
                         .type = (*decided)[k].type,
                         .data = (*decided)[k].data,
                         .metadata = (*decided)[k].metadata,
                         .version = last.versions[k],
                         .position = last.positions[k]};
        type.apply(current->state, e);
      }
      (void)events.save_snapshot(c, stream,
                                 {.version = last.version,
                                  .schema_version = type.schema_version,
                                  .state = type.to_json(current->state)});
    }
    return last;
  }
  return last;
}

}  // namespace keel::events
