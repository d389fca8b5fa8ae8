#pragma once
/// @file keel/jobs/cron.hpp
/// @brief Five-field cron expressions ("minute hour day-of-month month day-of-week", UTC) for
/// periodic jobs.
#include <keel/core/clock.hpp>
#include <keel/jobs/error.hpp>

#include <bitset>
#include <string_view>

namespace keel::jobs {

/// A parsed cron expression. Each field takes `*`, a number, a range `a-b`, a step `*/n` or
/// `a-b/n`, and comma-separated lists of those; day of week runs 0–7 with 0 and 7 both Sunday.
/// As in Vixie cron, when both day fields are restricted a day matching either one fires.
class cron_schedule {
 public:
  /// @returns errc::invalid_schedule when `expression` is not five valid fields.
  [[nodiscard]] static result<cron_schedule> parse(std::string_view expression);

  /// True when the minute containing `t` (UTC) is one the schedule fires in.
  [[nodiscard]] bool matches(timestamp t) const noexcept;

 private:
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;     // 1..31
  std::bitset<13> months_;   // 1..12
  std::bitset<7> weekdays_;  // 0..6, Sunday = 0
  bool any_day_ = false;
  bool any_weekday_ = false;
};

}  // namespace keel::jobs
