#pragma once
/// @file keel/crdt/error.hpp
/// @brief `keel::crdt::errc` and its category "keel.crdt".
#include <keel/core/error.hpp>

namespace keel::crdt {

enum class errc {
  out_of_range = 1,  ///< a position or length past the end of the text
  invalid_utf8,      ///< inserted text that is not valid UTF-8
  malformed_delta,   ///< a delta or saved document that does not decode (truncated, corrupt, or not keel's)
  malformed_update,  ///< a Yjs update or state vector that does not decode as Yjs's format v1
  counter_overflow,  ///< a pn_counter replica's own total would pass 2^63 - 1
};

[[nodiscard]] const error_category& crdt_category() noexcept;

}  // namespace keel::crdt

KEEL_ERROR_ENUM(keel::crdt, crdt_category);
