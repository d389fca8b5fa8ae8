#pragma once
/// @file keel/jobs.hpp
/// @brief keel::jobs: a Postgres job queue that loses nothing.
#include <keel/jobs/client.hpp>
#include <keel/jobs/cron.hpp>
#include <keel/jobs/error.hpp>
#include <keel/jobs/metrics.hpp>
#include <keel/jobs/worker.hpp>
