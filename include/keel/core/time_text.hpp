#pragma once
/// @file keel/core/time_text.hpp
/// @brief Timestamps as RFC 3339 text in UTC with microseconds ("2026-12-04T20:52:18.123456Z"),
/// as keel's log lines, HTTP APIs and commands print them.
#include <keel/core/clock.hpp>

#include <string>

namespace keel {

/// Appends `t` to `out` (no allocation beyond `out`'s growth: for hot paths such as logging).
void append_utc(std::string& out, timestamp t);
/// `t` as text.
[[nodiscard]] std::string format_utc(timestamp t);

}  // namespace keel
