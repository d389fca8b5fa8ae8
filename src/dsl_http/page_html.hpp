#pragma once
// The /dsl page: one HTML document with inline CSS and JS.
namespace keel::dsl_http::detail {
extern const char* const page_html;
}  // namespace keel::dsl_http::detail
