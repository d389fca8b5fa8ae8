// The /dsl page and the /api/dsl routes: the access graph (the catalog's, and the database's
// row-level security when asked), and a query tried as a role behind the try_as hook.
#include <keel/dsl_http/page.hpp>
#include <keel/dsl_pg/dsl_pg.hpp>
#include <keel/net/json.hpp>

#include "page_html.hpp"

#include <boost/json.hpp>

#include <memory>
#include <string>

namespace keel::dsl_http {
namespace {

namespace json = boost::json;

net::response refused(const dsl::diagnostic& d, std::string_view text) {
  return net::json_response(json::object{{"error", "the query is refused"},
                                         {"code", std::string(dsl::name_of(d.code))},
                                         {"message", d.message},
                                         {"line", d.line},
                                         {"column", d.column},
                                         {"rendered", d.render(text)}},
                            net::status::bad_request);
}

// A session value from the form: JSON scalars as their text, arrays item by item, each typed
// by the catalog's declaration of the attribute (dsl::session_value_from_text).
std::optional<dsl::session_value> typed(const dsl::session_attribute& a, const json::value& v) {
  const auto scalar_text = [](const json::value& x) -> std::optional<std::string> {
    if (x.is_string()) return std::string(x.as_string());
    if (x.is_int64() || x.is_uint64() || x.is_double() || x.is_bool()) return json::serialize(x);
    return std::nullopt;
  };
  if (v.is_null()) return dsl::session_value{};
  if (!a.array || !v.is_array()) {
    auto text = scalar_text(v);
    if (!text) return std::nullopt;
    return dsl::session_value_from_text(a, *text);
  }
  dsl::session_attribute item = a;
  item.array = false;
  std::vector<std::string> texts;
  std::vector<std::int64_t> numbers;
  for (const auto& element : v.as_array()) {
    auto text = scalar_text(element);
    if (!text) return std::nullopt;
    auto parsed = dsl::session_value_from_text(item, *text);
    if (!parsed) return std::nullopt;
    if (const auto* n = std::get_if<std::int64_t>(&*parsed)) {
      numbers.push_back(*n);
    } else {
      texts.push_back(std::move(*text));
    }
  }
  if (a.type == dsl::value_type::integer) return dsl::session_value{std::move(numbers)};
  return dsl::session_value{std::move(texts)};
}

}  // namespace

void mount(net::server& server, pg::pool& pool, const dsl::compiler& compiler, options opts) {
  auto shared = std::make_shared<const options>(std::move(opts));
  const auto readable = [shared](net::handler h) -> net::handler {
    return [shared, h = std::move(h)](const net::request& req) {
      if (shared->authorize && !shared->authorize(req)) {
        return net::error_response(
            net::status::forbidden, "forbidden",
            "the access page is not readable for this request: see the authorize hook");
      }
      return h(req);
    };
  };

  server.get("/dsl", readable([](const net::request&) {
               return net::text_response(detail::page_html, net::status::ok, "text/html; charset=utf-8");
             }));

  // The catalog (tables, session attributes, roles and their grants) and the database's RLS.
  server.get("/api/dsl/access", readable([&pool, &compiler, shared](const net::request&) {
               json::object out;
               out["catalog"] = json::parse(compiler.catalog().to_json());
               out["can_try"] = static_cast<bool>(shared->try_as);
               if (!shared->database_schemas.empty()) {
                 auto c = pool.acquire();
                 if (!c) return net::error_response(net::status::service_unavailable, c.error());
                 auto graph = dsl::introspect_access(**c, shared->database_schemas);
                 if (!graph) return net::error_response(net::status::service_unavailable, graph.error());
                 out["database"] = json::parse(graph->to_json());
               }
               return net::json_response(out);
             }));

  // A query tried as a role: compiled (cached), bound, run; rows by position with the columns.
  server.post(
      "/api/dsl/query", readable(net::json_handler([&pool, &compiler, shared](const net::request& req,
                                                                              const json::value& body) {
        if (!body.is_object()) {
          return net::error_response(net::status::bad_request, "a JSON object",
                                     R"({"role": "…", "session": {…}, "query": "from …"})");
        }
        const auto& o = body.as_object();
        const auto* role = o.if_contains("role");
        const auto* query = o.if_contains("query");
        if (role == nullptr || !role->is_string() || query == nullptr || !query->is_string()) {
          return net::error_response(net::status::bad_request, "role and query are required strings");
        }
        dsl::session asked{.role = std::string(role->as_string())};
        if (const auto* s = o.if_contains("session"); s != nullptr && s->is_object()) {
          for (const auto& [name, value] : s->as_object()) {
            const auto* a = compiler.catalog().find_attribute(name);
            if (a == nullptr) {
              // Built by appending: GCC 12 at -O3 warns falsely (-Wrestrict) on operator+ chains.
              std::string detail = "@";
              detail.append(name).append(" is not in the catalog");
              return net::error_response(net::status::bad_request, "unknown session attribute", detail);
            }
            if (value.is_string() && value.as_string().empty()) continue;  // a blank form field
            auto v = typed(*a, value);
            if (!v) {
              std::string detail = "@";
              detail.append(name).append(" takes a ").append(dsl::to_string(a->type));
              if (a->array) detail.append(" array");
              return net::error_response(net::status::bad_request, "invalid session value", detail);
            }
            asked.attributes.emplace(std::string(name), std::move(*v));
          }
        }
        if (!shared->try_as) {
          return net::error_response(
              net::status::forbidden, "trying queries is off",
              "mount the page with options.try_as to allow it (it impersonates roles)");
        }
        auto who = shared->try_as(req, asked);
        if (!who) {
          std::string detail = "this request may not run queries as role ";
          detail.append(asked.role);
          return net::error_response(net::status::forbidden, "forbidden", detail);
        }
        dsl::arguments args;
        if (const auto* a = o.if_contains("arguments"); a != nullptr && a->is_array()) {
          for (const auto& item : a->as_array()) {
            if (item.is_null()) {
              args.positional.emplace_back();
            } else if (item.is_string()) {
              args.positional.emplace_back(std::string(item.as_string()));
            } else {
              args.positional.emplace_back(json::serialize(item));
            }
          }
        }
        const std::string text(query->as_string());
        auto compiled = compiler.compile(text, *who);
        if (!compiled) return refused(compiled.error(), text);
        auto bound = (*compiled)->bind(*who, args);
        if (!bound) return refused(bound.error(), text);
        auto c = pool.acquire();
        if (!c) return net::error_response(net::status::service_unavailable, c.error());
        auto rows = dsl::run(**c, **compiled, *who, args);
        if (!rows) {
          return net::json_response(json::object{{"error", "the database refused the query"},
                                                 {"message", (*c)->last_error().message},
                                                 {"sqlstate", (*c)->last_error().sqlstate},
                                                 {"sql", (*compiled)->sql()}},
                                    net::status::unprocessable_entity);
        }
        json::array columns;
        for (const auto& col : (*compiled)->columns()) {
          columns.push_back(
              json::object{{"name", col.name}, {"type", std::string(dsl::to_string(col.type))}});
        }
        json::array out_rows;
        for (const auto& row : *rows) {
          if (out_rows.size() >= shared->max_rows) break;
          json::array cells;
          for (std::size_t i = 0; i < rows->columns(); ++i) {
            auto cell = row.text(i);
            if (!cell) return net::error_response(net::status::internal_server_error, cell.error());
            if (*cell) {
              cells.emplace_back(**cell);
            } else {
              cells.emplace_back(nullptr);
            }
          }
          out_rows.emplace_back(std::move(cells));
        }
        json::array parameters;
        for (const auto& v : bound->values) {
          if (v) {
            parameters.emplace_back(*v);
          } else {
            parameters.emplace_back(nullptr);
          }
        }
        return net::json_response(json::object{{"sql", (*compiled)->sql()},
                                               {"parameters", std::move(parameters)},
                                               {"columns", std::move(columns)},
                                               {"rows", std::move(out_rows)},
                                               {"row_count", rows->size()},
                                               {"truncated", rows->size() > shared->max_rows}});
      })));
}

}  // namespace keel::dsl_http
