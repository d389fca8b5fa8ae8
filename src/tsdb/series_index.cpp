// The series index: one row per metric{labels}, its id, ordering policy and newest sealed time;
// label matchers compiled to parameterized SQL.
#include "store_state.hpp"

#include <algorithm>

namespace keel::tsdb {
namespace {

/// metric{name="value",...} with quotes and backslashes escaped: one text per series identity.
std::string series_key(std::string_view metric, const std::vector<label>& labels) {
  std::string key(metric);
  key += '{';
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (i != 0) key += ',';
    key += labels[i].name;
    key += "=\"";
    for (const char c : labels[i].value) {
      if (c == '"' || c == '\\') key += '\\';
      key += c;
    }
    key += '"';
  }
  key += '}';
  return key;
}

}  // namespace

result<std::int64_t> store::series(std::string_view metric, std::vector<label> labels, ordering policy) {
  if (metric.empty()) return errc::invalid_argument;
  std::sort(labels.begin(), labels.end(), [](const label& a, const label& b) { return a.name < b.name; });
  std::vector<std::string> names;
  std::vector<std::string> values;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i].name.empty() || (i > 0 && labels[i].name == labels[i - 1].name))
      return errc::invalid_argument;
    names.push_back(labels[i].name);
    values.push_back(labels[i].value);
  }
  const std::string key = series_key(metric, labels);
  if (auto it = state_->ids.find(key); it != state_->ids.end()) return it->second;
  // Race-safe across processes: the unique key decides, and the loser reads the winner's row.
  auto r = state_->conn.query(
      "INSERT INTO keel_tsdb_series (key, metric, label_names, label_values, policy) VALUES ($1, $2, $3, $4, "
      "$5) "
      "ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING id, policy",
      key, metric, names, values, static_cast<std::int16_t>(policy));
  if (!r) return r.error();
  const auto id = (*r)[0].get<std::int64_t>(0);
  const auto stored_policy = (*r)[0].get<std::int16_t>(1);
  if (!id || !stored_policy) return errc::invalid_argument;
  state_->ids.emplace(key, *id);
  auto& s = state_->series[*id];
  s.policy = static_cast<ordering>(*stored_policy);
  auto newest = state_->conn.query("SELECT newest_time FROM keel_tsdb_series WHERE id = $1", *id);
  if (!newest) return newest.error();
  if (auto v = (*newest)[0].get<std::optional<std::int64_t>>(0); v && *v) {
    detail::raise_to(s.newest, **v);
    detail::raise_to(s.sealed_newest, **v);
  }
  return *id;
}

namespace {

// A row of id, metric, label_names, label_values, policy.
result<series_info> series_from_row(const pg::row& row) {
  auto f =
      row.as<std::int64_t, std::string, std::vector<std::string>, std::vector<std::string>, std::int16_t>();
  if (!f) return f.error();
  auto& [id, metric, names, values, policy] = *f;
  series_info s{.id = id, .metric = std::move(metric), .policy = static_cast<ordering>(policy)};
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i)
    s.labels.push_back({names[i], values[i]});
  return s;
}

}  // namespace

result<std::vector<series_info>> store::select(std::string_view metric, std::span<const matcher> matchers) {
  // The SQL text is fixed per operator; names, values and patterns travel only as parameters.
  std::string sql =
      "SELECT id, metric, label_names, label_values, policy FROM keel_tsdb_series WHERE metric = $1";
  pg::params p;
  p.add(metric);
  int n = 1;
  for (const auto& m : matchers) {
    if (m.name.empty()) return errc::invalid_label_matcher;
    // Built with append: GCC 12 warns falsely (-Wrestrict) on "$" + std::to_string(...).
    std::string name(1, '$');
    name.append(std::to_string(++n));
    std::string value(1, '$');
    value.append(std::to_string(++n));
    // " AND <the label's value> <op> <the matched value, as text, anchored for a regex>"
    const auto clause = [&](std::string_view op, std::string_view before_value,
                            std::string_view after_value) {
      sql.append(" AND coalesce(label_values[array_position(label_names, ")
          .append(name)
          .append("::text)], '')")
          .append(op)
          .append(before_value)
          .append(value)
          .append(after_value);
    };
    switch (m.op) {
      case match::equal:
        clause(" = ", "", "::text");
        break;
      case match::not_equal:
        clause(" <> ", "", "::text");
        break;
      case match::regex:
        clause(" ~ ", "('^(?:' || ", "::text || ')$')");
        break;
      case match::not_regex:
        clause(" !~ ", "('^(?:' || ", "::text || ')$')");
        break;
    }
    p.add(m.name);
    p.add(m.value);
  }
  sql += " ORDER BY id";
  auto r = state_->conn.query_params(sql, p);
  if (!r) {
    if (state_->conn.last_error().sqlstate == "2201B") return errc::invalid_label_matcher;
    return r.error();
  }
  std::vector<series_info> out;
  for (const auto row : *r) {
    auto s = series_from_row(row);
    if (!s) return s.error();
    out.push_back(std::move(*s));
  }
  return out;
}

result<std::optional<series_info>> store::describe(std::int64_t series) {
  auto r = state_->conn.query(
      "SELECT id, metric, label_names, label_values, policy FROM keel_tsdb_series WHERE id = $1", series);
  if (!r) return r.error();
  if (r->empty()) return std::optional<series_info>();
  auto s = series_from_row((*r)[0]);
  if (!s) return s.error();
  return std::optional<series_info>(std::move(*s));
}

}  // namespace keel::tsdb
