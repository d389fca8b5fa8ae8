#include <keel/crdt/error.hpp>

namespace keel::crdt {
namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::out_of_range:
      return "the position or length is past the end of the text: positions count code points, from 0 to "
             "size()";
    case errc::invalid_utf8:
      return "the inserted text is not valid UTF-8";
    case errc::malformed_delta:
      return "the delta does not decode (truncated, corrupt, or not made by keel::crdt); nothing of it was "
             "applied";
    case errc::malformed_update:
      return "the Yjs update or state vector does not decode as Yjs's format v1 (truncated, corrupt, text "
             "that "
             "is not UTF-8, or numbers past 2^53); nothing was made of it";
    case errc::counter_overflow:
      return "this replica's increments (or decrements) of the counter would pass 2^63 - 1; nothing changed: "
             "count in smaller units or start a new counter";
  }
  return "unknown keel.crdt error";
}

constexpr enum_error_category<errc> category{"keel.crdt", &describe};

}  // namespace

const error_category& crdt_category() noexcept {
  return category;
}

}  // namespace keel::crdt
