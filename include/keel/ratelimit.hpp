#pragma once
/// @file keel/ratelimit.hpp
/// @brief keel::ratelimit: algorithms, policies, the limiter, its in-process backend and the
/// keel::net middleware.
/// The Redis and Postgres backends have their own headers (redis.hpp, postgres.hpp).
#include <keel/ratelimit/algorithms.hpp>
#include <keel/ratelimit/backend.hpp>
#include <keel/ratelimit/error.hpp>
#include <keel/ratelimit/limiter.hpp>
#include <keel/ratelimit/memory.hpp>
#include <keel/ratelimit/middleware.hpp>
#include <keel/ratelimit/policy.hpp>
