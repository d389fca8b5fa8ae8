#pragma once
// The dashboard page's HTML, kept in its own file so the routes stay readable.
namespace keel::jobs_http::detail {

extern const char* const dashboard_html;

}  // namespace keel::jobs_http::detail
