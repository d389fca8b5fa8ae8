#pragma once
/// @file keel/jobs_http.hpp
/// @brief keel::jobs_http: the job queue's dashboard and JSON API on a keel::net server.
#include <keel/jobs_http/dashboard.hpp>
