#pragma once
/// @file keel/events/upcast.hpp
/// @brief Schema evolution: versioned event types and a chain of upcasters applied on read, so
/// stored events are never rewritten and handlers only know the newest shape.
///
/// @code
/// keel::events::upcasters chain;
/// chain.add("order_placed.v1", [](keel::events::recorded_event& e) -> keel::result<void> {
///   e.type = "order_placed.v2";               // v2 keeps the total in cents
///   e.data = convert_total_to_cents(e.data);  // any JSON → JSON
///   return {};
/// });
/// keel::events::store events({.upcast = &chain});  // every read returns v2
/// @endcode
#include <keel/core/result.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace keel::events {

struct recorded_event;

/// Upcasters by the event type they read. Each one turns an event of its type into a newer
/// shape (usually a newer type name, e.g. "x.v1" → "x.v2"); reads apply them one after another
/// until no upcaster matches. Not thread-safe to add to while reads run; add all first.
class upcasters {
 public:
  using upcaster = std::function<result<void>(recorded_event&)>;

  /// Adds the upcaster for events of type `from`. @returns errc::invalid_event_type if `from`
  /// already has one.
  [[nodiscard]] result<void> add(std::string from, upcaster fn);
  /// Upcasts `e` in place through the chain. @returns errc::upcast_failed (with the upcaster's
  /// error kept in the log) or errc::upcast_cycle when the chain runs longer than max_chain.
  [[nodiscard]] result<void> apply(recorded_event& e) const;
  [[nodiscard]] bool empty() const noexcept { return by_type_.empty(); }

  static constexpr int max_chain = 64;

 private:
  std::unordered_map<std::string, upcaster> by_type_;
};

}  // namespace keel::events
