#pragma once
/// @file keel/dsl/catalog.hpp
/// @brief What a query may name and who may see what: tables and their typed columns, join
/// relationships, session attributes, and roles whose grants carry the access policy.
///
/// Deny by default: a role sees a table only through a grant, and of it only the columns the
/// grant lists. A grant's row filter is written in the DSL's own expression syntax over the
/// table's columns and session attributes (`tenant_id == @tenant && !archived`); the compiler
/// grafts it at the source of every reference to the table, so no later stage can undo it.
/// Several grants of a role on one table OR together (a column only some of them show is NULL
/// on the rows only the others admit); a role inherits its parents' grants.
#include <keel/dsl/error.hpp>

#include <boost/system/result.hpp>

#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace keel::dsl {

/// The types the compiler checks expressions with. `other` (arrays, json, uuid, …) can be
/// selected, compared for equality and passed through, nothing else.
enum class value_type : std::uint8_t {
  unknown,
  null,
  boolean,
  integer,
  decimal,
  text,
  date,
  time,
  timestamp,
  other
};

[[nodiscard]] std::string_view to_string(value_type t) noexcept;
/// The value_type of a Postgres type name as `format_type` prints it ("integer", "numeric(10,2)",
/// "character varying(40)", "timestamp with time zone", …).
[[nodiscard]] value_type value_type_of_pg(std::string_view pg_type) noexcept;

struct column {
  std::string name;
  value_type type = value_type::other;
  bool nullable = true;
};

struct table {
  std::string schema = "public";
  std::string name;
  std::vector<column> columns;
  /// Emitted in the schema the session's tenancy attribute names, not in `schema` (see tenancy).
  bool per_tenant = false;
  [[nodiscard]] const column* find(std::string_view column_name) const noexcept;
};

/// A foreign key: `from_table.from_column` references `to_table.to_column`.
struct relationship {
  std::string from_table;
  std::string from_column;
  std::string to_table;
  std::string to_column;
};

/// A value the application supplies per request (`@user_id`, `@tenant`, `@teams`): bound as a
/// parameter, never inlined; an array may be the right side of `in`.
struct session_attribute {
  std::string name;
  value_type type = value_type::text;
  bool array = false;
};

/// A session attribute's value (an array for `in @teams`); std::monostate is SQL NULL.
using session_value = std::variant<std::monostate, bool, std::int64_t, double, std::string,
                                   std::vector<std::int64_t>, std::vector<std::string>>;

/// The value of attribute `a` written as text, typed by its declaration: "42" for an integer,
/// "true"/"false", a decimal, text as is; an array attribute takes items separated by commas
/// ("a,b,c"; "" is the empty array). nullopt when the text is not a value of that type. For
/// session values from a command line or a form.
[[nodiscard]] std::optional<session_value> session_value_from_text(const session_attribute& a,
                                                                   std::string_view text);

/// Access to one table. Empty `columns` shows none; "*" shows all.
struct grant {
  std::string table;
  std::vector<std::string> columns;
  /// The rows the grant admits: a DSL expression over the table's columns (hidden ones too) and
  /// session attributes. Empty: every row.
  std::string row_filter;
  /// Per column, a DSL expression shown instead of the value ("null", `text.extract 1 3 email`).
  std::map<std::string, std::string> masks;
  /// Whether aggregates (`aggregate`, `group`, window functions) may run over this table's rows.
  bool aggregates = false;
  /// A condition over session attributes alone (`@plan == "pro"`): the grant applies only when
  /// it holds. Evaluated by the compiler, never sent to the database.
  std::string when;
};

struct role {
  std::string name;
  std::vector<std::string> inherits;
  std::vector<grant> grants;
  /// At most this many rows in any result of the role (0: no ceiling).
  std::int64_t max_rows = 0;
};

/// Schema per tenant: tables marked per_tenant live in the schema the session attribute
/// `schema_attribute` names, which must be one of `schemas` (identifiers never come from a request).
struct tenancy {
  std::string schema_attribute;
  std::vector<std::string> schemas;
};

/// Returned by catalog loading and compiler construction: what is wrong with the catalog.
struct catalog_error {
  std::string message;
};
/// Writes the message.
std::ostream& operator<<(std::ostream& out, const catalog_error& e);
/// For `result<T, catalog_error>::value()` on an error: throws std::invalid_argument with the message.
[[noreturn]] void throw_exception_from_error(const catalog_error& e, const boost::source_location& where);

class catalog {
 public:
  std::vector<table> tables;
  std::vector<relationship> relationships;
  std::vector<session_attribute> attributes;
  std::vector<role> roles;
  std::optional<tenancy> tenants;

  /// Reads the JSON form (docs/dsl.md gives it):
  /// `{"tables": [{"name", "schema"?, "per_tenant"?, "columns": [{"name", "type"}]}],
  ///   "relationships": [...], "session": [{"name", "type", "array"?}],
  ///   "roles": [{"name", "inherits"?, "max_rows"?, "grants": [{"table", "columns", "row_filter"?,
  ///   "masks"?, "aggregates"?, "when"?}]}], "tenancy"?: {"schema_attribute", "schemas"}}`.
  [[nodiscard]] static boost::system::result<catalog, catalog_error> from_json(std::string_view json);
  /// The JSON form of this catalog (from_json reads it back equal).
  [[nodiscard]] std::string to_json() const;

  [[nodiscard]] const table* find_table(std::string_view name) const noexcept;
  [[nodiscard]] const role* find_role(std::string_view name) const noexcept;
  [[nodiscard]] const session_attribute* find_attribute(std::string_view name) const noexcept;
};

}  // namespace keel::dsl
