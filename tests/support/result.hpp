#pragma once
// Lets doctest print keel::result<T> in failed assertions: the error's category, value and
// message, which is what a failing test needs to show.
#include <keel/core/error.hpp>

#include <doctest/doctest.h>

#include <string>

namespace doctest {
template <class T>
struct StringMaker<boost::system::result<T, keel::error_code>> {
  static String convert(const boost::system::result<T, keel::error_code>& r) {
    if (r.has_value()) return "result(value)";
    const std::string text = "result(error " + std::string(r.error().category().name()) + ":" +
                             std::to_string(r.error().value()) + " \"" + r.error().message() + "\")";
    return String(text.c_str());
  }
};
}  // namespace doctest
