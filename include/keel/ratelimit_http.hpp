#pragma once
/// @file keel/ratelimit_http.hpp
/// @brief keel::ratelimit_http: keel::ratelimit as a keel::net middleware (429, RateLimit headers).
#include <keel/ratelimit.hpp>
#include <keel/ratelimit_http/middleware.hpp>
