#pragma once
/// @file keel/ratelimit_redis.hpp
/// @brief keel::ratelimit_redis: the Redis backend of keel::ratelimit. Asio completion tokens
/// are in keel/ratelimit_redis/redis_asio.hpp (it includes Asio).
#include <keel/ratelimit.hpp>
#include <keel/ratelimit_redis/redis.hpp>
