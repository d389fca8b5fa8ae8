#pragma once
/// @file keel/sync.hpp
/// @brief keel::sync: real-time sync. Yjs rooms over keel::net, kept in Postgres
/// (keel/sync/server.hpp), their C++ client and keel::crdt documents shared through them
/// (keel/sync/client.hpp), and live table changes over WebSocket (keel/sync/changes.hpp).
#include <keel/sync/changes.hpp>
#include <keel/sync/client.hpp>
#include <keel/sync/error.hpp>
#include <keel/sync/server.hpp>
