#include <keel/jobs/cron.hpp>

#include <charconv>
#include <chrono>
#include <string>
#include <vector>

namespace keel::jobs {
namespace {

std::vector<std::string_view> split(std::string_view text, char separator, bool skip_empty) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto end = text.find(separator, start);
    const auto part =
        text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (!part.empty() || !skip_empty) parts.push_back(part);
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return parts;
}

bool number(std::string_view text, int& out) {
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

// Sets the bits of one field; `low`/`high` are the field's bounds.
template <std::size_t N>
bool parse_field(std::string_view field, int low, int high, std::bitset<N>& bits, bool& any) {
  any = field == "*";
  for (const auto item : split(field, ',', false)) {
    auto range = item;
    int step = 1;
    if (const auto slash = item.find('/'); slash != std::string_view::npos) {
      if (!number(item.substr(slash + 1), step) || step < 1) return false;
      range = item.substr(0, slash);
    }
    int from = low, to = high;
    if (range != "*") {
      if (const auto dash = range.find('-'); dash != std::string_view::npos) {
        if (!number(range.substr(0, dash), from) || !number(range.substr(dash + 1), to)) return false;
      } else {
        if (!number(range, from)) return false;
        to = item.find('/') != std::string_view::npos ? high : from;  // "5/15" means 5-high/15
      }
    }
    if (from < low || to > high || from > to) return false;
    for (int v = from; v <= to; v += step) bits.set(static_cast<std::size_t>(v));
  }
  return true;
}

}  // namespace

result<cron_schedule> cron_schedule::parse(std::string_view expression) {
  const auto fields = split(expression, ' ', true);
  if (fields.size() != 5) return errc::invalid_schedule;
  cron_schedule s;
  bool any_minute = false, any_hour = false, any_month = false;
  std::bitset<8> weekdays;
  if (!parse_field(fields[0], 0, 59, s.minutes_, any_minute) ||
      !parse_field(fields[1], 0, 23, s.hours_, any_hour) ||
      !parse_field(fields[2], 1, 31, s.days_, s.any_day_) ||
      !parse_field(fields[3], 1, 12, s.months_, any_month) ||
      !parse_field(fields[4], 0, 7, weekdays, s.any_weekday_)) {
    return errc::invalid_schedule;
  }
  for (std::size_t d = 0; d < 7; ++d) s.weekdays_[d] = weekdays[d];
  if (weekdays[7]) s.weekdays_.set(0);
  return s;
}

bool cron_schedule::matches(timestamp t) const noexcept {
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day date{day};
  const hh_mm_ss time{floor<minutes>(t - day)};
  const auto weekday_index = weekday{day}.c_encoding();
  const bool day_of_month = days_[static_cast<unsigned>(date.day())];
  const bool day_of_week = weekdays_[weekday_index];
  // Vixie cron: with both day fields restricted, either may match; otherwise both must.
  const bool day_matches =
      (!any_day_ && !any_weekday_) ? (day_of_month || day_of_week) : (day_of_month && day_of_week);
  return minutes_[static_cast<std::size_t>(time.minutes().count())] &&
         hours_[static_cast<std::size_t>(time.hours().count())] &&
         months_[static_cast<unsigned>(date.month())] && day_matches;
}

}  // namespace keel::jobs
