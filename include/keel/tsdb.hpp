#pragma once
/// @file keel/tsdb.hpp
/// @brief keel::tsdb: compressed time series blocks, query operators and a Postgres store.
#include <keel/tsdb/codec.hpp>
#include <keel/tsdb/error.hpp>
#include <keel/tsdb/maintenance.hpp>
#include <keel/tsdb/query.hpp>
#include <keel/tsdb/schema.hpp>
#include <keel/tsdb/store.hpp>
