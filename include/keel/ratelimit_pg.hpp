#pragma once
/// @file keel/ratelimit_pg.hpp
/// @brief keel::ratelimit_pg: the Postgres backend of keel::ratelimit.
#include <keel/ratelimit.hpp>
#include <keel/ratelimit_pg/postgres.hpp>
