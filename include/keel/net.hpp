#pragma once
/// @file keel/net.hpp
/// @brief keel::net: HTTP/1.1 + WebSocket server, router, JSON helpers, Prometheus metrics.
#include <keel/core/metrics.hpp>
#include <keel/net/error.hpp>
#include <keel/net/http.hpp>
#include <keel/net/json.hpp>
#include <keel/net/router.hpp>
#include <keel/net/server.hpp>
#include <keel/net/trust.hpp>
#include <keel/net/websocket.hpp>
