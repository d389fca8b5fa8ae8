#pragma once
/// @file keel/dsl_pg.hpp
/// @brief keel::dsl_pg: keel::dsl on Postgres — catalog introspection and running compiled
/// queries through keel::pg (keel/dsl_pg/dsl_pg.hpp).
#include <keel/dsl_pg/dsl_pg.hpp>
