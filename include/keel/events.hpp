#pragma once
/// @file keel/events.hpp
/// @brief keel::events: event sourcing on Postgres that never skips an event.
#include <keel/events/aggregate.hpp>
#include <keel/events/consumer_group.hpp>
#include <keel/events/error.hpp>
#include <keel/events/metrics.hpp>
#include <keel/events/projection.hpp>
#include <keel/events/store.hpp>
#include <keel/events/subscription.hpp>
#include <keel/events/upcast.hpp>
