// keel::dsl on Postgres: the catalog read from pg_catalog, and compiled queries run through
// keel::pg with every value a parameter.
#include <keel/core/log.hpp>
#include <keel/dsl_pg/dsl_pg.hpp>
#include <keel/pg/params.hpp>

#include <boost/json.hpp>

#include <string>

namespace keel::dsl {
namespace {

std::string text_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (const char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

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

}  // namespace

result<catalog> introspect(pg::connection& conn, const std::vector<std::string>& schemas) {
  const auto wanted = text_array(schemas);
  auto columns = conn.query(columns_sql, wanted);
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
  auto keys = conn.query(foreign_keys_sql, wanted);
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
