#pragma once
/// @file keel/ratelimit.hpp
/// @brief keel::ratelimit: algorithms, policies, the limiter and its in-process backend.
/// The Redis and Postgres backends and the HTTP middleware have their own headers.
#include <keel/ratelimit/algorithms.hpp>
#include <keel/ratelimit/backend.hpp>
#include <keel/ratelimit/error.hpp>
#include <keel/ratelimit/limiter.hpp>
#include <keel/ratelimit/memory.hpp>
#include <keel/ratelimit/policy.hpp>
