#pragma once
// Last-writer-wins values in a dot kernel, shared by lww_register and lww_map: an entry's value
// is its stamp (varint), then the type's own bytes; among a key's live dots, the greatest
// (stamp, replica, counter) wins.
#include <keel/core/varint.hpp>
#include <keel/crdt/detail/dot_kernel.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keel::crdt::detail {

struct stamped {
  std::uint64_t stamp = 0;
  std::string_view rest;
};

/// The stamp and the bytes after it; empty if the value does not start with a varint.
inline std::optional<stamped> read_stamp(std::string_view value) noexcept {
  std::size_t at = 0;
  const auto stamp = decode_varint(as_bytes(value), at);
  if (!stamp) return std::nullopt;
  return stamped{*stamp, value.substr(at)};
}

inline std::string with_stamp(std::uint64_t stamp, std::string_view rest) {
  bytes raw;
  append_varint(raw, stamp);
  std::string out(as_chars(raw));
  out += rest;
  return out;
}

/// The winning live entry under `key`, or none. Values were checked on decoding, so every
/// live value has a stamp.
inline std::optional<stamped> lww_winner(const dot_kernel& kernel, std::string_view key) {
  std::optional<stamped> best;
  dot best_dot;
  for (const auto& d : kernel.dots_of(key)) {
    const auto s = read_stamp(kernel.entries().at(d).value);
    if (!s) continue;
    // Equal stamps: the higher replica id, then (only a hostile peer reuses a stamp) its counter.
    if (!best || s->stamp > best->stamp || (s->stamp == best->stamp && d > best_dot)) {
      best = s;
      best_dot = d;
    }
  }
  return best;
}

/// The clock's next reading: `now`, or one past the highest stamp seen if that is later.
inline std::uint64_t next_stamp(std::uint64_t now, std::uint64_t highest_seen) noexcept {
  const auto after = highest_seen == UINT64_MAX ? highest_seen : highest_seen + 1;
  return now > after ? now : after;
}

}  // namespace keel::crdt::detail
