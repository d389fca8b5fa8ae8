#pragma once
/// @file keel/events/error.hpp
/// @brief keel::events errors.
#include <keel/core/error.hpp>

namespace keel::events {

/// What went wrong in a keel::events call. Postgres failures keep their keel::pg::errc (and the
/// connection's diagnostics); these are the event store's own. A stream at another version than
/// expected is not an error: it is the `wrong_expected_version` outcome of an append.
enum class errc {
  invalid_stream_name = 1,   ///< empty, too long, starts with '$', or holds whitespace or control bytes
  invalid_event_type,        ///< an event's type is empty, too long, or holds control bytes
  invalid_json,              ///< an event's data or metadata is not valid JSON (metadata must be an object)
  event_too_large,           ///< an event's data and metadata exceed store_options::max_event_bytes
  batch_too_large,           ///< more events in one call than store_options::max_batch_events
  empty_batch,               ///< an append without events
  duplicate_event_id,        ///< an event id is already taken by a different event
  stream_deleted,            ///< the stream is tombstoned: it takes no more appends
  invalid_expected_version,  ///< exact(v) with v < -1
  invalid_position,          ///< an $all position that is not "transaction/position"
  invalid_read,              ///< a read with max_count 0 or above the store's page limit
  invalid_metadata,          ///< stream settings with a negative max_count, max_age or truncate_before
  invalid_checkpoint_name,   ///< a checkpoint name that is empty, over 200 bytes, or holds control bytes
  handler_failed,            ///< a subscription's handler threw; the event is retried
  subscription_running,      ///< start() on a subscription that is already running
  upcast_failed,             ///< an upcaster returned an error for a stored event (see the log)
  upcast_cycle,              ///< upcasters turned an event's type around in a loop
  partitions_mismatch,       ///< a consumer group member with another partition count than the group's
};

/// The category of keel::events::errc ("keel.events").
[[nodiscard]] const error_category& events_category() noexcept;

}  // namespace keel::events

KEEL_ERROR_ENUM(keel::events, events_category);
