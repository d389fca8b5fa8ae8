#include <keel/events/error.hpp>

namespace keel::events {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_stream_name:
      return "invalid stream name: use 1 to 200 bytes without whitespace or control characters, not starting "
             "with '$', named category-id (e.g. order-42)";
    case errc::invalid_event_type:
      return "invalid event type: use 1 to 200 bytes without control characters (e.g. order_placed)";
    case errc::invalid_json:
      return "an event's data is not valid JSON, or its metadata is not a JSON object; nothing of the batch "
             "was stored";
    case errc::event_too_large:
      return "an event's data and metadata exceed store_options::max_event_bytes; store large payloads "
             "elsewhere "
             "and reference them; nothing of the batch was stored";
    case errc::batch_too_large:
      return "more events in one append than store_options::max_batch_events; split the batch (several "
             "appends in one transaction stay atomic)";
    case errc::empty_batch:
      return "an append needs at least one event";
    case errc::duplicate_event_id:
      return "an event id is already used by a different event (another stream, type, data or metadata), or "
             "only part of this batch was stored before; give new events new ids, and retry a batch "
             "unchanged";
    case errc::stream_deleted:
      return "the stream is tombstoned and takes no more events; write to a new stream name";
    case errc::invalid_expected_version:
      return "invalid expected version: exact versions start at 0 (use no_stream() for a new stream)";
    case errc::invalid_position:
      return "invalid $all position: use the form transaction/position given by all_position::to_string()";
    case errc::invalid_read:
      return "invalid read: max_count must be at least 1 and at most store_options::max_page_events";
    case errc::invalid_metadata:
      return "invalid stream settings: max_count, max_age and truncate_before cannot be negative, and custom "
             "must be a JSON object";
    case errc::invalid_checkpoint_name:
      return "invalid checkpoint name: use 1 to 200 bytes without control characters (e.g. email-receipts)";
    case errc::handler_failed:
      return "the subscription's handler threw an exception; the event will be handled again (return an "
             "error instead of throwing to say why)";
    case errc::subscription_running:
      return "the subscription is already running; stop() it before starting it again";
    case errc::upcast_failed:
      return "an upcaster failed on a stored event (the log names its type, stream and version); fix the "
             "upcaster: the stored event is unchanged";
    case errc::partitions_mismatch:
      return "the consumer group exists with another number of partitions; give every member the group's "
             "count (or use a new group name to repartition)";
    case errc::upcast_cycle:
      return "the upcasters form a loop (a type upcast back to an earlier one); each upcaster must produce a "
             "newer type";
  }
  return "unknown keel.events error";
}

constexpr enum_error_category<errc> category{"keel.events", &describe};

}  // namespace

const error_category& events_category() noexcept {
  return category;
}

}  // namespace keel::events
