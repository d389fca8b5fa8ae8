#pragma once
/// @file keel/redis.hpp
/// @brief keel::redis: RESP2, a blocking connection, the pooled pipelined client, Lua scripts
/// and pub/sub. Asio completion tokens are in keel/redis/async.hpp (it includes Asio).
#include <keel/redis/client.hpp>
#include <keel/redis/connection.hpp>
#include <keel/redis/error.hpp>
#include <keel/redis/options.hpp>
#include <keel/redis/resp.hpp>
#include <keel/redis/script.hpp>
#include <keel/redis/subscriber.hpp>
