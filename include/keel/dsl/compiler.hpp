#pragma once
/// @file keel/dsl/compiler.hpp
/// @brief PRQL to parameterized PostgreSQL under a role's access policy.
///
/// @code
/// auto compiler = keel::dsl::compiler::create(catalog).value();
/// keel::dsl::session who{.role = "support", .attributes = {{"tenant", std::int64_t{7}}}};
/// auto query = compiler.compile("from tickets | filter status == $1 | take 20", who);
/// if (!query) std::cerr << query.error().render(text);
/// auto bound = query.value()->bind(who, {"open"});   // sql + every $n's value, in order
/// @endcode
///
/// The SQL holds no text of the query: string literals, `$1`/`$name` parameters and session
/// attributes become `$n` parameters; table and column names are the catalog's, quoted;
/// derived columns get generated aliases (their PRQL names are in `columns()`). Every table
/// reference — in `from`, `join`, `let`, `append` — reads through its policy: the role's row
/// filter at the source, hidden columns out of scope (naming one is an error that says which
/// and for whom), masks in place, aggregates refused where not granted, and the role's row
/// ceiling on the result.
#include <keel/dsl/catalog.hpp>
#include <keel/dsl/error.hpp>
#include <keel/dsl/parser.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace keel::dsl {

/// Who runs the query: a role of the catalog and the attributes its policies read.
struct session {
  std::string role;
  std::map<std::string, session_value, std::less<>> attributes;
};

/// A caller's value for `$1` (by position) or `$name`; std::nullopt is NULL.
using argument = std::optional<std::string>;

struct arguments {
  std::vector<argument> positional;                    ///< $1, $2, …
  std::map<std::string, argument, std::less<>> named;  ///< $name
};

/// SQL and its parameter values, ready for keel::pg (values in text form; NULL as nullopt).
struct bound_query {
  std::string sql;
  std::vector<std::optional<std::string>> values;
};

/// Where a `$n` of the compiled SQL takes its value from.
struct parameter_slot {
  enum class source : std::uint8_t { literal, positional, named, attribute };
  source from = source::literal;
  std::string text;          ///< the literal's value, the parameter's name or the attribute's name
  std::size_t position = 0;  ///< for positional: 1-based
};

struct output_column {
  std::string name;  ///< the PRQL name ("total"), or "_N" for an unnamed expression
  value_type type = value_type::unknown;
};

/// A compiled query: immutable and shared by every caller of the same text, role and policy.
class compiled_query {
 public:
  [[nodiscard]] const std::string& sql() const noexcept { return sql_; }
  [[nodiscard]] const std::vector<output_column>& columns() const noexcept { return columns_; }
  [[nodiscard]] const std::vector<parameter_slot>& parameters() const noexcept { return slots_; }
  /// The SQL with every parameter's value: literals from the query, the caller's arguments and
  /// the session's attributes. @returns a diagnostic (errc::missing_argument,
  /// errc::unknown_session_attribute) naming the parameter when one is missing.
  [[nodiscard]] parse_result<bound_query> bind(const session& who, const arguments& args = {}) const;

  // Built by the compiler.
  compiled_query(std::string sql, std::vector<output_column> columns, std::vector<parameter_slot> slots)
      : sql_(std::move(sql)), columns_(std::move(columns)), slots_(std::move(slots)) {}

 private:
  std::string sql_;
  std::vector<output_column> columns_;
  std::vector<parameter_slot> slots_;
};

struct compiler_options {
  /// Compiled queries kept, least recently used evicted beyond it (0: no cache).
  std::size_t cache_capacity = 1024;
};

class compiler {
 public:
  /// Checks the catalog (every grant's table, columns, filter, masks and condition; role
  /// inheritance without cycles) and parses its policy expressions once.
  [[nodiscard]] static boost::system::result<compiler, catalog_error> create(catalog c,
                                                                             compiler_options options = {});

  /// Compiles `text` for `who` (cached per text, role and the session values the policy folds).
  /// Never throws for bad input: the diagnostic carries the place in `text`.
  [[nodiscard]] parse_result<std::shared_ptr<const compiled_query>> compile(std::string_view text,
                                                                            const session& who) const;
  /// compile() without the cache, for benchmarks of the cold path.
  [[nodiscard]] parse_result<std::shared_ptr<const compiled_query>> compile_uncached(
      std::string_view text, const session& who) const;

  /// Defense in depth: the catalog as a Postgres script — ROW LEVEL SECURITY on every table, per
  /// role a permissive SELECT policy for each grant (its row filter and condition, session
  /// attributes read from the settings `keel.<name>`), the columns every grant shows unmasked
  /// granted by column privileges, and comments for what RLS cannot say (masks, per-row
  /// columns, aggregates, row ceilings). Catalog roles are database roles of the same name.
  [[nodiscard]] parse_result<std::string> rls_script() const;

  [[nodiscard]] const dsl::catalog& catalog() const noexcept;

  compiler(compiler&&) noexcept;
  compiler& operator=(compiler&&) noexcept;
  ~compiler();

  struct state;

 private:
  explicit compiler(std::unique_ptr<state> s) noexcept;
  std::unique_ptr<state> state_;
};

}  // namespace keel::dsl
