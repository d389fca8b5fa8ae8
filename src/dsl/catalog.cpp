// The catalog: lookups, Postgres type names to the compiler's types, and the JSON form.
#include <keel/dsl/catalog.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <ostream>
#include <stdexcept>
#include <string>

namespace keel::dsl {
namespace {

namespace json = boost::json;

struct type_name {
  value_type type;
  std::string_view name;
};
constexpr type_name type_names[] = {
    {value_type::unknown, "unknown"}, {value_type::null, "null"},       {value_type::boolean, "boolean"},
    {value_type::integer, "integer"}, {value_type::decimal, "decimal"}, {value_type::text, "text"},
    {value_type::date, "date"},       {value_type::time, "time"},       {value_type::timestamp, "timestamp"},
    {value_type::other, "other"},
};

using load_result = boost::system::result<catalog, catalog_error>;

catalog_error fail(std::string message) {
  return catalog_error{std::move(message)};
}

// Reads an optional string member; a member of another kind is an error named by its path.
bool read_string(const json::object& o, std::string_view key, std::string& out, std::string& error,
                 std::string_view where) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return true;
  if (!v->is_string()) {
    error = std::string(where) + "." + std::string(key) + " must be a string";
    return false;
  }
  out = std::string(v->as_string());
  return true;
}

bool read_strings(const json::object& o, std::string_view key, std::vector<std::string>& out,
                  std::string& error, std::string_view where) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return true;
  if (!v->is_array()) {
    error = std::string(where) + "." + std::string(key) + " must be an array of strings";
    return false;
  }
  for (const auto& item : v->as_array()) {
    if (!item.is_string()) {
      error = std::string(where) + "." + std::string(key) + " must be an array of strings";
      return false;
    }
    out.emplace_back(item.as_string());
  }
  return true;
}

const json::array* array_member(const json::object& o, std::string_view key, std::string& error) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return nullptr;
  if (!v->is_array()) error = std::string(key) + " must be an array";
  return v->if_array();
}

std::optional<value_type> parse_type(std::string_view name) {
  for (const auto& t : type_names) {
    if (t.name == name) return t.type;
  }
  const auto pg = value_type_of_pg(name);
  if (pg != value_type::other || name == "other") return pg;
  return std::nullopt;
}

}  // namespace

std::ostream& operator<<(std::ostream& out, const catalog_error& e) {
  return out << e.message;
}

void throw_exception_from_error(const catalog_error& e, const boost::source_location& /*where*/) {
  throw std::invalid_argument("keel::dsl catalog: " + e.message);
}

std::string_view to_string(value_type t) noexcept {
  for (const auto& n : type_names) {
    if (n.type == t) return n.name;
  }
  return "other";
}

value_type value_type_of_pg(std::string_view pg) noexcept {
  const auto starts = [&](std::string_view prefix) { return pg.substr(0, prefix.size()) == prefix; };
  if (starts("smallint") || starts("integer") || starts("bigint") || pg == "int" || pg == "int2" ||
      pg == "int4" || pg == "int8") {
    return value_type::integer;
  }
  if (starts("numeric") || starts("decimal") || starts("real") || starts("double precision") ||
      pg == "float4" || pg == "float8") {
    return value_type::decimal;
  }
  if (starts("text") || starts("character") || starts("varchar") || starts("char") || pg == "citext" ||
      pg == "name") {
    return value_type::text;
  }
  if (pg == "boolean" || pg == "bool") return value_type::boolean;
  if (pg == "date") return value_type::date;
  if (starts("timestamp")) return value_type::timestamp;
  if (starts("time")) return value_type::time;
  return value_type::other;
}

std::optional<session_value> session_value_from_text(const session_attribute& a, std::string_view text) {
  using value = session_value;
  const auto integer = [](std::string_view t) -> std::optional<std::int64_t> {
    std::int64_t n = 0;
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
    if (ec != std::errc{} || p != t.data() + t.size()) return std::nullopt;
    return n;
  };
  if (a.array) {
    std::vector<std::string> items;
    for (std::size_t at = 0; !text.empty() && at <= text.size();) {
      const auto comma = text.find(',', at);
      items.emplace_back(
          text.substr(at, comma == std::string_view::npos ? std::string_view::npos : comma - at));
      if (comma == std::string_view::npos) break;
      at = comma + 1;
    }
    if (a.type != value_type::integer) return value{std::move(items)};
    std::vector<std::int64_t> numbers;
    for (const auto& item : items) {
      auto n = integer(item);
      if (!n) return std::nullopt;
      numbers.push_back(*n);
    }
    return value{std::move(numbers)};
  }
  switch (a.type) {
    case value_type::integer: {
      auto n = integer(text);
      if (!n) return std::nullopt;
      return value{*n};
    }
    case value_type::boolean:
      if (text != "true" && text != "false") return std::nullopt;
      return value{text == "true"};
    case value_type::decimal: {
      double d = 0;
      auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
      if (ec != std::errc{} || p != text.data() + text.size()) return std::nullopt;
      return value{d};
    }
    default:
      return value{std::string(text)};
  }
}

const column* table::find(std::string_view column_name) const noexcept {
  for (const auto& c : columns) {
    if (c.name == column_name) return &c;
  }
  return nullptr;
}

const table* catalog::find_table(std::string_view name) const noexcept {
  for (const auto& t : tables) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const role* catalog::find_role(std::string_view name) const noexcept {
  for (const auto& r : roles) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

const session_attribute* catalog::find_attribute(std::string_view name) const noexcept {
  for (const auto& a : attributes) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

load_result catalog::from_json(std::string_view text) {
  boost::system::error_code ec;
  auto parsed = json::parse(text, ec);
  if (ec) return fail("the catalog is not valid JSON: " + ec.message());
  if (!parsed.is_object()) return fail(R"(the catalog must be a JSON object with "tables" and "roles")");
  const auto& root = parsed.as_object();
  catalog out;
  std::string error;

  if (const auto* tables = array_member(root, "tables", error)) {
    for (const auto& tv : *tables) {
      if (!tv.is_object()) return fail("tables[] must be objects");
      const auto& to = tv.as_object();
      table t;
      if (!read_string(to, "name", t.name, error, "table") ||
          !read_string(to, "schema", t.schema, error, "table")) {
        return fail(error);
      }
      if (t.name.empty()) return fail("a table has no \"name\"");
      if (const auto* pt = to.if_contains("per_tenant")) {
        if (!pt->is_bool()) return fail("table " + t.name + ": per_tenant must be true or false");
        t.per_tenant = pt->as_bool();
      }
      const auto* columns = array_member(to, "columns", error);
      if (columns == nullptr) return fail("table " + t.name + " has no \"columns\" array");
      for (const auto& cv : *columns) {
        if (!cv.is_object()) return fail("table " + t.name + ": columns[] must be objects");
        const auto& co = cv.as_object();
        column c;
        std::string type_text = "other";
        if (!read_string(co, "name", c.name, error, t.name) ||
            !read_string(co, "type", type_text, error, t.name)) {
          return fail(error);
        }
        const auto type = parse_type(type_text);
        if (c.name.empty()) return fail("table " + t.name + ": a column has no \"name\"");
        if (!type)
          return fail("table " + t.name + ", column " + c.name + ": unknown type \"" + type_text + "\"");
        c.type = *type;
        if (const auto* n = co.if_contains("nullable"); n != nullptr && n->is_bool())
          c.nullable = n->as_bool();
        t.columns.push_back(std::move(c));
      }
      out.tables.push_back(std::move(t));
    }
  }
  if (!error.empty()) return fail(error);

  if (const auto* rels = array_member(root, "relationships", error)) {
    for (const auto& rv : *rels) {
      if (!rv.is_object()) return fail("relationships[] must be objects");
      const auto& ro = rv.as_object();
      relationship r;
      if (!read_string(ro, "from_table", r.from_table, error, "relationship") ||
          !read_string(ro, "from_column", r.from_column, error, "relationship") ||
          !read_string(ro, "to_table", r.to_table, error, "relationship") ||
          !read_string(ro, "to_column", r.to_column, error, "relationship")) {
        return fail(error);
      }
      out.relationships.push_back(std::move(r));
    }
  }
  if (!error.empty()) return fail(error);

  if (const auto* attrs = array_member(root, "session", error)) {
    for (const auto& av : *attrs) {
      if (!av.is_object()) return fail("session[] must be objects");
      const auto& ao = av.as_object();
      session_attribute a;
      std::string type_text = "text";
      if (!read_string(ao, "name", a.name, error, "session") ||
          !read_string(ao, "type", type_text, error, "session")) {
        return fail(error);
      }
      const auto type = parse_type(type_text);
      if (!type) return fail("session attribute " + a.name + ": unknown type \"" + type_text + "\"");
      a.type = *type;
      if (const auto* arr = ao.if_contains("array"); arr != nullptr && arr->is_bool())
        a.array = arr->as_bool();
      out.attributes.push_back(std::move(a));
    }
  }
  if (!error.empty()) return fail(error);

  if (const auto* roles = array_member(root, "roles", error)) {
    for (const auto& rv : *roles) {
      if (!rv.is_object()) return fail("roles[] must be objects");
      const auto& ro = rv.as_object();
      role r;
      if (!read_string(ro, "name", r.name, error, "role") ||
          !read_strings(ro, "inherits", r.inherits, error, "role")) {
        return fail(error);
      }
      if (const auto* m = ro.if_contains("max_rows")) {
        if (!m->is_int64() || m->as_int64() < 0)
          return fail("role " + r.name + ": max_rows must be a count ≥ 0");
        r.max_rows = m->as_int64();
      }
      if (const auto* grants = array_member(ro, "grants", error)) {
        for (const auto& gv : *grants) {
          if (!gv.is_object()) return fail("role " + r.name + ": grants[] must be objects");
          const auto& go = gv.as_object();
          grant g;
          const std::string where = "role " + r.name + " grant";
          if (!read_string(go, "table", g.table, error, where) ||
              !read_strings(go, "columns", g.columns, error, where) ||
              !read_string(go, "row_filter", g.row_filter, error, where) ||
              !read_string(go, "when", g.when, error, where)) {
            return fail(error);
          }
          if (const auto* a = go.if_contains("aggregates")) {
            if (!a->is_bool()) return fail(where + ": aggregates must be true or false");
            g.aggregates = a->as_bool();
          }
          if (const auto* masks = go.if_contains("masks")) {
            if (!masks->is_object()) return fail(where + ": masks must map column names to expressions");
            for (const auto& [column_name, expression] : masks->as_object()) {
              if (!expression.is_string()) {
                return fail(where + ": the mask of " + std::string(column_name) +
                            " must be a string (a DSL expression)");
              }
              g.masks.emplace(std::string(column_name), std::string(expression.as_string()));
            }
          }
          r.grants.push_back(std::move(g));
        }
      }
      if (!error.empty()) return fail(error);
      out.roles.push_back(std::move(r));
    }
  }
  if (!error.empty()) return fail(error);

  if (const auto* tv = root.if_contains("tenancy")) {
    if (!tv->is_object()) return fail("tenancy must be an object");
    tenancy t;
    if (!read_string(tv->as_object(), "schema_attribute", t.schema_attribute, error, "tenancy") ||
        !read_strings(tv->as_object(), "schemas", t.schemas, error, "tenancy")) {
      return fail(error);
    }
    out.tenants = std::move(t);
  }
  return out;
}

std::string catalog::to_json() const {
  json::object root;
  json::array tables_out;
  for (const auto& t : tables) {
    json::object to;
    to["schema"] = t.schema;
    to["name"] = t.name;
    if (t.per_tenant) to["per_tenant"] = true;
    json::array columns;
    for (const auto& c : t.columns) {
      json::object co;
      co["name"] = c.name;
      co["type"] = std::string(to_string(c.type));
      if (!c.nullable) co["nullable"] = false;
      columns.emplace_back(std::move(co));
    }
    to["columns"] = std::move(columns);
    tables_out.emplace_back(std::move(to));
  }
  root["tables"] = std::move(tables_out);
  json::array rels;
  for (const auto& r : relationships) {
    rels.emplace_back(json::object{{"from_table", r.from_table},
                                   {"from_column", r.from_column},
                                   {"to_table", r.to_table},
                                   {"to_column", r.to_column}});
  }
  root["relationships"] = std::move(rels);
  json::array attrs;
  for (const auto& a : attributes) {
    json::object ao{{"name", a.name}, {"type", std::string(to_string(a.type))}};
    if (a.array) ao["array"] = true;
    attrs.emplace_back(std::move(ao));
  }
  root["session"] = std::move(attrs);
  json::array roles_out;
  for (const auto& r : roles) {
    json::object ro;
    ro["name"] = r.name;
    if (!r.inherits.empty()) ro["inherits"] = json::value_from(r.inherits);
    if (r.max_rows != 0) ro["max_rows"] = r.max_rows;
    json::array grants;
    for (const auto& g : r.grants) {
      json::object go;
      go["table"] = g.table;
      go["columns"] = json::value_from(g.columns);
      if (!g.row_filter.empty()) go["row_filter"] = g.row_filter;
      if (!g.when.empty()) go["when"] = g.when;
      if (g.aggregates) go["aggregates"] = true;
      if (!g.masks.empty()) {
        json::object masks;
        for (const auto& [k, v] : g.masks) masks[k] = v;
        go["masks"] = std::move(masks);
      }
      grants.emplace_back(std::move(go));
    }
    ro["grants"] = std::move(grants);
    roles_out.emplace_back(std::move(ro));
  }
  root["roles"] = std::move(roles_out);
  if (tenants) {
    root["tenancy"] = json::object{{"schema_attribute", tenants->schema_attribute},
                                   {"schemas", json::value_from(tenants->schemas)}};
  }
  return json::serialize(root);
}

}  // namespace keel::dsl
