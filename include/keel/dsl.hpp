#pragma once
/// @file keel/dsl.hpp
/// @brief keel::dsl: a PRQL-compatible query language compiled to parameterized SQL under
/// access policies: the parser (keel/dsl/parser.hpp), the catalog and roles
/// (keel/dsl/catalog.hpp) and the compiler (keel/dsl/compiler.hpp).
#include <keel/dsl/ast.hpp>
#include <keel/dsl/catalog.hpp>
#include <keel/dsl/compiler.hpp>
#include <keel/dsl/error.hpp>
#include <keel/dsl/parser.hpp>
