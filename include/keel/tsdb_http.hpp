#pragma once
/// @file keel/tsdb_http.hpp
/// @brief keel::tsdb_http: the time series store's JSON routes and plot page on a keel::net server.
#include <keel/tsdb_http/routes.hpp>
