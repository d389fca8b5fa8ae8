#pragma once
/// @file keel/crdt.hpp
/// @brief keel::crdt: convergent data types. The text CRDT (keel/crdt/text.hpp), Yjs's update codec
/// (keel/crdt/yjs.hpp).
#include <keel/crdt/error.hpp>
#include <keel/crdt/text.hpp>
#include <keel/crdt/yjs.hpp>
