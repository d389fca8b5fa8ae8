#pragma once
// The /events page: one HTML document with inline CSS and JS.
namespace keel::events_http::detail {
extern const char* const page_html;
}  // namespace keel::events_http::detail
