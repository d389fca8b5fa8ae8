#pragma once
// The y-websocket protocol as y-protocols writes it, shared by the rooms (server.cpp) and the
// C++ client (client.cpp). Messages, in lib0's encoding (varuints, varuint-prefixed bytes):
//   sync      0, then 0 step 1 (a state vector) | 1 step 2 (an update) | 2 update (an update)
//   awareness 1, then an awareness update: count, (client id, clock, state JSON)*
//   auth      2, then 0 permission denied and a reason
//   query     3 (the client asks for every awareness state)
#include <keel/core/bytes.hpp>
#include <keel/core/varint.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace keel::sync::protocol {

constexpr std::uint64_t message_sync = 0;
constexpr std::uint64_t message_awareness = 1;
constexpr std::uint64_t message_auth = 2;
constexpr std::uint64_t message_query_awareness = 3;
constexpr std::uint64_t sync_step1 = 0;
constexpr std::uint64_t sync_step2 = 1;
constexpr std::uint64_t sync_update = 2;
constexpr std::uint64_t permission_denied = 0;

// lib0's varuints are LEB128 and its byte arrays varuint-prefixed: core's byte_reader reads
// both (varint(), take_varint_prefixed()); a message is at most keel::net's max_message_bytes.
constexpr std::size_t any_length = std::numeric_limits<std::size_t>::max();

inline void put_varuint(std::string& out, std::uint64_t v) {
  std::array<std::uint8_t, max_varint_size> buffer{};
  const auto n = encode_varint(v, buffer.data());
  // As chars: GCC 12 at -O3 mistakes a ranged append of the byte buffer for an overlapping copy.
  out.append(as_chars(bytes_view(buffer.data(), n)));
}

inline void put_var_bytes(std::string& out, bytes_view data) {
  put_varuint(out, data.size());
  out.append(as_chars(data));
}

inline std::string sync_message(std::uint64_t kind, bytes_view payload) {
  std::string out;
  out.reserve(payload.size() + 2 * max_varint_size);
  put_varuint(out, message_sync);
  put_varuint(out, kind);
  put_var_bytes(out, payload);
  return out;
}

inline std::string denied_message(std::string_view reason) {
  std::string out;
  put_varuint(out, message_auth);
  put_varuint(out, permission_denied);
  put_var_bytes(out, as_bytes(reason));
  return out;
}

}  // namespace keel::sync::protocol
