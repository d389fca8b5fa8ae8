#pragma once
/// @file keel/dsl.hpp
/// @brief keel::dsl: a PRQL-compatible query language (so far its parser: keel/dsl/parser.hpp).
#include <keel/dsl/ast.hpp>
#include <keel/dsl/error.hpp>
#include <keel/dsl/parser.hpp>
