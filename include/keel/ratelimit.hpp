#pragma once
/// @file keel/ratelimit.hpp
/// @brief keel::ratelimit: algorithms, policies, the limiter and its in-process backend.
/// The Redis and Postgres backends and the keel::net middleware are components of their own:
/// keel/ratelimit_redis.hpp, keel/ratelimit_pg.hpp, keel/ratelimit_http.hpp.
#include <keel/ratelimit/algorithms.hpp>
#include <keel/ratelimit/backend.hpp>
#include <keel/ratelimit/error.hpp>
#include <keel/ratelimit/limiter.hpp>
#include <keel/ratelimit/memory.hpp>
#include <keel/ratelimit/policy.hpp>
