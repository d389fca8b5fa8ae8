#pragma once
/// @file keel/crdt/version.hpp
/// @brief Replica ids and version vectors, shared by every keel::crdt type.
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
