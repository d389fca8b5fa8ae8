#pragma once
/// @file keel/crdt.hpp
/// @brief keel::crdt: convergent data types. The text CRDT (keel/crdt/text.hpp), the
/// PN-counter, the LWW and multi-value registers, the OR-set, the LWW map and the OR-map of
/// nested CRDTs; each exchanges deltas since a version vector. And Yjs's update codec
/// (keel/crdt/yjs.hpp).
#include <keel/crdt/error.hpp>
#include <keel/crdt/lww_map.hpp>
#include <keel/crdt/lww_register.hpp>
#include <keel/crdt/mv_register.hpp>
#include <keel/crdt/or_map.hpp>
#include <keel/crdt/or_set.hpp>
#include <keel/crdt/pn_counter.hpp>
#include <keel/crdt/text.hpp>
#include <keel/crdt/version.hpp>
#include <keel/crdt/yjs.hpp>
