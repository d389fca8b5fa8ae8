#pragma once
/// @file keel/crdt/version.hpp
/// @brief Replica ids and version vectors, shared by every keel::crdt type.
///
/// keel/crdt/text.hpp still declares the same two aliases as well (declaring an alias again
/// with the same type is allowed); they can go from there once text.hpp is next edited.
#include <cstdint>
#include <map>

namespace keel::crdt {

/// Who made a change: a replica's id, unique among the replicas of a document (Yjs's client id).
using replica_id = std::uint64_t;

/// For each replica, how many of its changes a replica has seen (Yjs's state vector): a delta
/// since it holds exactly what is missing. What a "change" counts is the type's own: characters
/// for text, operations for the counter, dots for the causal types.
using version_vector = std::map<replica_id, std::uint64_t>;

}  // namespace keel::crdt
