#pragma once
/// @file keel/events_http.hpp
/// @brief keel::events_http: the events page and its JSON API on a keel::net server.
#include <keel/events_http/page.hpp>
