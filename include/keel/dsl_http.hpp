#pragma once
/// @file keel/dsl_http.hpp
/// @brief keel::dsl_http: the access page (/dsl) and its API on a keel::net server
/// (keel/dsl_http/page.hpp).
#include <keel/dsl_http/page.hpp>
