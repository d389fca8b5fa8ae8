// keel::dsl on Postgres: the catalog read from pg_catalog, and compiled queries run through
// keel::pg with every value a parameter.
#include <keel/core/log.hpp>
#include <keel/dsl_pg/dsl_pg.hpp>
#include <keel/pg/params.hpp>

#include <boost/json.hpp>

#include <string>

namespace keel::dsl {
namespace {

constexpr std::string_view columns_sql = R"sql(
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY n.nspname, c.relname, a.attnum)sql";

constexpr std::string_view foreign_keys_sql = R"sql(
SELECT s.relname, sa.attname, t.relname, ta.attname
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class s ON s.oid = k.conrelid
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_class t ON t.oid = k.confrelid
CROSS JOIN LATERAL unnest(k.conkey, k.confkey) AS pair(source_column, target_column)
JOIN pg_catalog.pg_attribute sa ON sa.attrelid = s.oid AND sa.attnum = pair.source_column
JOIN pg_catalog.pg_attribute ta ON ta.attrelid = t.oid AND ta.attnum = pair.target_column
WHERE k.contype = 'f' AND sn.nspname = ANY($1::text[])
ORDER BY s.relname, k.conname, sa.attnum)sql";

result<pg::rows> bind_and_run(pg::connection& conn, const compiled_query& query, const session& who,
                              const arguments& args) {
  auto bound = query.bind(who, args);
  if (!bound) {
    log::warn("keel::dsl: a query could not be bound", {{"reason", bound.error().message}});
    return make_error_code(bound.error().code);
  }
  pg::params values;
  values.reserve(bound->values.size());
  for (const auto& v : bound->values) values.add(v);
  return conn.query_params(bound->sql, values);
}

constexpr std::string_view tables_sql = R"sql(
SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY n.nspname, c.relname)sql";

constexpr std::string_view policies_sql = R"sql(
SELECT schemaname::text, tablename::text, policyname::text, array_to_string(roles, ','), cmd, permissive = 'PERMISSIVE',
       COALESCE(qual, '')
FROM pg_catalog.pg_policies WHERE schemaname = ANY($1::text[])
ORDER BY schemaname, tablename, policyname)sql";

constexpr std::string_view column_privileges_sql = R"sql(
SELECT table_schema::text, table_name::text, grantee::text, column_name::text
FROM information_schema.column_privileges
WHERE privilege_type = 'SELECT' AND table_schema = ANY($1::text[])
ORDER BY table_schema, table_name, grantee, column_name)sql";

}  // namespace

result<access_graph> introspect_access(pg::connection& conn, const std::vector<std::string>& schemas) {
  access_graph out;
  auto tables = conn.query(tables_sql, schemas);
  if (!tables) return tables.error();
  for (const auto& row : *tables) {
    auto f = row.as<std::string, std::string, bool, bool>();
    if (!f) return f.error();
    auto& [schema, table_name, enabled, forced] = *f;
    out.tables.push_back({schema, table_name, enabled, forced, {}, {}});
  }
  const auto find = [&](const std::string& schema, const std::string& name) -> table_access* {
    for (auto& t : out.tables) {
      if (t.schema == schema && t.table == name) return &t;
    }
    return nullptr;
  };
  auto policies = conn.query(policies_sql, schemas);
  if (!policies) return policies.error();
  for (const auto& row : *policies) {
    auto f = row.as<std::string, std::string, std::string, std::string, std::string, bool, std::string>();
    if (!f) return f.error();
    auto& [schema, table_name, name, roles, command, permissive, qual] = *f;
    auto* t = find(schema, table_name);
    if (t == nullptr) continue;
    rls_policy p{name, {}, command, permissive, qual};
    std::size_t at = 0;
    while (at <= roles.size()) {
      const auto comma = roles.find(',', at);
      const auto piece = roles.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
      if (!piece.empty()) p.roles.push_back(piece);
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
    t->policies.push_back(std::move(p));
  }
  auto columns = conn.query(column_privileges_sql, schemas);
  if (!columns) return columns.error();
  for (const auto& row : *columns) {
    auto f = row.as<std::string, std::string, std::string, std::string>();
    if (!f) return f.error();
    auto& [schema, table_name, grantee, column_name] = *f;
    if (auto* t = find(schema, table_name)) t->select_columns[grantee].push_back(column_name);
  }
  return out;
}

std::string access_graph::to_json() const {
  boost::json::array tables_out;
  for (const auto& t : tables) {
    boost::json::array policies;
    for (const auto& p : t.policies) {
      policies.emplace_back(boost::json::object{{"name", p.name},
                                                {"roles", boost::json::value_from(p.roles)},
                                                {"command", p.command},
                                                {"permissive", p.permissive},
                                                {"using", p.using_sql}});
    }
    boost::json::object columns;
    for (const auto& [role, names] : t.select_columns) columns[role] = boost::json::value_from(names);
    tables_out.emplace_back(boost::json::object{{"schema", t.schema},
                                                {"table", t.table},
                                                {"rls_enabled", t.rls_enabled},
                                                {"rls_forced", t.rls_forced},
                                                {"policies", std::move(policies)},
                                                {"select_columns", std::move(columns)}});
  }
  return boost::json::serialize(boost::json::object{{"tables", std::move(tables_out)}});
}

result<catalog> introspect(pg::connection& conn, const std::vector<std::string>& schemas) {
  auto columns = conn.query(columns_sql, schemas);
  if (!columns) return columns.error();
  catalog out;
  for (const auto& row : *columns) {
    auto fields = row.as<std::string, std::string, std::string, std::string, bool>();
    if (!fields) return fields.error();
    auto& [schema, table_name, column_name, type_name, nullable] = *fields;
    if (out.tables.empty() || out.tables.back().name != table_name || out.tables.back().schema != schema) {
      table t;
      t.schema = schema;
      t.name = table_name;
      out.tables.push_back(std::move(t));
    }
    out.tables.back().columns.push_back({column_name, value_type_of_pg(type_name), nullable});
  }
  auto keys = conn.query(foreign_keys_sql, schemas);
  if (!keys) return keys.error();
  for (const auto& row : *keys) {
    auto fields = row.as<std::string, std::string, std::string, std::string>();
    if (!fields) return fields.error();
    auto& [from_table, from_column, to_table, to_column] = *fields;
    out.relationships.push_back({from_table, from_column, to_table, to_column});
  }
  return out;
}

result<pg::rows> run(pg::connection& conn, const compiled_query& query, const session& who,
                     const arguments& args) {
  return bind_and_run(conn, query, who, args);
}

result<std::string> run_json(pg::connection& conn, const compiled_query& query, const session& who,
                             const arguments& args) {
  auto rows = bind_and_run(conn, query, who, args);
  if (!rows) return rows.error();
  const auto& names = query.columns();
  // Keys serialised once; values written from Postgres's text form, so exact decimals stay exact.
  std::vector<std::string> keys;
  keys.reserve(names.size());
  for (const auto& n : names) keys.push_back(boost::json::serialize(boost::json::string(n.name)) + ":");
  std::string out = "[";
  for (const auto& row : *rows) {
    if (out.size() > 1) out += ',';
    out += '{';
    for (std::size_t c = 0; c < rows->columns() && c < names.size(); ++c) {
      if (c > 0) out += ',';
      out += keys[c];
      auto text = row.text(c);
      if (!text) return text.error();
      if (!*text) {
        out += "null";
        continue;
      }
      const auto& v = **text;
      const auto type = names[c].type;
      const bool finite_number = !v.empty() && v != "NaN" && v != "Infinity" && v != "-Infinity";
      if (type == value_type::boolean) {
        out += v == "true" ? "true" : "false";
      } else if ((type == value_type::integer || type == value_type::decimal) && finite_number &&
                 rows->column_type(c) != pg::oids::text) {
        out += v;
      } else {
        out += boost::json::serialize(boost::json::string(v));
      }
    }
    out += '}';
  }
  out += ']';
  return out;
}

}  // namespace keel::dsl
