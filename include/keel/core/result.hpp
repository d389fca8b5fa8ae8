#pragma once
/// @file keel/core/result.hpp
/// @brief `keel::result<T>`; see keel/core/error.hpp for the error pattern.
#include <keel/core/error.hpp>
