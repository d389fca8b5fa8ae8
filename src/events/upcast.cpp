#include <keel/core/log.hpp>
#include <keel/events/store.hpp>
#include <keel/events/upcast.hpp>

namespace keel::events {

result<void> upcasters::add(std::string from, upcaster fn) {
  if (from.empty() || !fn || by_type_.contains(from)) return errc::invalid_event_type;
  by_type_.emplace(std::move(from), std::move(fn));
  return {};
}

result<void> upcasters::apply(recorded_event& e) const {
  for (int step = 0; step < max_chain; ++step) {
    const auto it = by_type_.find(e.type);
    if (it == by_type_.end()) return {};
    const std::string from = e.type;
    if (auto done = it->second(e); !done) {
      log::warn(
          "events upcaster failed",
          {{"type", from}, {"stream", e.stream}, {"version", e.version}, {"error", done.error().message()}});
      return errc::upcast_failed;
    }
  }
  return errc::upcast_cycle;
}

}  // namespace keel::events
