#pragma once
// What the dsl tests share: the Chinook-like database (tests/data/dsl/chinook.sql) loaded into
// a scratch schema, its catalog, and results read as text cells for comparison.
#include <keel/dsl.hpp>
#include <keel/dsl_pg.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <support/pg.hpp>

namespace keel::test::dsl_support {

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The music store in a schema of its own.
struct chinook {
  scratch_schema schema;
  pg::connection conn = schema.connect();
  chinook() { REQUIRE(conn.execute(read_file(KEEL_TEST_DATA_DIR "/dsl/chinook.sql"))); }
  [[nodiscard]] dsl::catalog catalog() { return dsl::introspect(conn, {schema.name}).value(); }
};

using table_text = std::vector<std::vector<std::optional<std::string>>>;

inline table_text cells(const pg::rows& rows) {
  table_text out;
  for (const auto& row : rows) {
    std::vector<std::optional<std::string>> r;
    for (std::size_t c = 0; c < rows.columns(); ++c) r.push_back(row.text(c).value());
    out.push_back(std::move(r));
  }
  return out;
}

// Equal as values: numbers within a relative 1e-9 (numeric and double print differently), the
// rest as text.
inline bool same_cell(const std::optional<std::string>& a, const std::optional<std::string>& b) {
  if (!a || !b) return !a && !b;
  if (*a == *b) return true;
  char* end_a = nullptr;
  char* end_b = nullptr;
  const double x = std::strtod(a->c_str(), &end_a);
  const double y = std::strtod(b->c_str(), &end_b);
  if (a->empty() || b->empty() || *end_a != '\0' || *end_b != '\0') return false;
  return std::fabs(x - y) <= 1e-9 * std::max({1.0, std::fabs(x), std::fabs(y)});
}

inline std::string show(const table_text& t, std::size_t max_rows = 5) {
  std::string out;
  for (std::size_t i = 0; i < t.size() && i < max_rows; ++i) {
    out += "  (";
    for (std::size_t c = 0; c < t[i].size(); ++c) out += (c > 0 ? ", " : "") + t[i][c].value_or("NULL");
    out += ")\n";
  }
  if (t.size() > max_rows) out += "  … " + std::to_string(t.size()) + " rows\n";
  return out;
}

// "" when equal, else where they differ.
inline std::string difference(const table_text& a, const table_text& b) {
  if (a.size() != b.size()) return std::to_string(a.size()) + " rows against " + std::to_string(b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) {
      return "row " + std::to_string(i + 1) + ": " + std::to_string(a[i].size()) + " columns against " +
             std::to_string(b[i].size());
    }
    for (std::size_t c = 0; c < a[i].size(); ++c) {
      if (!same_cell(a[i][c], b[i][c])) {
        return "row " + std::to_string(i + 1) + ", column " + std::to_string(c + 1) + ": " +
               a[i][c].value_or("NULL") + " against " + b[i][c].value_or("NULL");
      }
    }
  }
  return "";
}

}  // namespace keel::test::dsl_support
