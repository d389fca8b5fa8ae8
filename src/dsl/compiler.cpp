// PRQL to PostgreSQL. A relation is built as one SELECT under construction (FROM and joins,
// WHERE, GROUP BY, HAVING, the select list with window functions, DISTINCT, ORDER BY, LIMIT)
// and wrapped as a subquery whenever a stage would have to run before one already placed (a
// filter after a take, a join after a filter, …), so each SELECT computes exactly PRQL's
// pipeline order. Sorting is carried through wraps and emitted where it matters: before a
// LIMIT and at the end. Every table reference becomes its policy-filtered source first.
#include <keel/core/assert.hpp>

#include "compiler_internal.hpp"

#include <algorithm>
#include <charconv>
#include <set>
#include <string>

namespace keel::dsl {
namespace {

using ast::kind;
using ast::node;

// Pieces joined by appending: no temporaries (and GCC 12 at -O3 warns falsely on operator+ chains).
std::string joined(std::initializer_list<std::string_view> parts) {
  std::size_t size = 0;
  for (const auto p : parts) size += p.size();
  std::string out;
  out.reserve(size);
  for (const auto p : parts) out.append(p);
  return out;
}

// `text` between `quote`s, each quote inside doubled: SQL's rule for both literals and identifiers.
std::string enclosed(std::string_view text, char quote) {
  std::string out(1, quote);
  for (const char c : text) {
    if (c == quote) out += quote;
    out += c;
  }
  out += quote;
  return out;
}
// A string literal for a generated script (standard_conforming_strings: only ' is doubled).
std::string quote_literal(std::string_view value) {
  return enclosed(value, '\'');
}
std::string quote_ident(std::string_view name) {
  return enclosed(name, '"');
}

bool numeric(value_type t) {
  return t == value_type::integer || t == value_type::decimal || t == value_type::unknown ||
         t == value_type::null;
}
bool temporal(value_type t) {
  return t == value_type::date || t == value_type::timestamp || t == value_type::time;
}
bool loose(value_type t) {
  return t == value_type::unknown || t == value_type::null;
}
// Whether values of the two types may be compared (a string literal may stand for a date).
bool comparable(value_type a, value_type b, bool b_is_text_literal) {
  if (loose(a) || loose(b) || a == b || a == value_type::other || b == value_type::other) return true;
  if (numeric(a) && numeric(b)) return true;
  if (temporal(a) && temporal(b)) return true;
  if (temporal(a) && b == value_type::text && b_is_text_literal) return true;
  return false;
}

// Whether a term reads session attributes and literals only, so the compiler decides it (a
// grant's condition, `@plan == "pro"` inside a row filter) instead of sending it to the database.
bool is_foldable(const ast::node& n) {
  switch (n.kind) {
    case kind::integer:
    case kind::decimal:
    case kind::string:
    case kind::boolean:
    case kind::null:
    case kind::session:
      return true;
    case kind::unary:
      return (n.text == "!" || n.text == "-") && is_foldable(*n.items[0]);
    case kind::binary:
      return (n.text == "==" || n.text == "!=" || n.text == "<" || n.text == ">" || n.text == "<=" ||
              n.text == ">=" || n.text == "&&" || n.text == "||") &&
             is_foldable(*n.items[0]) && is_foldable(*n.items[1]);
    case kind::pipeline:
      return n.items.size() == 2 && is_foldable(*n.items[0]) && n.items[1]->kind == kind::call &&
             n.items[1]->path == std::vector<std::string>{"in"} && n.items[1]->items.size() == 1 &&
             n.items[1]->items[0]->kind == kind::array &&
             std::all_of(n.items[1]->items[0]->items.begin(), n.items[1]->items[0]->items.end(),
                         [](const ast::node_ptr& item) { return is_foldable(*item); });
    default:
      return false;
  }
}

// A compiled expression.
struct expr {
  std::string sql;
  value_type type = value_type::unknown;
  bool aggregate = false;     // contains an aggregate not over a window
  bool window = false;        // contains a window function
  bool text_literal = false;  // a string from the query, bound as an untyped parameter
  bool untyped = false;       // a parameter whose type the server must infer
  [[nodiscard]] std::string as_text() const { return untyped ? sql + "::text" : sql; }
};

struct column_info {
  std::optional<std::string> name;
  std::string ns;  // the relation alias it belongs to ("e" for from e = employees)
  std::string sql;
  value_type type = value_type::unknown;
  bool aggregate = false;
  bool window = false;
  bool hidden = false;        // internal (a row number for group take), never output nor named
  bool from_catalog = false;  // a table's column passed through: its name is the catalog's
};

struct sort_key {
  std::string sql;
  bool descending = false;
};

// Columns the policy hides, to say so when a query names one.
struct hidden_columns {
  std::string ns;
  std::string table;
  std::vector<std::string> names;
};

struct relation {
  std::string from;
  std::vector<column_info> columns;
  std::vector<std::string> where;
  std::vector<std::string> group_by;
  bool aggregated = false;
  std::vector<std::string> having;
  bool distinct = false;
  std::vector<sort_key> sort;
  std::optional<std::int64_t> limit;
  std::int64_t offset = 0;
  std::optional<std::string> limit_sql;  // a parameter's $n (then `limit` is empty)
  // Policy facts carried with the rows.
  std::vector<std::string> no_aggregate_tables;
  std::vector<hidden_columns> hidden;

  [[nodiscard]] bool has_window_columns() const {
    return std::any_of(columns.begin(), columns.end(), [](const column_info& c) { return c.window; });
  }
  [[nodiscard]] bool limited() const { return limit.has_value() || limit_sql.has_value() || offset > 0; }
  [[nodiscard]] bool plain() const {
    return where.empty() && !aggregated && !distinct && !limited() && !has_window_columns();
  }
};

// How aggregate and window functions compile where an expression stands.
struct window_spec {
  std::vector<std::string> partition;
  std::vector<sort_key> order;
  std::string frame;  // "ROWS BETWEEN …", or empty for the whole partition
  bool explicit_frame = false;
};

enum class call_mode : std::uint8_t {
  scalar,     // no aggregates (filters, sort keys, policy expressions)
  aggregate,  // plain aggregates (`aggregate`, `group (aggregate …)`)
  window,     // aggregates and window functions over `spec` (derive, select, window)
};

struct scope {
  const relation* self = nullptr;
  const relation* that = nullptr;  // a join's right side
  const table* raw = nullptr;      // a policy expression: the table's own columns
  call_mode mode = call_mode::scalar;
  const window_spec* spec = nullptr;
  bool policy = false;  // session-only terms fold; no query parameters
};

bool aggregates_anywhere(const node& n) {
  static const std::set<std::string, std::less<>> aggregating = {"aggregate",
                                                                 "group",
                                                                 "window",
                                                                 "sum",
                                                                 "min",
                                                                 "max",
                                                                 "average",
                                                                 "avg",
                                                                 "stddev",
                                                                 "count",
                                                                 "count_distinct",
                                                                 "any",
                                                                 "all",
                                                                 "every",
                                                                 "concat_array",
                                                                 "row_number",
                                                                 "rank",
                                                                 "rank_dense",
                                                                 "lag",
                                                                 "lead",
                                                                 "first",
                                                                 "last"};
  if (n.kind == kind::call && !n.path.empty() && aggregating.contains(n.path.back())) return true;
  if (n.kind == kind::ident && n.path.size() == 1 && aggregating.contains(n.path[0])) return true;
  for (const auto& item : n.items) {
    if (item && aggregates_anywhere(*item)) return true;
  }
  for (const auto& named : n.named) {
    if (named.value && aggregates_anywhere(*named.value)) return true;
  }
  return false;
}

class translator {
 public:
  translator(const compiler::state& st, std::string_view text, const session& who,
             const detail::role_policy& role)
      : st_(st), text_(text), who_(who), role_(role) {}

  parse_result<std::shared_ptr<const compiled_query>> run(const ast::query& q) {
    aggregating_ = aggregates_anywhere(*q.main);
    for (const auto& binding : q.lets) aggregating_ = aggregating_ || aggregates_anywhere(*binding.value);
    for (const auto& binding : q.lets) {
      auto body = relation_of(*binding.value);
      if (!body) return error();
      let_info info;
      info.cte = "let_" + std::to_string(lets_.size() + 1);
      info.columns = body->columns;
      info.no_aggregate_tables = body->no_aggregate_tables;
      info.hidden = body->hidden;
      std::string sql = render(*body, false);
      ctes_.emplace_back(info.cte, std::move(sql));
      lets_.insert_or_assign(binding.name, std::move(info));
    }
    auto main = relation_of(*q.main);
    if (!main) return error();
    apply_ceiling(*main);
    std::string sql;
    if (!ctes_.empty()) {
      sql += "WITH ";
      for (std::size_t i = 0; i < ctes_.size(); ++i) {
        if (i > 0) sql += ", ";
        sql.append(ctes_[i].first).append(" AS (").append(ctes_[i].second).append(")");
      }
      sql += " ";
    }
    sql += render(*main, true);
    std::vector<output_column> outputs;
    std::size_t position = 0;
    for (const auto& c : main->columns) {
      if (c.hidden) continue;
      ++position;
      outputs.push_back({c.name ? *c.name : "_" + std::to_string(position), c.type});
    }
    auto [numbered, used] = number_parameters(sql);
    return std::make_shared<const compiled_query>(std::move(numbered), std::move(outputs), std::move(used));
  }

  [[nodiscard]] diagnostic error() const { return error_ ? *error_ : diagnostic{}; }

 private:
  struct let_info {
    std::string cte;
    std::vector<column_info> columns;
    std::vector<std::string> no_aggregate_tables;
    std::vector<hidden_columns> hidden;
  };

  const compiler::state& st_;
  std::string_view text_;
  const session& who_;
  const detail::role_policy& role_;
  std::optional<diagnostic> error_;
  std::vector<parameter_slot> slots_;
  std::vector<std::pair<std::string, std::string>> ctes_;
  std::map<std::string, let_info, std::less<>> lets_;
  int next_alias_ = 0;
  // Whether the query aggregates anywhere (aggregate, group, window, an aggregate or window
  // function): then every table is read only through the grants that allow aggregates, so no
  // aggregate counts a row a grant admits for reading alone.
  bool aggregating_ = false;
  // Compiling policies into a row-level-security script: literals inline, session attributes
  // as settings, nothing folded.
  bool rls_ = false;

 public:
  // The catalog as Postgres row-level security: policies, column grants, and what RLS cannot say.
  parse_result<std::string> rls_script();

 private:
  std::string_view policy_text_;  // the policy expression being compiled, for its errors
  std::string policy_where_;      // "role r, grant on t, row filter"

  // ---- errors ------------------------------------------------------------------------------

  template <class T = bool>
  T fail(errc code, std::string message, ast::span where) {
    if (!error_) {
      if (!policy_text_.empty()) {
        // An error in a policy expression is the catalog's: name the policy, place it in its text.
        std::string full = policy_where_;
        full.append(": ").append(message);
        error_ = diagnostic::at(policy_text_, code, std::move(full), where.begin, where.end);
      } else {
        error_ = diagnostic::at(text_, code, std::move(message), where.begin, where.end);
      }
    }
    return T{};
  }

  // ---- parameters --------------------------------------------------------------------------

  // A placeholder (\x01 index \x02) that run() numbers $1, $2, … in order of appearance, so
  // a term folded away leaves no parameter behind (Postgres refuses one it cannot type).
  static std::string placeholder(std::size_t index) {
    std::string out(1, '\x01');
    out += std::to_string(index);
    out += '\x02';
    return out;
  }
  std::string slot(parameter_slot s) {
    if (s.from != parameter_slot::source::literal) {
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (slots_[i].from == s.from && slots_[i].text == s.text && slots_[i].position == s.position) {
          return placeholder(i);
        }
      }
    }
    slots_.push_back(std::move(s));
    return placeholder(slots_.size() - 1);
  }

  // Numbers the placeholders in order of appearance; unreferenced slots are dropped.
  [[nodiscard]] std::pair<std::string, std::vector<parameter_slot>> number_parameters(
      const std::string& sql) const {
    std::string out;
    out.reserve(sql.size());
    std::vector<parameter_slot> used;
    std::vector<std::size_t> number(slots_.size(), 0);
    for (std::size_t i = 0; i < sql.size(); ++i) {
      if (sql[i] != '\x01') {
        out += sql[i];
        continue;
      }
      const auto close = sql.find('\x02', i);
      std::size_t index = 0;
      std::from_chars(sql.data() + i + 1, sql.data() + close, index);
      if (number[index] == 0) {
        used.push_back(slots_[index]);
        number[index] = used.size();
      }
      out += '$';
      out += std::to_string(number[index]);
      i = close;
    }
    return {std::move(out), std::move(used)};
  }
  std::string literal_slot(std::string value) {
    return slot({parameter_slot::source::literal, std::move(value), 0});
  }

  std::string next_alias() { return "r" + std::to_string(++next_alias_); }

  // ---- rendering ---------------------------------------------------------------------------

  static void append_order(std::string& sql, const std::vector<sort_key>& keys) {
    if (keys.empty()) return;
    sql += " ORDER BY ";
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (i > 0) sql += ", ";
      sql += keys[i].sql;
      if (keys[i].descending) sql += " DESC";
    }
  }

  [[nodiscard]] std::string final_alias(const column_info& c, std::size_t position) const {
    // The catalog's own names only: no identifier in the SQL comes from the query text.
    if (c.name && c.from_catalog) return quote_ident(*c.name);
    return "_expr" + std::to_string(position);
  }

  // The SELECT of `r`. Inner SELECTs (final = false) name columns c0, c1, … and carry the sort
  // keys as extra columns s0, s1, … when asked (`with_sort`), so the outer query can order by them.
  std::string render(const relation& r, bool final, std::vector<std::string>* sort_aliases = nullptr) const {
    std::string sql = r.distinct ? "SELECT DISTINCT " : "SELECT ";
    std::size_t written = 0;
    for (std::size_t i = 0; i < r.columns.size(); ++i) {
      const auto& c = r.columns[i];
      if (final && c.hidden) continue;
      if (written++ > 0) sql += ", ";
      sql += c.sql;
      sql += " AS ";
      if (final) {
        sql += final_alias(c, written);
      } else {
        sql += "c" + std::to_string(i);
      }
    }
    if (written == 0) sql += "NULL AS c_none";
    if (sort_aliases != nullptr) {
      for (std::size_t k = 0; k < r.sort.size(); ++k) {
        // Built by appending: GCC 12 at -O3 warns falsely (-Wrestrict) on operator+ chains here.
        std::string alias = "s";
        alias += std::to_string(k);
        sql.append(", ").append(r.sort[k].sql).append(" AS ").append(alias);
        sort_aliases->push_back(std::move(alias));
      }
    }
    if (!r.from.empty()) sql += " FROM " + r.from;
    if (!r.where.empty()) {
      sql += " WHERE ";
      for (std::size_t i = 0; i < r.where.size(); ++i) {
        if (i > 0) sql += " AND ";
        sql += r.where[i];
      }
    }
    if (!r.group_by.empty()) {
      sql += " GROUP BY ";
      for (std::size_t i = 0; i < r.group_by.size(); ++i) {
        if (i > 0) sql += ", ";
        sql += r.group_by[i];
      }
    }
    if (!r.having.empty()) {
      sql += " HAVING ";
      for (std::size_t i = 0; i < r.having.size(); ++i) {
        if (i > 0) sql += " AND ";
        sql += r.having[i];
      }
    }
    // Order matters where rows are cut, and at the end.
    if (final || r.limited()) append_order(sql, r.sort);
    if (r.limit_sql) {
      sql += " LIMIT " + *r.limit_sql;
    } else if (r.limit) {
      sql += " LIMIT " + std::to_string(*r.limit);
    }
    if (r.offset > 0) sql += " OFFSET " + std::to_string(r.offset);
    return sql;
  }

  // `r` as a subquery: a fresh SELECT reads it, its columns and sort carried over.
  relation wrap(const relation& r) {
    const bool carry_sort = !r.sort.empty() && !r.distinct;
    std::vector<std::string> sort_aliases;
    std::string inner = render(r, false, carry_sort ? &sort_aliases : nullptr);
    const auto alias = next_alias();
    relation out;
    out.from = "(" + inner + ") AS " + alias;
    for (std::size_t i = 0; i < r.columns.size(); ++i) {
      auto c = r.columns[i];
      c.sql = alias + ".c" + std::to_string(i);
      c.aggregate = false;
      c.window = false;
      out.columns.push_back(std::move(c));
    }
    for (std::size_t k = 0; k < sort_aliases.size(); ++k) {
      out.sort.push_back({alias + "." + sort_aliases[k], r.sort[k].descending});
    }
    out.no_aggregate_tables = r.no_aggregate_tables;
    out.hidden = r.hidden;
    return out;
  }

  void apply_ceiling(relation& r) {
    if (role_.max_rows <= 0) return;
    if (r.limit_sql) {
      r.limit_sql = "LEAST(" + *r.limit_sql + ", " + std::to_string(role_.max_rows) + ")";
    } else if (!r.limit || *r.limit > role_.max_rows) {
      r.limit = role_.max_rows;
    }
  }

  // ---- relations ---------------------------------------------------------------------------

  std::optional<relation> relation_of(const node& n) {
    if (n.kind != kind::pipeline) {
      // A single stage: `from t` as a let's value without parentheses.
      return stages({&n});
    }
    std::vector<const node*> items;
    items.reserve(n.items.size());
    for (const auto& item : n.items) items.push_back(item.get());
    return stages(items);
  }

  std::optional<relation> stages(const std::vector<const node*>& items) {
    if (items.empty()) return std::nullopt;
    auto r = source_stage(*items.front());
    if (!r) return std::nullopt;
    for (std::size_t i = 1; i < items.size(); ++i) {
      if (!transform(*r, *items[i])) return std::nullopt;
    }
    return r;
  }

  static std::string name_of_call(const node& n) {
    std::string name;
    for (std::size_t i = 0; i < n.path.size(); ++i) {
      if (i > 0) name += '.';
      name += n.path[i];
    }
    return name;
  }

  std::optional<relation> source_stage(const node& n) {
    if (n.kind == kind::call && n.path.size() == 1 && n.path[0] == "from") {
      if (n.items.size() != 1 || !n.named.empty()) {
        return fail<std::optional<relation>>(errc::invalid_arguments,
                                             "from takes one relation: from employees", n.where);
      }
      const auto alias = n.aliases.empty() ? std::nullopt : n.aliases[0];
      return relation_ref(*n.items[0], alias);
    }
    if (n.kind == kind::pipeline) return relation_of(n);
    if (n.kind == kind::array) return literal_relation(n, std::nullopt);  // let regions = [{…}, …]
    return fail<std::optional<relation>>(errc::invalid_relation,
                                         "a pipeline starts with `from <table>` (or a let's name)", n.where);
  }

  // A table, a let, a relation literal or a parenthesised pipeline, read as a source.
  std::optional<relation> relation_ref(const node& n, const std::optional<std::string>& alias) {
    if (n.kind == kind::ident) {
      std::string name;
      for (std::size_t i = 0; i < n.path.size(); ++i) {
        if (i > 0) name += '.';
        name += n.path[i];
      }
      if (n.path.size() == 1) {
        if (auto it = lets_.find(name); it != lets_.end()) return let_ref(it->second, alias ? *alias : name);
      }
      return table_ref(n, alias);
    }
    if (n.kind == kind::array) return literal_relation(n, alias);
    if (n.kind == kind::pipeline) {
      auto inner = relation_of(n);
      if (!inner) return std::nullopt;
      auto r = wrap(*inner);
      if (alias) {
        for (auto& c : r.columns) c.ns = *alias;
      }
      return r;
    }
    return fail<std::optional<relation>>(
        errc::invalid_relation, "a relation: a table's name, a let's name, [{…}] or (from …)", n.where);
  }

  relation let_ref(const let_info& info, const std::string& ns) {
    relation r;
    const auto alias = next_alias();
    r.from = info.cte + " AS " + alias;
    for (std::size_t i = 0; i < info.columns.size(); ++i) {
      auto c = info.columns[i];
      c.sql = alias + ".c" + std::to_string(i);
      c.ns = ns;
      c.aggregate = false;
      c.window = false;
      r.columns.push_back(std::move(c));
    }
    r.no_aggregate_tables = info.no_aggregate_tables;
    r.hidden = info.hidden;
    for (auto& h : r.hidden) h.ns = ns;
    return r;
  }

  std::optional<relation> literal_relation(const node& n, const std::optional<std::string>& alias) {
    if (n.items.empty()) {
      return fail<std::optional<relation>>(errc::invalid_relation,
                                           "a relation literal needs at least one row", n.where);
    }
    relation r;
    const auto& first = *n.items.front();
    if (first.kind != kind::tuple) {
      return fail<std::optional<relation>>(errc::invalid_relation,
                                           "a relation literal is an array of tuples: [{a = 1, b = \"x\"}]",
                                           first.where);
    }
    std::string values = "(VALUES ";
    const scope none{};
    for (std::size_t row = 0; row < n.items.size(); ++row) {
      const auto& t = *n.items[row];
      if (t.kind != kind::tuple || t.items.size() != first.items.size()) {
        return fail<std::optional<relation>>(
            errc::invalid_relation, "every row of a relation literal has the first row's fields", t.where);
      }
      values += row > 0 ? ", (" : "(";
      for (std::size_t i = 0; i < t.items.size(); ++i) {
        auto e = expression(*t.items[i], none);
        if (!e) return std::nullopt;
        if (i > 0) values += ", ";
        values += e->untyped ? e->as_text() : e->sql;
        if (row == 0) {
          column_info c;
          c.name = i < t.aliases.size() ? t.aliases[i] : std::nullopt;
          if (!c.name && t.items[i]->kind == kind::ident) c.name = t.items[i]->path.back();
          c.type = e->type;
          r.columns.push_back(std::move(c));
        } else if (loose(r.columns[i].type)) {
          r.columns[i].type = e->type;
        }
      }
      values += ")";
    }
    const auto a = next_alias();
    values += ") AS " + a + "(";
    for (std::size_t i = 0; i < r.columns.size(); ++i) {
      if (i > 0) values += ", ";
      values += "c" + std::to_string(i);
      r.columns[i].sql = a + ".c" + std::to_string(i);
      r.columns[i].ns = alias ? *alias : "";
    }
    values += ")";
    r.from = std::move(values);
    return r;
  }

  // ---- policy at the source ----------------------------------------------------------------

  std::optional<relation> table_ref(const node& n, const std::optional<std::string>& alias) {
    const table* t = nullptr;
    if (n.path.size() == 1) {
      int found = 0;
      for (const auto& candidate : st_.cat.tables) {
        if (candidate.name == n.path[0]) {
          t = &candidate;
          ++found;
        }
      }
      if (found > 1) {
        return fail<std::optional<relation>>(
            errc::unknown_table, "`" + n.path[0] + "` is in several schemas: write schema." + n.path[0],
            n.where);
      }
    } else if (n.path.size() == 2) {
      for (const auto& candidate : st_.cat.tables) {
        if (candidate.schema == n.path[0] && candidate.name == n.path[1]) t = &candidate;
      }
    }
    if (t == nullptr) {
      std::string name;
      for (std::size_t i = 0; i < n.path.size(); ++i) name += (i > 0 ? "." : "") + n.path[i];
      return fail<std::optional<relation>>(
          errc::unknown_table, "no table or let named `" + name + "` (the catalog has none)", n.where);
    }
    const std::string ns = alias ? *alias : t->name;

    // The grants whose conditions hold for this session.
    std::vector<const detail::parsed_grant*> grants;
    for (const auto& g : role_.grants) {
      if (g.target != t) continue;
      if (g.when) {
        auto holds = fold_condition(*g.when, g);
        if (!holds) return std::nullopt;
        if (!*holds) continue;
      }
      grants.push_back(&g);
    }
    if (grants.empty()) {
      return fail<std::optional<relation>>(
          errc::table_not_granted, "table `" + t->name + "` is not granted to role `" + role_.name + "`",
          n.where);
    }
    bool aggregates = true;
    if (aggregating_) {
      std::vector<const detail::parsed_grant*> aggregable;
      for (const auto* g : grants) {
        if (g->source->aggregates) aggregable.push_back(g);
      }
      // None: read as granted; the first aggregate over these rows is refused, with its place.
      if (aggregable.empty()) {
        aggregates = false;
      } else {
        grants = std::move(aggregable);
      }
    }

    // The rows each grant admits, compiled over the table's own columns; grants admitting the
    // same rows (an inherited copy, say) are one admission, their columns together.
    struct admission {
      std::string predicate;
      std::vector<const detail::parsed_grant*> grants;
    };
    std::vector<admission> admissions;
    for (const auto* g : grants) {
      std::string predicate = "TRUE";
      if (g->row_filter) {
        auto p = policy_expression(*g->row_filter, *g, "row filter", g->source->row_filter);
        if (!p) return std::nullopt;
        if (p->type != value_type::boolean && !loose(p->type)) {
          return fail<std::optional<relation>>(
              errc::type_error, "a row filter must be a condition (true or false)", g->row_filter->where);
        }
        predicate = std::move(p->sql);
      }
      if (predicate == "FALSE") continue;  // admits no row (a session-only term decided it)
      auto same = std::find_if(admissions.begin(), admissions.end(),
                               [&](const admission& x) { return x.predicate == predicate; });
      if (same == admissions.end()) {
        admissions.push_back({std::move(predicate), {g}});
      } else {
        same->grants.push_back(g);
      }
    }
    const bool every_row = std::any_of(admissions.begin(), admissions.end(),
                                       [](const admission& x) { return x.predicate == "TRUE"; });

    // The table's physical name: the catalog's, or the session's tenant schema (one of the catalog's).
    std::string schema = t->schema;
    if (t->per_tenant) {
      auto chosen = tenant_schema(n.where);
      if (!chosen) return std::nullopt;
      schema = *chosen;
    }
    const std::string physical = quote_ident(schema) + "." + quote_ident(t->name);

    relation r;
    hidden_columns hidden{ns, t->name, {}};
    bool rewritten = !every_row;
    struct shown_column {
      const column* c;
      std::string sql;  // its expression at the source
      value_type type;
    };
    std::vector<shown_column> shown;
    for (const auto& c : t->columns) {
      // Per admission: the column as its grants show it (unmasked if one of them does).
      std::vector<std::pair<std::size_t, expr>> by_admission;
      for (std::size_t ai = 0; ai < admissions.size(); ++ai) {
        std::optional<expr> best;
        for (const auto* g : admissions[ai].grants) {
          if (!g->shows(c.name)) continue;
          if (const auto* mask = g->mask_of(c.name)) {
            if (best) continue;
            auto m = policy_expression(*mask, *g, "mask of " + c.name, g->source->masks.at(c.name));
            if (!m) return std::nullopt;
            if (m->untyped) m->sql = m->as_text();
            best = std::move(*m);
          } else {
            best = expr{quote_ident(c.name), c.type};
            break;
          }
        }
        if (best) by_admission.emplace_back(ai, std::move(*best));
      }
      if (by_admission.empty()) {
        hidden.names.push_back(c.name);
        continue;
      }
      const bool same_everywhere = by_admission.size() == admissions.size() &&
                                   std::all_of(by_admission.begin(), by_admission.end(), [&](const auto& b) {
                                     return b.second.sql == by_admission[0].second.sql;
                                   });
      if (same_everywhere) {
        if (by_admission[0].second.sql != quote_ident(c.name)) rewritten = true;
        shown.push_back({&c, by_admission[0].second.sql, by_admission[0].second.type});
        continue;
      }
      // Shown only on the rows of the admissions that show it; one admitting every row ends it.
      std::string when = "CASE";
      bool closed = false;
      for (const auto& [ai, e] : by_admission) {
        if (admissions[ai].predicate == "TRUE") {
          when = when == "CASE" ? e.sql : joined({when, " ELSE ", e.sql, " END"});
          closed = true;
          break;
        }
        when += " WHEN " + admissions[ai].predicate + " THEN " + e.sql;
      }
      if (!closed) when += " END";
      shown.push_back({&c, std::move(when), c.type});
      rewritten = true;
    }
    std::vector<std::string> predicates;
    predicates.reserve(admissions.size());
    for (const auto& x : admissions) predicates.push_back(x.predicate);
    const auto a = next_alias();
    if (!rewritten) {
      r.from = physical + " AS " + a;
    } else {
      std::string sql = "(SELECT ";
      for (std::size_t i = 0; i < shown.size(); ++i) {
        if (i > 0) sql += ", ";
        sql += shown[i].sql + " AS " + quote_ident(shown[i].c->name);
      }
      if (shown.empty()) sql += "NULL AS c_none";
      sql += " FROM " + physical;
      if (predicates.empty()) {
        sql += " WHERE FALSE";
      } else if (!every_row) {
        sql += " WHERE ";
        if (predicates.size() == 1) {
          sql += predicates[0];
        } else {
          for (std::size_t i = 0; i < predicates.size(); ++i) {
            if (i > 0) sql += " OR ";
            sql += "(" + predicates[i] + ")";
          }
        }
      }
      sql += ") AS " + a;
      r.from = std::move(sql);
    }
    for (const auto& shown_col : shown) {
      column_info info;
      info.name = shown_col.c->name;
      info.ns = ns;
      info.sql = a + "." + quote_ident(shown_col.c->name);
      info.type = shown_col.type;
      info.from_catalog = true;
      r.columns.push_back(std::move(info));
    }
    if (!hidden.names.empty()) r.hidden.push_back(std::move(hidden));
    if (!aggregates) r.no_aggregate_tables.push_back(t->name);
    return r;
  }

  std::optional<std::string> tenant_schema(ast::span where) {
    const auto& tenancy = st_.cat.tenants;
    KEEL_ASSERT(tenancy.has_value());  // create() refuses per_tenant tables without one
    auto it = who_.attributes.find(tenancy->schema_attribute);
    if (it == who_.attributes.end() || !std::holds_alternative<std::string>(it->second)) {
      return fail<std::optional<std::string>>(
          errc::unknown_session_attribute,
          "the session gives no @" + tenancy->schema_attribute + " (text), which names the tenant's schema",
          where);
    }
    const auto& wanted = std::get<std::string>(it->second);
    for (const auto& s : tenancy->schemas) {
      if (s == wanted) return s;  // the catalog's string: identifiers never come from a request
    }
    return fail<std::optional<std::string>>(
        errc::table_not_granted,
        "the session's @" + tenancy->schema_attribute + " is not one of the catalog's tenant schemas", where);
  }

  // A policy expression over the table's own columns, with session-only terms folded.
  std::optional<expr> policy_expression(const node& n, const detail::parsed_grant& g, const std::string& what,
                                        std::string_view text) {
    const auto saved_text = policy_text_;
    const auto saved_where = policy_where_;
    policy_text_ = text;
    policy_where_ = "role " + role_.name + ", grant on " + g.target->name + ", " + what;
    scope s;
    s.raw = g.target;
    s.policy = true;
    auto e = expression(n, s);
    policy_text_ = saved_text;
    policy_where_ = saved_where;
    return e;
  }

  std::optional<bool> fold_condition(const node& n, const detail::parsed_grant& g) {
    const auto saved_text = policy_text_;
    const auto saved_where = policy_where_;
    policy_text_ = g.source->when;
    policy_where_ = "role " + role_.name + ", grant on " + g.target->name + ", condition";
    auto v = fold(n);
    std::optional<bool> out;
    if (v) {
      if (const auto* b = std::get_if<bool>(&*v)) {
        out = *b;
      } else if (std::holds_alternative<std::monostate>(*v)) {
        out = false;
      } else {
        fail(errc::type_error, "a grant's condition must be true or false", n.where);
      }
    }
    policy_text_ = saved_text;
    policy_where_ = saved_where;
    return out;
  }

  // ---- folding session-only terms ----------------------------------------------------------

  using folded = std::optional<session_value>;

  static int compare_values(const session_value& a, const session_value& b, bool& comparable_out) {
    comparable_out = true;
    const auto as_double = [](const session_value& v, double& out) {
      if (const auto* i = std::get_if<std::int64_t>(&v)) {
        out = static_cast<double>(*i);
        return true;
      }
      if (const auto* d = std::get_if<double>(&v)) {
        out = *d;
        return true;
      }
      return false;
    };
    double x = 0;
    double y = 0;
    if (as_double(a, x) && as_double(b, y)) return x < y ? -1 : (x > y ? 1 : 0);
    if (const auto* s = std::get_if<std::string>(&a)) {
      if (const auto* t = std::get_if<std::string>(&b)) return s->compare(*t) < 0 ? -1 : (*s == *t ? 0 : 1);
    }
    if (const auto* p = std::get_if<bool>(&a)) {
      if (const auto* q = std::get_if<bool>(&b)) return *p == *q ? 0 : (*p ? 1 : -1);
    }
    comparable_out = false;
    return 0;
  }

  folded fold(const node& n) {
    switch (n.kind) {
      case kind::integer: {
        std::int64_t v = 0;
        std::from_chars(n.text.data(), n.text.data() + n.text.size(), v);
        return session_value{v};
      }
      case kind::decimal:
        return session_value{std::stod(n.text)};
      case kind::string:
        return session_value{n.text};
      case kind::boolean:
        return session_value{n.text == "true"};
      case kind::null:
        return session_value{};
      case kind::session: {
        auto it = who_.attributes.find(n.text);
        if (it == who_.attributes.end()) {
          return fail<folded>(
              errc::unknown_session_attribute,
              "the session gives no @" + n.text + ", which the policy of role " + role_.name + " reads",
              n.where);
        }
        return it->second;
      }
      case kind::unary: {
        auto v = fold(*n.items[0]);
        if (!v) return std::nullopt;
        if (n.text == "!") {
          if (std::holds_alternative<std::monostate>(*v)) return session_value{};
          if (const auto* b = std::get_if<bool>(&*v)) return session_value{!*b};
          return fail<folded>(errc::type_error, "! takes a condition", n.where);
        }
        if (const auto* i = std::get_if<std::int64_t>(&*v)) return session_value{-*i};
        if (const auto* d = std::get_if<double>(&*v)) return session_value{-*d};
        return fail<folded>(errc::type_error, "- takes a number", n.where);
      }
      case kind::binary: {
        auto a = fold(*n.items[0]);
        if (!a) return std::nullopt;
        auto b = fold(*n.items[1]);
        if (!b) return std::nullopt;
        const bool a_null = std::holds_alternative<std::monostate>(*a);
        const bool b_null = std::holds_alternative<std::monostate>(*b);
        if (n.text == "&&" || n.text == "||") {
          const auto* p = std::get_if<bool>(&*a);
          const auto* q = std::get_if<bool>(&*b);
          if ((p == nullptr && !a_null) || (q == nullptr && !b_null)) {
            return fail<folded>(errc::type_error, n.text + " takes conditions", n.where);
          }
          // NULL as false: a missing attribute value never widens access.
          const bool x = p != nullptr && *p;
          const bool y = q != nullptr && *q;
          return session_value{n.text == "&&" ? (x && y) : (x || y)};
        }
        if (n.text == "==" || n.text == "!=") {
          if (a_null || b_null) return session_value{(a_null && b_null) == (n.text == "==")};
        } else if (a_null || b_null) {
          return session_value{false};
        }
        bool ok = true;
        const int c = compare_values(*a, *b, ok);
        if (!ok) return fail<folded>(errc::type_error, "these values cannot be compared", n.where);
        if (n.text == "==") return session_value{c == 0};
        if (n.text == "!=") return session_value{c != 0};
        if (n.text == "<") return session_value{c < 0};
        if (n.text == ">") return session_value{c > 0};
        if (n.text == "<=") return session_value{c <= 0};
        return session_value{c >= 0};
      }
      case kind::pipeline: {
        auto v = fold(*n.items[0]);
        if (!v) return std::nullopt;
        for (const auto& item : n.items[1]->items[0]->items) {
          auto w = fold(*item);
          if (!w) return std::nullopt;
          bool ok = true;
          if (compare_values(*v, *w, ok) == 0 && ok) return session_value{true};
        }
        return session_value{false};
      }
      default:
        return fail<folded>(errc::type_error, "only session attributes and literals can be decided here",
                            n.where);
    }
  }

  // ---- transforms --------------------------------------------------------------------------

  bool transform(relation& r, const node& n) {
    std::string name;
    if (n.kind == kind::call) {
      name = name_of_call(n);
    } else if (n.kind == kind::ident && n.path.size() == 1) {
      name = n.path[0];
    } else {
      return fail(errc::invalid_relation, "a transform: select, derive, filter, sort, take, join, group, …",
                  n.where);
    }
    if (name == "select") return select_or_derive(r, n, true);
    if (name == "derive") return select_or_derive(r, n, false);
    if (name == "filter") return filter(r, n);
    if (name == "sort") return sort(r, n);
    if (name == "take") return take(r, n);
    if (name == "aggregate") return aggregate(r, n, {});
    if (name == "group") return group(r, n);
    if (name == "join") return join(r, n);
    if (name == "append") return append(r, n);
    if (name == "distinct") return distinct(r, n);
    if (name == "window") return window(r, n);
    if (name == "from")
      return fail(errc::invalid_relation, "from starts a pipeline; use join or append here", n.where);
    return fail(errc::unknown_function, "`" + name + "` is not a transform", n.where);
  }

  bool expect_args(const node& n, std::size_t count, const char* usage) {
    if (n.items.size() != count) return fail(errc::invalid_arguments, usage, n.where);
    return true;
  }

  // The fields of a tuple or a single expression, with their names.
  struct field {
    const node* value;
    std::optional<std::string> name;
  };
  static std::vector<field> fields_of(const node& n) {
    std::vector<field> out;
    if (n.items.empty()) return out;
    const node& arg = *n.items[0];
    const auto alias = n.aliases.empty() ? std::nullopt : n.aliases[0];
    if (arg.kind == kind::tuple) {
      for (std::size_t i = 0; i < arg.items.size(); ++i) {
        out.push_back({arg.items[i].get(), i < arg.aliases.size() ? arg.aliases[i] : std::nullopt});
      }
    } else {
      out.push_back({&arg, alias});
    }
    return out;
  }

  static bool refers_to_window(const relation& r, const node& n);

  bool select_or_derive(relation& r, const node& n, bool is_select) {
    if (!expect_args(n, 1,
                     is_select ? "select takes a tuple: select {a, b = c}"
                               : "derive takes a tuple: derive {x = a + b}")) {
      return false;
    }
    if (r.distinct || r.limited()) r = wrap(r);
    // select !{a, b}: every column but these.
    const node& arg = *n.items[0];
    if (is_select && arg.kind == kind::unary && arg.text == "!") {
      const node& excluded = *arg.items[0];
      std::vector<const node*> names;
      if (excluded.kind == kind::tuple) {
        for (const auto& item : excluded.items) names.push_back(item.get());
      } else {
        names.push_back(&excluded);
      }
      std::vector<bool> drop(r.columns.size(), false);
      for (const auto* item : names) {
        auto index = column_index(r, *item);
        if (!index) return false;
        drop[*index] = true;
      }
      std::vector<column_info> kept;
      for (std::size_t i = 0; i < r.columns.size(); ++i) {
        if (!drop[i]) kept.push_back(r.columns[i]);
      }
      r.columns = std::move(kept);
      return true;
    }
    window_spec spec;
    spec.order = r.sort;
    std::vector<column_info> result = is_select ? std::vector<column_info>{} : r.columns;
    if (is_select) {
      // Internal columns survive a select (a later stage of the same transform may read them).
      for (const auto& c : r.columns) {
        if (c.hidden) result.push_back(c);
      }
    }
    relation view = r;  // the scope: the old columns, then each new one as it is defined
    for (const auto& f : fields_of(n)) {
      if (f.value->kind == kind::ident && f.value->path.back() == "*") {
        auto cols = star(r, *f.value);
        if (!cols) return false;
        for (auto& c : *cols) result.push_back(std::move(c));
        continue;
      }
      scope s;
      s.self = &view;
      s.mode = call_mode::window;
      s.spec = &spec;
      auto e = expression(*f.value, s);
      if (!e) return false;
      if (e->window && !r.no_aggregate_tables.empty()) {
        return fail(errc::aggregate_not_granted, no_aggregate_message(r), f.value->where);
      }
      column_info c;
      c.name = f.name;
      if (!c.name && f.value->kind == kind::ident && f.value->path.back() != "this") {
        c.name = f.value->path.back();
        // A column passed through keeps its namespace and, for a table's, its catalog name.
        if (auto index = column_index(view, *f.value, true)) {
          c.ns = view.columns[*index].ns;
          c.from_catalog = view.columns[*index].from_catalog;
        }
      }
      c.sql = e->untyped ? e->as_text() : std::move(e->sql);
      c.type = e->type;
      c.aggregate = e->aggregate;
      c.window = e->window;
      replace_or_add(result, c);
      replace_or_add(view.columns, c);
    }
    r.columns = std::move(result);
    return true;
  }

  static void replace_or_add(std::vector<column_info>& columns, const column_info& c) {
    if (c.name) {
      for (auto& existing : columns) {
        if (!existing.hidden && existing.name == c.name && existing.ns == c.ns) {
          existing = c;
          return;
        }
      }
    }
    columns.push_back(c);
  }

  std::optional<std::vector<column_info>> star(const relation& r, const node& n) {
    std::vector<column_info> out;
    const std::string ns = n.path.size() >= 2 ? n.path[n.path.size() - 2] : "";
    for (const auto& c : r.columns) {
      if (c.hidden) continue;
      if (ns.empty() || c.ns == ns) out.push_back(c);
    }
    if (out.empty()) {
      return fail<std::optional<std::vector<column_info>>>(errc::unknown_column,
                                                           "no relation `" + ns + "` in scope", n.where);
    }
    return out;
  }

  [[nodiscard]] std::string no_aggregate_message(const relation& r) const {
    return "role `" + role_.name + "` may not aggregate the rows of table `" + r.no_aggregate_tables.front() +
           "` (its grant does not allow aggregates)";
  }

  bool filter(relation& r, const node& n) {
    if (!expect_args(n, 1, "filter takes a condition: filter age > 30")) return false;
    if (r.distinct || r.limited() || refers_to_window(r, *n.items[0])) r = wrap(r);
    scope s;
    s.self = &r;
    auto e = expression(*n.items[0], s);
    if (!e) return false;
    if (e->type != value_type::boolean && !loose(e->type)) {
      return fail(errc::type_error, "filter needs a condition, not a " + std::string(to_string(e->type)),
                  n.items[0]->where);
    }
    if (r.aggregated) {
      r.having.push_back(std::move(e->sql));
    } else {
      r.where.push_back(std::move(e->sql));
    }
    return true;
  }

  std::optional<std::vector<sort_key>> sort_keys(const relation& r, const node& arg) {
    std::vector<const node*> items;
    if (arg.kind == kind::tuple) {
      for (const auto& item : arg.items) items.push_back(item.get());
    } else {
      items.push_back(&arg);
    }
    std::vector<sort_key> keys;
    for (const auto* item : items) {
      bool descending = false;
      const node* value = item;
      if (item->kind == kind::unary && (item->text == "-" || item->text == "+")) {
        descending = item->text == "-";
        value = item->items[0].get();
      }
      scope s;
      s.self = &r;
      auto e = expression(*value, s);
      if (!e) return std::nullopt;
      keys.push_back({std::move(e->sql), descending});
    }
    return keys;
  }

  bool sort(relation& r, const node& n) {
    if (!expect_args(n, 1, "sort takes columns: sort {-salary, name}")) return false;
    if (r.distinct || r.limited()) r = wrap(r);
    auto keys = sort_keys(r, *n.items[0]);
    if (!keys) return false;
    r.sort = std::move(*keys);
    return true;
  }

  // A non-negative integer literal of `take` or a frame.
  std::optional<std::int64_t> integer_literal(const node& n, bool allow_negative = false) {
    const node* value = &n;
    bool negative = false;
    if (allow_negative && n.kind == kind::unary && n.text == "-") {
      negative = true;
      value = n.items[0].get();
    }
    if (value->kind != kind::integer) {
      return fail<std::optional<std::int64_t>>(errc::invalid_arguments, "a whole number", n.where);
    }
    std::int64_t v = 0;
    const auto [p, ec] = std::from_chars(value->text.data(), value->text.data() + value->text.size(), v);
    if (ec != std::errc{} || p != value->text.data() + value->text.size()) {
      return fail<std::optional<std::int64_t>>(errc::invalid_arguments, "a whole number that fits 64 bits",
                                               n.where);
    }
    return negative ? -v : v;
  }

  bool take(relation& r, const node& n) {
    if (!expect_args(n, 1, "take takes a count or a range: take 10, take 11..20")) return false;
    const node& arg = *n.items[0];
    std::int64_t skip = 0;
    std::optional<std::int64_t> count;
    if (arg.kind == kind::param) {
      if (r.limited()) r = wrap(r);
      r.limit_sql = parameter(arg).sql;
      return true;
    }
    if (arg.kind == kind::range) {
      std::int64_t first = 1;
      if (arg.items[0]) {
        auto v = integer_literal(*arg.items[0]);
        if (!v) return false;
        first = *v;
      }
      if (first < 1) return fail(errc::invalid_arguments, "a take range starts at 1 or later", arg.where);
      skip = first - 1;
      if (arg.items[1]) {
        auto last = integer_literal(*arg.items[1]);
        if (!last) return false;
        count = std::max<std::int64_t>(0, *last - first + 1);
      }
    } else {
      auto v = integer_literal(arg);
      if (!v) return false;
      count = std::max<std::int64_t>(0, *v);
    }
    if (r.limit_sql) r = wrap(r);
    // Composed with an earlier take: skip within what it kept.
    if (r.limit) {
      const std::int64_t left = std::max<std::int64_t>(0, *r.limit - skip);
      count = count ? std::min(*count, left) : left;
    }
    r.offset += skip;
    if (count) r.limit = count;
    return true;
  }

  bool aggregate(relation& r, const node& n, const std::vector<column_info>& keys) {
    if (!expect_args(n, 1, "aggregate takes a tuple: aggregate {n = count this, total = sum x}"))
      return false;
    if (!r.no_aggregate_tables.empty())
      return fail(errc::aggregate_not_granted, no_aggregate_message(r), n.where);
    if (keys.empty() && (r.aggregated || r.distinct || r.limited() || r.has_window_columns())) r = wrap(r);
    std::vector<column_info> result = keys;
    for (const auto& f : fields_of(n)) {
      scope s;
      s.self = &r;
      s.mode = call_mode::aggregate;
      auto e = expression(*f.value, s);
      if (!e) return false;
      if (!e->aggregate && !is_constant(e->sql)) {
        return fail(errc::invalid_arguments,
                    "aggregate takes aggregate functions (count, sum, min, …); group by a column to keep it",
                    f.value->where);
      }
      column_info c;
      c.name = f.name;
      c.sql = std::move(e->sql);
      c.type = e->type;
      c.aggregate = true;
      result.push_back(std::move(c));
    }
    r.columns = std::move(result);
    r.aggregated = true;
    r.sort.clear();
    return true;
  }

  static bool is_constant(const std::string& sql) {
    return !sql.empty() &&
           (std::isdigit(static_cast<unsigned char>(sql[0])) != 0 || sql[0] == '$' || sql == "NULL");
  }

  bool group(relation& r, const node& n) {
    if (n.items.size() != 2) {
      return fail(errc::invalid_arguments,
                  "group takes keys and a pipeline: group {dept} (aggregate {n = count this})", n.where);
    }
    if (!r.no_aggregate_tables.empty())
      return fail(errc::aggregate_not_granted, no_aggregate_message(r), n.where);
    if (r.aggregated || r.distinct || r.limited() || r.has_window_columns()) r = wrap(r);
    // The keys, as columns.
    std::vector<column_info> keys;
    {
      const node& key_arg = *n.items[0];
      std::vector<field> fields;
      if (key_arg.kind == kind::tuple) {
        for (std::size_t i = 0; i < key_arg.items.size(); ++i) {
          fields.push_back(
              {key_arg.items[i].get(), i < key_arg.aliases.size() ? key_arg.aliases[i] : std::nullopt});
        }
      } else {
        fields.push_back({&key_arg, n.aliases.empty() ? std::nullopt : n.aliases[0]});
      }
      for (const auto& f : fields) {
        scope s;
        s.self = &r;
        auto e = expression(*f.value, s);
        if (!e) return false;
        column_info c;
        c.name = f.name;
        if (!c.name && f.value->kind == kind::ident) {
          c.name = f.value->path.back();
          if (auto index = column_index(r, *f.value, true)) {
            c.ns = r.columns[*index].ns;
            c.from_catalog = r.columns[*index].from_catalog;
          }
        }
        c.sql = std::move(e->sql);
        c.type = e->type;
        keys.push_back(std::move(c));
      }
    }
    std::vector<const node*> inner;
    if (n.items[1]->kind == kind::pipeline) {
      for (const auto& item : n.items[1]->items) inner.push_back(item.get());
    } else {
      inner.push_back(n.items[1].get());
    }
    std::vector<sort_key> inner_sort;
    bool did_take = false;
    for (std::size_t i = 0; i < inner.size(); ++i) {
      const node& stage = *inner[i];
      const std::string name = stage.kind == kind::call ? name_of_call(stage) : "";
      if (name == "aggregate") {
        if (i + 1 != inner.size() || did_take) {
          return fail(errc::invalid_relation, "in a group, aggregate is the last stage", stage.where);
        }
        if (!aggregate(r, stage, keys)) return false;
        for (const auto& k : keys) r.group_by.push_back(k.sql);
        return true;
      }
      if (name == "sort") {
        if (!expect_args(stage, 1, "sort takes columns")) return false;
        auto k = sort_keys(r, *stage.items[0]);
        if (!k) return false;
        inner_sort = std::move(*k);
        continue;
      }
      if (name == "take") {
        if (i + 1 != inner.size())
          return fail(errc::invalid_relation, "in a group, take is the last stage", stage.where);
        if (!group_take(r, stage, keys, inner_sort)) return false;
        did_take = true;
        continue;
      }
      if (name == "derive" || name == "select") {
        if (!partitioned(r, stage, keys, inner_sort.empty() ? r.sort : inner_sort, name == "select"))
          return false;
        continue;
      }
      if (name == "window") {
        if (!window_stage(r, stage, keys, inner_sort.empty() ? r.sort : inner_sort)) return false;
        continue;
      }
      return fail(errc::invalid_relation, "in a group: aggregate, sort, take, derive, select or window",
                  stage.where);
    }
    return true;
  }

  // take inside a group: the first rows of each group, by a row number over the partition.
  bool group_take(relation& r, const node& stage, const std::vector<column_info>& keys,
                  const std::vector<sort_key>& order) {
    if (!expect_args(stage, 1, "take takes a count or a range")) return false;
    std::int64_t first = 1;
    std::optional<std::int64_t> last;
    const node& arg = *stage.items[0];
    if (arg.kind == kind::range) {
      if (arg.items[0]) {
        auto v = integer_literal(*arg.items[0]);
        if (!v) return false;
        first = *v;
      }
      if (arg.items[1]) {
        auto v = integer_literal(*arg.items[1]);
        if (!v) return false;
        last = *v;
      }
    } else {
      auto v = integer_literal(arg);
      if (!v) return false;
      last = *v;
    }
    if (r.limited() || r.distinct) r = wrap(r);
    std::string over = "ROW_NUMBER() OVER (";
    if (!keys.empty()) {
      over += "PARTITION BY ";
      for (std::size_t i = 0; i < keys.size(); ++i) over += (i > 0 ? ", " : "") + keys[i].sql;
    }
    if (!order.empty()) {
      std::string o;
      append_order(o, order);
      over += keys.empty() ? o.substr(1) : o;
    }
    over += ")";
    column_info rn;
    rn.sql = std::move(over);
    rn.window = true;
    rn.hidden = true;
    rn.type = value_type::integer;
    r.columns.push_back(std::move(rn));
    r = wrap(r);
    const std::string number = r.columns.back().sql;
    r.columns.pop_back();
    if (first > 1) r.where.push_back(number + " >= " + std::to_string(first));
    if (last) r.where.push_back(number + " <= " + std::to_string(*last));
    return true;
  }

  bool partitioned(relation& r, const node& stage, const std::vector<column_info>& keys,
                   const std::vector<sort_key>& order, bool is_select) {
    window_spec spec;
    for (const auto& k : keys) spec.partition.push_back(k.sql);
    spec.order = order;
    return derive_over(r, stage, spec, is_select);
  }

  bool derive_over(relation& r, const node& stage, const window_spec& spec, bool is_select) {
    if (!expect_args(stage, 1, "derive takes a tuple: derive {x = …}")) return false;
    if (!r.no_aggregate_tables.empty())
      return fail(errc::aggregate_not_granted, no_aggregate_message(r), stage.where);
    std::vector<column_info> result = is_select ? std::vector<column_info>{} : r.columns;
    relation view = r;
    for (const auto& f : fields_of(stage)) {
      scope s;
      s.self = &view;
      s.mode = call_mode::window;
      s.spec = &spec;
      auto e = expression(*f.value, s);
      if (!e) return false;
      column_info c;
      c.name = f.name;
      if (!c.name && f.value->kind == kind::ident) c.name = f.value->path.back();
      c.sql = std::move(e->sql);
      c.type = e->type;
      c.window = e->window;
      c.aggregate = e->aggregate;
      replace_or_add(result, c);
      replace_or_add(view.columns, c);
    }
    r.columns = std::move(result);
    return true;
  }

  std::optional<std::string> frame_bound(const node* n, bool start) {
    if (n == nullptr) return std::string(start ? "UNBOUNDED PRECEDING" : "UNBOUNDED FOLLOWING");
    auto v = integer_literal(*n, true);
    if (!v) return std::nullopt;
    if (*v == 0) return std::string("CURRENT ROW");
    if (*v < 0) return std::to_string(-*v) + " PRECEDING";
    return std::to_string(*v) + " FOLLOWING";
  }

  // `r` must not need wrapping (the keys and order are SQL over its FROM).
  bool window_stage(relation& r, const node& n, const std::vector<column_info>& keys,
                    std::vector<sort_key> order) {
    if (n.items.size() != 1) {
      return fail(errc::invalid_arguments,
                  "window takes a frame and a pipeline: window rows:-2..0 (derive {…})", n.where);
    }
    KEEL_ASSERT(!r.limited() && !r.distinct);
    window_spec spec;
    for (const auto& k : keys) spec.partition.push_back(k.sql);
    spec.order = std::move(order);
    for (const auto& arg : n.named) {
      if (arg.name == "rows" || arg.name == "range") {
        if (arg.value->kind != kind::range) {
          return fail(errc::invalid_arguments, arg.name + ": takes a range, like -2..0", arg.where);
        }
        auto a = frame_bound(arg.value->items[0].get(), true);
        if (!a) return false;
        auto b = frame_bound(arg.value->items[1].get(), false);
        if (!b) return false;
        spec.frame = (arg.name == "rows" ? "ROWS BETWEEN " : "RANGE BETWEEN ") + *a + " AND " + *b;
      } else if (arg.name == "expanding") {
        if (arg.value->kind != kind::boolean)
          return fail(errc::invalid_arguments, "expanding: true or false", arg.where);
        if (arg.value->text == "true") spec.frame = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW";
      } else if (arg.name == "rolling") {
        auto v = integer_literal(*arg.value);
        if (!v) return false;
        if (*v < 1) return fail(errc::invalid_arguments, "rolling: a count of rows, 1 or more", arg.where);
        spec.frame = "ROWS BETWEEN " + std::to_string(*v - 1) + " PRECEDING AND CURRENT ROW";
      } else {
        return fail(errc::invalid_arguments, "window takes rows:, range:, expanding: or rolling:", arg.where);
      }
    }
    spec.explicit_frame = !spec.frame.empty();
    std::vector<const node*> inner;
    if (n.items[0]->kind == kind::pipeline) {
      for (const auto& item : n.items[0]->items) inner.push_back(item.get());
    } else {
      inner.push_back(n.items[0].get());
    }
    for (const auto* stage : inner) {
      const std::string name = stage->kind == kind::call ? name_of_call(*stage) : "";
      if (name == "sort") {
        if (!expect_args(*stage, 1, "sort takes columns")) return false;
        auto k = sort_keys(r, *stage->items[0]);
        if (!k) return false;
        spec.order = std::move(*k);
        continue;
      }
      if (name != "derive" && name != "select") {
        return fail(errc::invalid_relation, "in a window: derive, select or sort", stage->where);
      }
      if (!derive_over(r, *stage, spec, name == "select")) return false;
    }
    return true;
  }

  bool window(relation& r, const node& n) {
    if (r.limited() || r.distinct) r = wrap(r);
    return window_stage(r, n, {}, r.sort);
  }

  bool distinct(relation& r, const node& n) {
    if (n.kind == kind::call && !n.items.empty()) {
      return fail(errc::invalid_arguments, "distinct takes no arguments: select the columns first", n.where);
    }
    if (r.limited() || r.distinct) r = wrap(r);
    r.distinct = true;
    r.sort.clear();
    std::erase_if(r.columns, [](const column_info& c) { return c.hidden; });
    return true;
  }

  bool join(relation& r, const node& n) {
    if (n.items.size() != 2) {
      return fail(errc::invalid_arguments,
                  "join takes a relation and a condition: join d = departments (==dept_id)", n.where);
    }
    std::string side = "INNER";
    for (const auto& arg : n.named) {
      if (arg.name != "side")
        return fail(errc::invalid_arguments, "join takes side:left|right|full", arg.where);
      const std::string s =
          arg.value->kind == kind::ident && arg.value->path.size() == 1 ? arg.value->path[0] : "";
      if (s == "left") {
        side = "LEFT";
      } else if (s == "right") {
        side = "RIGHT";
      } else if (s == "full") {
        side = "FULL";
      } else if (s == "inner") {
        side = "INNER";
      } else {
        return fail(errc::invalid_arguments, "side: is left, right, full or inner", arg.value->where);
      }
    }
    if (!r.plain()) r = wrap(r);
    const auto alias = n.aliases.empty() ? std::nullopt : n.aliases[0];
    auto right = relation_ref(*n.items[0], alias);
    if (!right) return false;
    if (!right->plain() || right->from.find(" JOIN ") != std::string::npos) *right = wrap(*right);
    // The condition: `==col` is this.col == that.col.
    const node& cond = *n.items[1];
    std::string on;
    scope s;
    s.self = &r;
    s.that = &*right;
    if (cond.kind == kind::unary && cond.text == "==") {
      const node& col = *cond.items[0];
      auto left_index = column_index(r, col);
      if (!left_index) return false;
      auto right_index = column_index(*right, col);
      if (!right_index) return false;
      on = r.columns[*left_index].sql + " = " + right->columns[*right_index].sql;
    } else {
      auto e = expression(cond, s);
      if (!e) return false;
      if (e->type != value_type::boolean && !loose(e->type)) {
        return fail(errc::type_error, "a join's condition must be true or false", cond.where);
      }
      on = std::move(e->sql);
    }
    r.from += " " + side + " JOIN " + right->from + " ON " + on;
    for (auto& c : right->columns) r.columns.push_back(std::move(c));
    for (auto& t : right->no_aggregate_tables) r.no_aggregate_tables.push_back(std::move(t));
    for (auto& h : right->hidden) r.hidden.push_back(std::move(h));
    return true;
  }

  bool append(relation& r, const node& n) {
    if (!expect_args(n, 1, "append takes a relation: append (from archived_orders)")) return false;
    auto other = relation_ref(*n.items[0], std::nullopt);
    if (!other) return false;
    const auto visible = [](const relation& x) {
      return std::count_if(x.columns.begin(), x.columns.end(),
                           [](const column_info& c) { return !c.hidden; });
    };
    if (visible(r) != visible(*other)) {
      return fail(errc::invalid_relation,
                  "append needs relations with as many columns: " + std::to_string(visible(r)) + " and " +
                      std::to_string(visible(*other)),
                  n.where);
    }
    std::erase_if(r.columns, [](const column_info& c) { return c.hidden; });
    std::erase_if(other->columns, [](const column_info& c) { return c.hidden; });
    for (std::size_t i = 0; i < r.columns.size(); ++i) {
      if (!comparable(r.columns[i].type, other->columns[i].type, false)) {
        return fail(errc::type_error,
                    "append: column " + std::to_string(i + 1) + " is " +
                        std::string(to_string(r.columns[i].type)) + " on one side and " +
                        std::string(to_string(other->columns[i].type)) + " on the other",
                    n.where);
      }
    }
    std::string left_sql = render(r, false);
    std::string right_sql = render(*other, false);
    const auto a = next_alias();
    relation out;
    out.from = "((" + left_sql + ") UNION ALL (" + right_sql + ")) AS " + a;
    for (std::size_t i = 0; i < r.columns.size(); ++i) {
      auto c = r.columns[i];
      c.sql = a + ".c" + std::to_string(i);
      c.aggregate = false;
      c.window = false;
      if (loose(c.type)) c.type = other->columns[i].type;
      out.columns.push_back(std::move(c));
    }
    out.no_aggregate_tables = r.no_aggregate_tables;
    for (auto& t : other->no_aggregate_tables) out.no_aggregate_tables.push_back(std::move(t));
    out.hidden = r.hidden;
    for (auto& h : other->hidden) out.hidden.push_back(std::move(h));
    r = std::move(out);
    return true;
  }

  // ---- names -------------------------------------------------------------------------------

  // The column a name means in `r` (`name`, `ns.name`, `this.name`); quiet: no error on a miss.
  std::optional<std::size_t> column_index(const relation& r, const node& n, bool quiet = false) {
    std::vector<std::string> path = n.path;
    if (n.kind != kind::ident || path.empty()) {
      if (quiet) return std::nullopt;
      return fail<std::optional<std::size_t>>(errc::invalid_arguments, "a column's name", n.where);
    }
    if (path.size() >= 2 && (path[0] == "this" || path[0] == "that")) path.erase(path.begin());
    const std::string& name = path.back();
    const std::string ns = path.size() >= 2 ? path[path.size() - 2] : "";
    std::optional<std::size_t> found;
    // A column the pipeline derived (no namespace) shadows the sources' columns of its name.
    if (ns.empty()) {
      for (std::size_t i = r.columns.size(); i-- > 0;) {
        const auto& c = r.columns[i];
        if (!c.hidden && c.name == name && c.ns.empty()) return i;
      }
    }
    for (std::size_t i = 0; i < r.columns.size(); ++i) {
      const auto& c = r.columns[i];
      if (c.hidden || c.name != name) continue;
      if (!ns.empty() && c.ns != ns) continue;
      if (found && r.columns[*found].ns != c.ns) {
        if (quiet) return std::nullopt;
        return fail<std::optional<std::size_t>>(
            errc::ambiguous_column,
            joined({"`", name, "` is a column of both `", r.columns[*found].ns, "` and `", c.ns, "`: write ",
                    r.columns[*found].ns, ".", name, " or ", c.ns, ".", name}),
            n.where);
      }
      found = i;  // a later definition of the same name in the same relation shadows
    }
    if (found || quiet) return found;
    for (const auto& h : r.hidden) {
      if ((!ns.empty() && h.ns != ns) || std::find(h.names.begin(), h.names.end(), name) == h.names.end())
        continue;
      return fail<std::optional<std::size_t>>(
          errc::column_not_granted,
          "column `" + name + "` of table `" + h.table + "` is not granted to role `" + role_.name + "`",
          n.where);
    }
    std::string shown;
    for (const auto& c : r.columns) {
      if (c.hidden || !c.name) continue;
      if (!shown.empty()) shown += ", ";
      shown += (c.ns.empty() ? "" : c.ns + ".") + *c.name;
      if (shown.size() > 200) {
        shown += ", …";
        break;
      }
    }
    return fail<std::optional<std::size_t>>(errc::unknown_column,
                                            "no column `" + (ns.empty() ? name : ns + "." + name) +
                                                "` in this relation (it has " +
                                                (shown.empty() ? "none" : shown) + ")",
                                            n.where);
  }

  std::optional<expr> reference(const node& n, const scope& s) {
    if (s.raw != nullptr) {
      // A policy expression: the table's own columns, hidden ones included.
      if (n.path.size() != 1) {
        return fail<std::optional<expr>>(errc::unknown_column,
                                         "a column of " + s.raw->name + " (unqualified)", n.where);
      }
      const auto* c = s.raw->find(n.path[0]);
      if (c == nullptr) {
        return fail<std::optional<expr>>(
            errc::unknown_column, "table `" + s.raw->name + "` has no column `" + n.path[0] + "`", n.where);
      }
      return expr{quote_ident(c->name), c->type};
    }
    if (s.self == nullptr) {
      return fail<std::optional<expr>>(errc::unknown_column, "no columns are in scope here", n.where);
    }
    // this.x / that.x choose the side of a join.
    const relation* target = s.self;
    if (n.path.size() >= 2 && n.path[0] == "that") {
      if (s.that == nullptr)
        return fail<std::optional<expr>>(errc::unknown_column, "`that` is a join's right side", n.where);
      target = s.that;
    } else if (s.that != nullptr && !(n.path.size() >= 2 && n.path[0] == "this")) {
      // Either side of a join may have it.
      auto left = column_index(*s.self, n, true);
      auto right = column_index(*s.that, n, true);
      if (left && right) {
        return fail<std::optional<expr>>(errc::ambiguous_column,
                                         "both sides of the join have `" + n.path.back() + "`: write this." +
                                             n.path.back() + " or that." + n.path.back(),
                                         n.where);
      }
      if (right) {
        target = s.that;
      } else if (!left && n.path.size() >= 2) {
        // Neither side has it: say so of the side the qualifier names (it may be hidden there).
        const auto& qualifier = n.path[n.path.size() - 2];
        const auto names = [&](const relation& r) {
          return std::any_of(r.columns.begin(), r.columns.end(),
                             [&](const column_info& c) { return c.ns == qualifier; }) ||
                 std::any_of(r.hidden.begin(), r.hidden.end(),
                             [&](const hidden_columns& h) { return h.ns == qualifier; });
        };
        if (names(*s.that) && !names(*s.self)) target = s.that;
      }
    }
    auto index = column_index(*target, n);
    if (!index) return std::nullopt;
    const auto& c = target->columns[*index];
    expr e{c.sql, c.type};
    e.aggregate = c.aggregate;
    e.window = c.window;
    return e;
  }

  // ---- expressions -------------------------------------------------------------------------

  expr parameter(const node& n) {
    parameter_slot p;
    if (!n.text.empty() && std::isdigit(static_cast<unsigned char>(n.text[0])) != 0) {
      p.from = parameter_slot::source::positional;
      std::from_chars(n.text.data(), n.text.data() + n.text.size(), p.position);
      p.text = n.text;
    } else {
      p.from = parameter_slot::source::named;
      p.text = n.text;
    }
    expr e{slot(std::move(p)), value_type::unknown};
    e.untyped = true;
    return e;
  }

  std::optional<expr> expression(const node& n, const scope& s) {
    switch (n.kind) {
      case kind::integer:
        return expr{n.text, value_type::integer};
      case kind::decimal:
        return expr{n.text, value_type::decimal};
      case kind::boolean:
        return expr{n.text == "true" ? "TRUE" : "FALSE", value_type::boolean};
      case kind::null:
        return expr{"NULL", value_type::null};
      case kind::string: {
        if (rls_) return expr{quote_literal(n.text), value_type::text};  // a script has no parameters
        expr e{literal_slot(n.text), value_type::text};
        e.text_literal = true;
        e.untyped = true;
        return e;
      }
      case kind::date:
        return expr{"DATE '" + n.text + "'", value_type::date};
      case kind::time:
        return expr{"TIME '" + n.text + "'", value_type::time};
      case kind::timestamp:
        return expr{"TIMESTAMP '" + n.text + "'", value_type::timestamp};
      case kind::param:
        if (s.policy) {
          return fail<std::optional<expr>>(errc::invalid_arguments,
                                           "a policy reads session attributes (@name), not query parameters",
                                           n.where);
        }
        return parameter(n);
      case kind::session:
        return session_attribute_ref(n, s);
      case kind::ident:
        if (n.path.size() == 2 && n.path[0] == "math" && n.path[1] == "pi")
          return expr{"PI()", value_type::decimal};
        if (n.path.size() == 1 && n.path[0] == "this") {
          return fail<std::optional<expr>>(errc::invalid_arguments,
                                           "`this` is the relation: count this, this.column", n.where);
        }
        return reference(n, s);
      case kind::unary:
        return unary(n, s);
      case kind::binary:
        return binary(n, s);
      case kind::case_:
        return case_expression(n, s);
      case kind::fstring:
        return fstring(n, s);
      case kind::call:
        return call(n, s, std::nullopt);
      case kind::pipeline:
        return piped(n, s);
      case kind::range:
        return fail<std::optional<expr>>(errc::invalid_arguments, "a range stands only after `in` or in take",
                                         n.where);
      case kind::tuple:
        if (n.items.size() == 1) return expression(*n.items[0], s);
        return fail<std::optional<expr>>(errc::invalid_arguments, "a tuple is not a value here", n.where);
      case kind::array:
        return fail<std::optional<expr>>(errc::invalid_arguments, "an array stands only after `in`", n.where);
    }
    return fail<std::optional<expr>>(errc::syntax_error, "an expression", n.where);
  }

  std::optional<expr> session_attribute_ref(const node& n, const scope& /*s*/) {
    const auto* a = st_.cat.find_attribute(n.text);
    if (a == nullptr) {
      return fail<std::optional<expr>>(errc::unknown_session_attribute,
                                       "@" + n.text + " is not a session attribute of the catalog", n.where);
    }
    if (rls_) return expr{setting_of(*a), a->array ? value_type::other : a->type};
    expr e{slot({parameter_slot::source::attribute, n.text, 0}), a->array ? value_type::other : a->type};
    e.untyped = true;
    return e;
  }

  // Row-level security reads a session attribute from the setting `keel.<name>` (set per
  // transaction by the application: set_config('keel.tenant', '7', true)); unset is NULL.
  static std::string setting_of(const session_attribute& a) {
    std::string type = "text";
    switch (a.type) {
      case value_type::integer:
        type = "bigint";
        break;
      case value_type::decimal:
        type = "numeric";
        break;
      case value_type::boolean:
        type = "boolean";
        break;
      case value_type::date:
        type = "date";
        break;
      case value_type::timestamp:
        type = "timestamp";
        break;
      default:
        break;
    }
    std::string setting = "NULLIF(current_setting(" + quote_literal("keel." + a.name) + ", true), '')";
    if (a.array) return "string_to_array(" + setting + ", ',')::" + type + "[]";
    return setting + "::" + type;
  }

  std::optional<expr> unary(const node& n, const scope& s) {
    if (s.policy && !rls_ && is_foldable(n) && n.text == "!") return folded_expr(n);
    auto v = expression(*n.items[0], s);
    if (!v) return std::nullopt;
    if (n.text == "!") {
      if (v->type != value_type::boolean && !loose(v->type)) {
        return fail<std::optional<expr>>(errc::type_error, "! takes a condition", n.where);
      }
      return merge("(NOT " + v->sql + ")", value_type::boolean, *v);
    }
    if (n.text == "-" || n.text == "+") {
      if (!numeric(v->type))
        return fail<std::optional<expr>>(errc::type_error, n.text + " takes a number", n.where);
      return merge(n.text == "-" ? "(-" + v->sql + ")" : v->sql, v->type, *v);
    }
    return fail<std::optional<expr>>(errc::syntax_error, "`==col` stands only in a join's condition",
                                     n.where);
  }

  static expr merge(std::string sql, value_type t, const expr& a) {
    expr e{std::move(sql), t};
    e.aggregate = a.aggregate;
    e.window = a.window;
    return e;
  }
  static expr merge(std::string sql, value_type t, const expr& a, const expr& b) {
    expr e{std::move(sql), t};
    e.aggregate = a.aggregate || b.aggregate;
    e.window = a.window || b.window;
    return e;
  }

  // A session-only term of a policy, decided now: TRUE or FALSE in the SQL.
  std::optional<expr> folded_expr(const node& n) {
    auto v = fold(n);
    if (!v) return std::nullopt;
    if (const auto* b = std::get_if<bool>(&*v)) return expr{*b ? "TRUE" : "FALSE", value_type::boolean};
    if (std::holds_alternative<std::monostate>(*v)) return expr{"FALSE", value_type::boolean};
    return fail<std::optional<expr>>(errc::type_error,
                                     "a condition on session attributes must be true or false", n.where);
  }

  static value_type arithmetic_type(const std::string& op, value_type a, value_type b) {
    if (op == "/" || op == "**") return value_type::decimal;
    if (op == "//") return value_type::integer;
    if (a == value_type::decimal || b == value_type::decimal) return value_type::decimal;
    if (a == value_type::integer && b == value_type::integer) return value_type::integer;
    return loose(a) ? b : a;
  }

  std::optional<expr> binary(const node& n, const scope& s) {
    const std::string& op = n.text;
    if (s.policy && !rls_ && is_foldable(n) &&
        (op == "==" || op == "!=" || op == "<" || op == ">" || op == "<=" || op == ">=" || op == "&&" ||
         op == "||")) {
      return folded_expr(n);
    }
    auto a = expression(*n.items[0], s);
    if (!a) return std::nullopt;
    auto b = expression(*n.items[1], s);
    if (!b) return std::nullopt;
    if (op == "&&" || op == "||") {
      for (const auto* side : {&*a, &*b}) {
        if (side->type != value_type::boolean && !loose(side->type)) {
          return fail<std::optional<expr>>(
              errc::type_error, op + " takes conditions, not a " + std::string(to_string(side->type)),
              n.where);
        }
      }
      // Folded policy terms simplify: TRUE || x is TRUE, FALSE && x is FALSE.
      if (op == "&&") {
        if (a->sql == "FALSE" || b->sql == "FALSE") return expr{"FALSE", value_type::boolean};
        if (a->sql == "TRUE") return *b;
        if (b->sql == "TRUE") return *a;
      } else {
        if (a->sql == "TRUE" || b->sql == "TRUE") return expr{"TRUE", value_type::boolean};
        if (a->sql == "FALSE") return *b;
        if (b->sql == "FALSE") return *a;
      }
      return merge("(" + a->sql + (op == "&&" ? " AND " : " OR ") + b->sql + ")", value_type::boolean, *a,
                   *b);
    }
    if (op == "==" || op == "!=") {
      if (b->type == value_type::null || a->type == value_type::null) {
        const auto& value = b->type == value_type::null ? *a : *b;
        return merge("(" + value.sql + (op == "==" ? " IS NULL)" : " IS NOT NULL)"), value_type::boolean, *a,
                     *b);
      }
    }
    if (op == "==" || op == "!=" || op == "<" || op == ">" || op == "<=" || op == ">=") {
      if (!comparable(a->type, b->type, b->text_literal) && !comparable(b->type, a->type, a->text_literal)) {
        return fail<std::optional<expr>>(errc::type_error,
                                         "cannot compare a " + std::string(to_string(a->type)) + " with a " +
                                             std::string(to_string(b->type)),
                                         n.where);
      }
      const std::string sql_op = op == "==" ? "=" : (op == "!=" ? "<>" : op);
      return merge("(" + a->sql + " " + sql_op + " " + b->sql + ")", value_type::boolean, *a, *b);
    }
    if (op == "??") {
      const auto t = a->type == value_type::null ? b->type : a->type;
      return merge("COALESCE(" + a->sql + ", " + b->sql + ")", t, *a, *b);
    }
    if (op == "~=") {
      if ((a->type != value_type::text && !loose(a->type)) ||
          (b->type != value_type::text && !loose(b->type))) {
        return fail<std::optional<expr>>(errc::type_error, "~= matches text against a regular expression",
                                         n.where);
      }
      return merge("(" + a->as_text() + " ~ " + b->as_text() + ")", value_type::boolean, *a, *b);
    }
    if (op == "+" || op == "-" || op == "*" || op == "/" || op == "//" || op == "%" || op == "**") {
      for (const auto* side : {&*a, &*b}) {
        if (!numeric(side->type)) {
          return fail<std::optional<expr>>(
              errc::type_error, op + " takes numbers, not a " + std::string(to_string(side->type)), n.where);
        }
      }
      const auto t = arithmetic_type(op, a->type, b->type);
      std::string sql;
      if (op == "/") {
        sql = "(" + a->sql + " * 1.0 / " + b->sql + ")";
      } else if (op == "//") {
        sql = "TRUNC(" + a->sql + " * 1.0 / " + b->sql + ")";
        if (a->type == value_type::integer && b->type == value_type::integer)
          sql = "(" + a->sql + " / " + b->sql + ")";
      } else if (op == "%") {
        sql = "MOD(" + a->sql + ", " + b->sql + ")";
      } else if (op == "**") {
        sql = "POW(" + a->sql + ", " + b->sql + ")";
      } else {
        sql = "(" + a->sql + " " + op + " " + b->sql + ")";
      }
      return merge(std::move(sql), t, *a, *b);
    }
    return fail<std::optional<expr>>(errc::syntax_error, "an operator", n.where);
  }

  std::optional<expr> case_expression(const node& n, const scope& s) {
    std::string sql = "CASE";
    expr out{"", value_type::null};
    for (std::size_t i = 0; i + 1 < n.items.size(); i += 2) {
      auto c = expression(*n.items[i], s);
      if (!c) return std::nullopt;
      auto v = expression(*n.items[i + 1], s);
      if (!v) return std::nullopt;
      if (c->type != value_type::boolean && !loose(c->type)) {
        return fail<std::optional<expr>>(errc::type_error, "a case's condition must be true or false",
                                         n.items[i]->where);
      }
      if (c->sql == "TRUE") {
        sql += " ELSE " + v->sql;
      } else {
        sql += " WHEN " + c->sql + " THEN " + (v->untyped ? v->as_text() : v->sql);
      }
      if (out.type == value_type::null || out.type == value_type::unknown) out.type = v->type;
      out.aggregate = out.aggregate || c->aggregate || v->aggregate;
      out.window = out.window || c->window || v->window;
    }
    out.sql = sql + " END";
    return out;
  }

  std::optional<expr> fstring(const node& n, const scope& s) {
    std::string sql = "CONCAT(";
    expr out{"", value_type::text};
    for (std::size_t i = 0; i < n.items.size(); ++i) {
      auto e = expression(*n.items[i], s);
      if (!e) return std::nullopt;
      if (i > 0) sql += ", ";
      sql += e->as_text();
      out.aggregate = out.aggregate || e->aggregate;
      out.window = out.window || e->window;
    }
    out.sql = sql + ")";
    return out;
  }

  // `x | f a` is `f a x`: the value goes last.
  std::optional<expr> piped(const node& n, const scope& s) {
    if (n.items.empty()) return fail<std::optional<expr>>(errc::syntax_error, "an expression", n.where);
    if (n.items[0]->kind == kind::call && n.items[0]->path == std::vector<std::string>{"from"}) {
      return fail<std::optional<expr>>(errc::invalid_arguments, "a relation is not a value here", n.where);
    }
    auto value = expression(*n.items[0], s);
    if (!value) return std::nullopt;
    for (std::size_t i = 1; i < n.items.size(); ++i) {
      const node& f = *n.items[i];
      if (f.kind == kind::call) {
        value = call(f, s, std::move(*value));
      } else if (f.kind == kind::ident) {
        node bare;
        bare.kind = kind::call;
        bare.where = f.where;
        bare.path = f.path;
        value = call(bare, s, std::move(*value));
      } else {
        return fail<std::optional<expr>>(errc::invalid_arguments, "a function after |", f.where);
      }
      if (!value) return std::nullopt;
    }
    return value;
  }

  // ---- functions ---------------------------------------------------------------------------

  struct call_args {
    std::vector<const node*> nodes;  // as written
    std::optional<expr> piped;       // the value piped in: the last argument
    [[nodiscard]] std::size_t size() const { return nodes.size() + (piped ? 1 : 0); }
  };

  std::optional<expr> arg(const call_args& a, std::size_t i, const scope& s) {
    if (i < a.nodes.size()) return expression(*a.nodes[i], s);
    return *a.piped;
  }

  std::optional<expr> call(const node& n, const scope& s, std::optional<expr> piped_value) {
    std::vector<std::string> path = n.path;
    if (path.size() >= 2 && path[0] == "std") path.erase(path.begin());
    std::string name;
    for (std::size_t i = 0; i < path.size(); ++i) name += (i > 0 ? "." : "") + path[i];
    if (!n.named.empty()) {
      return fail<std::optional<expr>>(errc::invalid_arguments, name + " takes no named arguments",
                                       n.named[0].where);
    }
    call_args a;
    for (const auto& item : n.items) a.nodes.push_back(item.get());
    a.piped = std::move(piped_value);

    if (name == "in") return in(n, a, s);
    if (name == "as") return cast(n, a, s);

    // Aggregates, and the window functions.
    static const std::map<std::string, std::string, std::less<>> aggregates = {
        {"sum", "SUM"},     {"min", "MIN"},       {"max", "MAX"},        {"average", "AVG"},
        {"avg", "AVG"},     {"stddev", "STDDEV"}, {"count", "COUNT"},    {"count_distinct", "COUNT"},
        {"any", "BOOL_OR"}, {"all", "BOOL_AND"},  {"every", "BOOL_AND"}, {"concat_array", "ARRAY_AGG"},
    };
    static const std::set<std::string, std::less<>> windows = {"row_number", "rank",  "rank_dense", "lag",
                                                               "lead",       "first", "last"};
    if (auto it = aggregates.find(name); it != aggregates.end())
      return aggregate_call(n, name, it->second, a, s);
    if (windows.contains(name)) return window_call(n, name, a, s);

    // Scalar functions: the module's name, a fixed SQL template, the argument count.
    auto e = scalar_call(n, name, a, s);
    return e;
  }

  bool aggregate_allowed(const node& n, const scope& s) {
    if (s.self != nullptr && !s.self->no_aggregate_tables.empty()) {
      return fail(errc::aggregate_not_granted, no_aggregate_message(*s.self), n.where);
    }
    return true;
  }

  [[nodiscard]] std::string over(const window_spec& spec, bool ranking, bool whole_frame) const {
    std::string sql = " OVER (";
    bool space = false;
    if (!spec.partition.empty()) {
      sql += "PARTITION BY ";
      for (std::size_t i = 0; i < spec.partition.size(); ++i) sql += (i > 0 ? ", " : "") + spec.partition[i];
      space = true;
    }
    const bool ordered = ranking || spec.explicit_frame || whole_frame;
    if (ordered && !spec.order.empty()) {
      std::string o;
      append_order(o, spec.order);
      sql += space ? o : o.substr(1);
      space = true;
    }
    if (!ranking) {
      if (spec.explicit_frame) {
        sql += (space ? " " : "") + spec.frame;
      } else if (whole_frame) {
        sql += std::string(space ? " " : "") + "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING";
      }
    }
    return sql + ")";
  }

  std::optional<expr> aggregate_call(const node& n, const std::string& name, const std::string& sql_name,
                                     const call_args& a, const scope& s) {
    if (s.mode == call_mode::scalar) {
      return fail<std::optional<expr>>(errc::invalid_arguments,
                                       name + " aggregates: use it in aggregate, group or derive, not here",
                                       n.where);
    }
    if (!aggregate_allowed(n, s)) return std::nullopt;
    if (a.size() != 1)
      return fail<std::optional<expr>>(errc::invalid_arguments, name + " takes one column", n.where);
    std::string inner;
    value_type t = value_type::unknown;
    // PRQL's count counts rows, whatever its argument (prqlc: COUNT(*)).
    if (name == "count") {
      inner = "*";
      t = value_type::integer;
    } else {
      scope inner_scope = s;
      inner_scope.mode = call_mode::scalar;
      auto v = arg(a, 0, inner_scope);
      if (!v) return std::nullopt;
      if (v->aggregate || v->window) {
        return fail<std::optional<expr>>(errc::invalid_arguments,
                                         "an aggregate of an aggregate: compute it in two steps", n.where);
      }
      inner = name == "count_distinct" ? "DISTINCT " + v->sql : v->sql;
      if (name == "count" || name == "count_distinct") {
        t = value_type::integer;
      } else if (name == "average" || name == "avg" || name == "stddev") {
        if (!numeric(v->type))
          return fail<std::optional<expr>>(errc::type_error, name + " takes numbers", n.where);
        t = value_type::decimal;
      } else if (name == "sum") {
        if (!numeric(v->type))
          return fail<std::optional<expr>>(errc::type_error, "sum takes numbers", n.where);
        t = v->type == value_type::integer ? value_type::decimal : v->type;
      } else if (name == "any" || name == "all" || name == "every") {
        if (v->type != value_type::boolean && !loose(v->type)) {
          return fail<std::optional<expr>>(errc::type_error, name + " takes conditions", n.where);
        }
        t = value_type::boolean;
      } else if (name == "concat_array") {
        t = value_type::other;
      } else {
        t = v->type;
      }
    }
    expr e{sql_name + "(" + inner + ")", t};
    if (s.mode == call_mode::aggregate) {
      // Over no rows PRQL's sum is 0, any false and all true (as prqlc emits them).
      if (name == "sum") e.sql = "COALESCE(" + e.sql + ", 0)";
      if (name == "any") e.sql = "COALESCE(" + e.sql + ", FALSE)";
      if (name == "all" || name == "every") e.sql = "COALESCE(" + e.sql + ", TRUE)";
      e.aggregate = true;
    } else {
      e.sql += over(*s.spec, false, false);
      e.window = true;
    }
    return e;
  }

  std::optional<expr> window_call(const node& n, const std::string& name, const call_args& a,
                                  const scope& s) {
    if (s.mode != call_mode::window) {
      return fail<std::optional<expr>>(errc::invalid_arguments,
                                       name + " is a window function: use it in derive, select or window",
                                       n.where);
    }
    if (!aggregate_allowed(n, s)) return std::nullopt;
    scope inner_scope = s;
    inner_scope.mode = call_mode::scalar;
    std::string sql;
    value_type t = value_type::integer;
    if (name == "row_number" || name == "rank" || name == "rank_dense") {
      // The argument only says over what (`this` or a column): the order is the relation's.
      if (a.size() > 1) {
        return fail<std::optional<expr>>(errc::invalid_arguments,
                                         name + " takes one argument: " + name + " this", n.where);
      }
      sql = name == "row_number" ? "ROW_NUMBER()" : (name == "rank" ? "RANK()" : "DENSE_RANK()");
      return window_expr(sql + over(*s.spec, true, false), t);
    }
    if (name == "lag" || name == "lead") {
      if (a.size() != 2) {
        return fail<std::optional<expr>>(errc::invalid_arguments,
                                         name + " takes an offset and a column: " + name + " 1 x", n.where);
      }
      auto offset = integer_literal(*a.nodes[0]);
      if (!offset) return std::nullopt;
      auto v = arg(a, 1, inner_scope);
      if (!v) return std::nullopt;
      sql = (name == "lag" ? "LAG(" : "LEAD(") + v->sql + ", " + std::to_string(*offset) + ")";
      return window_expr(sql + over(*s.spec, true, false), v->type);
    }
    // first / last: PRQL (as prqlc 0.13 compiles it) takes no frame for them, so Postgres's
    // default applies: from the partition's start to the current row's last peer.
    if (a.size() != 1)
      return fail<std::optional<expr>>(errc::invalid_arguments, name + " takes a column", n.where);
    auto v = arg(a, 0, inner_scope);
    if (!v) return std::nullopt;
    sql = (name == "first" ? "FIRST_VALUE(" : "LAST_VALUE(") + v->sql + ")";
    return window_expr(sql + over(*s.spec, true, false), v->type);
  }

  static expr window_expr(std::string sql, value_type t) {
    expr e{std::move(sql), t};
    e.window = true;
    return e;
  }

  std::optional<expr> in(const node& n, const call_args& a, const scope& s) {
    if (a.size() != 2) {
      return fail<std::optional<expr>>(errc::invalid_arguments,
                                       "in takes a range or an array: (x | in 1..10)", n.where);
    }
    auto value = arg(a, 1, s);
    if (!value) return std::nullopt;
    const node& set = *a.nodes[0];
    if (set.kind == kind::range) {
      std::string sql;
      expr out{"", value_type::boolean};
      out.aggregate = value->aggregate;
      out.window = value->window;
      std::optional<expr> low;
      std::optional<expr> high;
      if (set.items[0]) {
        low = expression(*set.items[0], s);
        if (!low) return std::nullopt;
      }
      if (set.items[1]) {
        high = expression(*set.items[1], s);
        if (!high) return std::nullopt;
      }
      if (low && high) {
        sql = "(" + value->sql + " BETWEEN " + low->sql + " AND " + high->sql + ")";
      } else if (low) {
        sql = "(" + value->sql + " >= " + low->sql + ")";
      } else if (high) {
        sql = "(" + value->sql + " <= " + high->sql + ")";
      } else {
        sql = "TRUE";
      }
      out.sql = std::move(sql);
      return out;
    }
    if (set.kind == kind::array) {
      if (set.items.empty()) return expr{"FALSE", value_type::boolean};
      std::string sql = "(" + value->sql + " IN (";
      for (std::size_t i = 0; i < set.items.size(); ++i) {
        auto item = expression(*set.items[i], s);
        if (!item) return std::nullopt;
        if (!comparable(value->type, item->type, item->text_literal)) {
          return fail<std::optional<expr>>(
              errc::type_error, "in: the array's values are not of the value's type", set.items[i]->where);
        }
        sql += (i > 0 ? ", " : "") + item->sql;
      }
      return merge(sql + "))", value_type::boolean, *value);
    }
    if (set.kind == kind::session) {
      const auto* attr = st_.cat.find_attribute(set.text);
      if (attr == nullptr || !attr->array) {
        return fail<std::optional<expr>>(errc::invalid_arguments,
                                         "in takes a range, an array or an array attribute", set.where);
      }
      auto bound = session_attribute_ref(set, s);
      if (!bound) return std::nullopt;
      return merge("(" + value->sql + " = ANY(" + bound->sql + "))", value_type::boolean, *value);
    }
    return fail<std::optional<expr>>(errc::invalid_arguments, "in takes a range (1..10) or an array ([1, 2])",
                                     set.where);
  }

  std::optional<expr> cast(const node& n, const call_args& a, const scope& s) {
    if (a.size() != 2 || a.nodes.empty() || a.nodes[0]->kind != kind::ident || a.nodes[0]->path.size() != 1) {
      return fail<std::optional<expr>>(errc::invalid_arguments, "as takes a type: (x | as int)", n.where);
    }
    struct cast_type {
      std::string_view name;
      std::string_view sql;
      value_type type;
    };
    static constexpr cast_type casts[] = {
        {"int", "integer", value_type::integer},     {"integer", "integer", value_type::integer},
        {"int8", "smallint", value_type::integer},   {"int16", "smallint", value_type::integer},
        {"int32", "integer", value_type::integer},   {"int64", "bigint", value_type::integer},
        {"bigint", "bigint", value_type::integer},   {"float", "double precision", value_type::decimal},
        {"float32", "real", value_type::decimal},    {"float64", "double precision", value_type::decimal},
        {"decimal", "numeric", value_type::decimal}, {"numeric", "numeric", value_type::decimal},
        {"text", "text", value_type::text},          {"string", "text", value_type::text},
        {"bool", "boolean", value_type::boolean},    {"boolean", "boolean", value_type::boolean},
        {"date", "date", value_type::date},          {"timestamp", "timestamp", value_type::timestamp},
        {"time", "time", value_type::time},
    };
    const auto& wanted = a.nodes[0]->path[0];
    for (const auto& c : casts) {
      if (c.name != wanted) continue;
      auto v = arg(a, 1, s);
      if (!v) return std::nullopt;
      return merge("CAST(" + v->sql + " AS " + std::string(c.sql) + ")", c.type, *v);
    }
    return fail<std::optional<expr>>(
        errc::invalid_arguments,
        "no type `" + wanted + "`: int, int64, float, decimal, text, bool, date, timestamp",
        a.nodes[0]->where);
  }

  // NOLINTNEXTLINE(clang-analyzer-optin.performance.Padding): a constant table of 30, read in order
  struct scalar_function {
    std::string_view name;
    int arity;
    std::string_view sql;  // {0}, {1}, … the arguments in PRQL order; {t0} as text
    value_type type;       // unknown: the last argument's
    value_type takes;      // what the main (last) argument must be; unknown: anything
  };

  std::optional<expr> scalar_call(const node& n, const std::string& name, const call_args& a,
                                  const scope& s) {
    static constexpr scalar_function functions[] = {
        {"text.lower", 1, "LOWER({t0})", value_type::text, value_type::text},
        {"text.upper", 1, "UPPER({t0})", value_type::text, value_type::text},
        {"text.trim", 1, "TRIM({t0})", value_type::text, value_type::text},
        {"text.ltrim", 1, "LTRIM({t0})", value_type::text, value_type::text},
        {"text.rtrim", 1, "RTRIM({t0})", value_type::text, value_type::text},
        {"text.length", 1, "CHAR_LENGTH({t0})", value_type::integer, value_type::text},
        {"text.extract", 3, "SUBSTRING({t2} FROM {0} FOR {1})", value_type::text, value_type::text},
        {"text.replace", 3, "REPLACE({t2}, {t0}, {t1})", value_type::text, value_type::text},
        {"text.starts_with", 2, "STARTS_WITH({t1}, {t0})", value_type::boolean, value_type::text},
        {"text.contains", 2, "(STRPOS({t1}, {t0}) > 0)", value_type::boolean, value_type::text},
        {"text.ends_with", 2, "(RIGHT({t1}, CHAR_LENGTH({t0})) = {t0})", value_type::boolean,
         value_type::text},
        {"math.abs", 1, "ABS({0})", value_type::unknown, value_type::decimal},
        {"math.floor", 1, "FLOOR({0})", value_type::unknown, value_type::decimal},
        {"math.ceil", 1, "CEIL({0})", value_type::unknown, value_type::decimal},
        {"math.round", 2, "ROUND(({1})::numeric, {0})", value_type::decimal, value_type::decimal},
        {"math.exp", 1, "EXP({0})", value_type::decimal, value_type::decimal},
        {"math.ln", 1, "LN({0})", value_type::decimal, value_type::decimal},
        {"math.log10", 1, "LOG10({0})", value_type::decimal, value_type::decimal},
        {"math.log", 2, "(LOG10({1}) / LOG10({0}))", value_type::decimal, value_type::decimal},
        {"math.sqrt", 1, "SQRT({0})", value_type::decimal, value_type::decimal},
        {"math.degrees", 1, "DEGREES({0})", value_type::decimal, value_type::decimal},
        {"math.radians", 1, "RADIANS({0})", value_type::decimal, value_type::decimal},
        {"math.cos", 1, "COS({0})", value_type::decimal, value_type::decimal},
        {"math.acos", 1, "ACOS({0})", value_type::decimal, value_type::decimal},
        {"math.sin", 1, "SIN({0})", value_type::decimal, value_type::decimal},
        {"math.asin", 1, "ASIN({0})", value_type::decimal, value_type::decimal},
        {"math.tan", 1, "TAN({0})", value_type::decimal, value_type::decimal},
        {"math.atan", 1, "ATAN({0})", value_type::decimal, value_type::decimal},
        {"math.pow", 2, "POW({1}, {0})", value_type::decimal, value_type::decimal},
        {"date.to_text", 2, "TO_CHAR({1}, {0})", value_type::text, value_type::unknown},
    };
    const scalar_function* f = nullptr;
    for (const auto& candidate : functions) {
      if (candidate.name == name) f = &candidate;
    }
    if (f == nullptr) {
      return fail<std::optional<expr>>(
          errc::unknown_function,
          "no function `" + name +
              "` (keel takes the std aggregates and window functions, text.*, math.* and "
              "date.to_text; user-defined functions are not accepted)",
          n.where);
    }
    if (static_cast<int>(a.size()) != f->arity) {
      return fail<std::optional<expr>>(
          errc::invalid_arguments,
          name + " takes " + std::to_string(f->arity) + " argument" + (f->arity == 1 ? "" : "s"), n.where);
    }
    const bool formats_date = name == "date.to_text";
    if (formats_date && (a.nodes.empty() || a.nodes[0]->kind != kind::string)) {
      return fail<std::optional<expr>>(
          errc::invalid_arguments, "date.to_text takes a format string: date.to_text \"%Y-%m-%d\"", n.where);
    }
    std::vector<expr> args;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (formats_date && i == 0) {
        auto format = to_char_format(a.nodes[0]->text, *a.nodes[0]);
        if (!format) return std::nullopt;
        args.push_back(expr{literal_slot(*format) + "::text", value_type::text});
        continue;
      }
      auto v = arg(a, i, s);
      if (!v) return std::nullopt;
      args.push_back(std::move(*v));
    }
    const auto& main = args.back();
    if (f->takes == value_type::text && main.type != value_type::text && !loose(main.type)) {
      return fail<std::optional<expr>>(
          errc::type_error, name + " takes text, not a " + std::string(to_string(main.type)), n.where);
    }
    if (f->takes == value_type::decimal && !numeric(main.type)) {
      return fail<std::optional<expr>>(
          errc::type_error, name + " takes a number, not a " + std::string(to_string(main.type)), n.where);
    }
    if (formats_date && !temporal(main.type) && !loose(main.type)) {
      return fail<std::optional<expr>>(errc::type_error, "date.to_text takes a date or timestamp", n.where);
    }
    std::string sql;
    const std::string_view t = f->sql;
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (t[i] != '{') {
        sql += t[i];
        continue;
      }
      const auto close = t.find('}', i);
      auto token = t.substr(i + 1, close - i - 1);
      const bool as_text = !token.empty() && token[0] == 't';
      if (as_text) token.remove_prefix(1);
      const auto index = static_cast<std::size_t>(token[0] - '0');
      sql += as_text ? args[index].as_text() : args[index].sql;
      i = close;
    }
    expr out{std::move(sql), f->type == value_type::unknown ? main.type : f->type};
    for (const auto& x : args) {
      out.aggregate = out.aggregate || x.aggregate;
      out.window = out.window || x.window;
    }
    return out;
  }

  // date.to_text's strftime-like format as Postgres TO_CHAR's, literal text quoted.
  std::optional<std::string> to_char_format(const std::string& format, const node& where) {
    static const std::map<char, std::string_view> specs = {
        {'Y', "YYYY"},
        {'y', "YY"},
        {'m', "MM"},
        {'d', "DD"},
        {'e', "FMDD"},
        {'H', "HH24"},
        {'I', "HH12"},
        {'M', "MI"},
        {'S', "SS"},
        {'f', "US"},
        {'p', "AM"},
        {'j', "DDD"},
        {'b', "Mon"},
        {'h', "Mon"},
        {'B', "FMMonth"},
        {'a', "Dy"},
        {'A', "FMDay"},
        {'%', "%"},
        {'F', "YYYY-MM-DD"},
        {'T', "HH24:MI:SS"},
        {'X', "HH24:MI:SS"},
        {'D', "MM/DD/YY"},
        {'x', "MM/DD/YY"},
        {'R', "HH24:MI"},
        {'r', "HH12:MI:SS AM"},
        {'+', "YYYY-MM-DD\"T\"HH24:MI:SS.USZ"},
        {'u', "ID"},
        {'V', "IW"},
        {'G', "IYYY"},
        {'Z', "TZ"},
    };
    std::string out;
    std::string literal;
    const auto flush = [&] {
      if (literal.empty()) return;
      out += '"';
      for (const char c : literal) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
      }
      out += '"';
      literal.clear();
    };
    for (std::size_t i = 0; i < format.size(); ++i) {
      if (format[i] != '%') {
        literal += format[i];
        continue;
      }
      if (i + 1 >= format.size()) {
        return fail<std::optional<std::string>>(errc::invalid_arguments, "a % at the end of the format",
                                                where.where);
      }
      char spec = format[++i];
      // %-d, %-m: without the leading zero.
      const bool fill_mode =
          spec == '-' && i + 1 < format.size() && (format[i + 1] == 'd' || format[i + 1] == 'm');
      if (fill_mode) {
        spec = format[++i];
        flush();
        out += spec == 'd' ? "FMDD" : "FMMM";
        continue;
      }
      if (spec == 't') {
        literal += '\t';
        continue;
      }
      auto it = specs.find(spec);
      if (it == specs.end()) {
        return fail<std::optional<std::string>>(
            errc::invalid_arguments, std::string("date.to_text: %") + spec + " is not a format keel knows",
            where.where);
      }
      if (spec == '%') {
        literal += '%';
        continue;
      }
      flush();
      out += it->second;
    }
    flush();
    return out;
  }
};

parse_result<std::string> translator::rls_script() {
  rls_ = true;
  std::string out =
      "-- keel::dsl's access policy as Postgres row-level security (generated from the catalog).\n"
      "-- Each catalog role is a database role of the same name. Session attributes are read from the\n"
      "-- settings keel.<name>: set them per transaction, e.g. SELECT set_config('keel.tenant', '7', "
      "true).\n";
  // Every table a grant names, in each schema it lives in.
  std::vector<std::pair<const table*, std::string>> tables;
  for (const auto& t : st_.cat.tables) {
    if (t.per_tenant) {
      for (const auto& schema : st_.cat.tenants->schemas) tables.emplace_back(&t, schema);
    } else {
      tables.emplace_back(&t, t.schema);
    }
  }
  std::set<std::string> schemas;
  for (const auto& [t, schema] : tables) schemas.insert(schema);
  for (const auto& [t, schema] : tables) {
    out +=
        "ALTER TABLE " + quote_ident(schema) + "." + quote_ident(t->name) + " ENABLE ROW LEVEL SECURITY;\n";
  }
  for (const auto& role : st_.roles) {
    out += "\n-- role " + role.name + "\n";
    for (const auto& schema : schemas) {
      out += "GRANT USAGE ON SCHEMA " + quote_ident(schema) + " TO " + quote_ident(role.name) + ";\n";
    }
    for (const auto& [t, schema] : tables) {
      const std::string physical = quote_ident(schema) + "." + quote_ident(t->name);
      std::vector<const detail::parsed_grant*> grants;
      for (const auto& g : role.grants) {
        if (g.target == t) grants.push_back(&g);
      }
      out += "REVOKE ALL ON " + physical + " FROM " + quote_ident(role.name) + ";\n";
      for (int i = 1; i <= 16; ++i) {
        out += "DROP POLICY IF EXISTS " + quote_ident("keel_" + role.name + "_" + std::to_string(i)) +
               " ON " + physical + ";\n";
      }
      if (grants.empty()) continue;
      // Grants on the same rows are one policy, their columns together (as the compiler reads them).
      std::vector<std::pair<std::string, std::vector<const detail::parsed_grant*>>> admissions;
      for (const auto* g : grants) {
        std::string predicate = "true";
        if (g->row_filter) {
          auto p = policy_expression(*g->row_filter, *g, "row filter", g->source->row_filter);
          if (!p) return error();
          predicate = p->sql;
        }
        if (g->when) {
          auto w = policy_expression(*g->when, *g, "condition", g->source->when);
          if (!w) return error();
          predicate = joined({"(", w->sql, ") AND (", predicate, ")"});
        }
        auto same = std::find_if(admissions.begin(), admissions.end(),
                                 [&](const auto& a) { return a.first == predicate; });
        if (same == admissions.end()) {
          admissions.emplace_back(std::move(predicate), std::vector{g});
        } else {
          same->second.push_back(g);
        }
      }
      if (admissions.size() > 16) {
        return diagnostic{errc::invalid_arguments,
                          "role " + role.name + " has more than 16 grants on " + t->name,
                          0,
                          0,
                          1,
                          1};
      }
      // Column privileges cannot depend on the row: a column is granted when every admission
      // shows it unmasked (keel shows the others per row, or masked; RLS cannot).
      std::vector<std::string> columns;
      std::vector<std::string> withheld;
      for (const auto& c : t->columns) {
        const auto shows_plain = [&](const detail::parsed_grant* g) {
          return g->shows(c.name) && g->mask_of(c.name) == nullptr;
        };
        const bool everywhere = std::all_of(admissions.begin(), admissions.end(), [&](const auto& a) {
          return std::any_of(a.second.begin(), a.second.end(), shows_plain);
        });
        const bool anywhere =
            std::any_of(grants.begin(), grants.end(), [&](const auto* g) { return g->shows(c.name); });
        if (everywhere) {
          columns.push_back(quote_ident(c.name));
        } else if (anywhere) {
          withheld.push_back(c.name);
        }
      }
      if (!withheld.empty()) {
        std::string list;
        for (const auto& w : withheld) list += (list.empty() ? "" : ", ") + w;
        out += "-- not granted: " + list + " (masked, or shown on only some rows: keel decides per row)\n";
      }
      if (!columns.empty()) {
        std::string list;
        for (const auto& c : columns) list += (list.empty() ? "" : ", ") + c;
        out += joined({"GRANT SELECT (", list, ") ON ", physical, " TO ", quote_ident(role.name), ";\n"});
      }
      if (std::none_of(grants.begin(), grants.end(), [](const auto* g) { return g->source->aggregates; })) {
        out += "-- keel refuses this role's aggregates here; RLS cannot\n";
      }
      int number = 0;
      for (const auto& [predicate, members] : admissions) {
        const auto policy_name = quote_ident(joined({"keel_", role.name, "_", std::to_string(++number)}));
        out += joined({"CREATE POLICY ", policy_name, " ON ", physical, " AS PERMISSIVE FOR SELECT TO ",
                       quote_ident(role.name), " USING (", predicate, ");\n"});
      }
    }
    if (role.max_rows > 0)
      out += "-- keel caps this role's results at " + std::to_string(role.max_rows) + " rows; RLS cannot\n";
  }
  return out;
}

bool translator::refers_to_window(const relation& r, const node& n) {
  if (n.kind == kind::ident) {
    for (const auto& c : r.columns) {
      if (c.window && c.name && *c.name == n.path.back()) return true;
    }
    return false;
  }
  for (const auto& item : n.items) {
    if (item && refers_to_window(r, *item)) return true;
  }
  return false;
}

// The session values the role's policy folds, as part of the cache key.
void append_key_value(std::string& key, const session_value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          key += "n";
        } else if constexpr (std::is_same_v<T, bool>) {
          key += x ? "t" : "f";
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          key += "i" + std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          key += "d" + std::to_string(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          key += "s" + std::to_string(x.size()) + ":" + x;
        } else {
          key += "a" + std::to_string(x.size());
          for (const auto& item : x) {
            if constexpr (std::is_same_v<std::decay_t<decltype(item)>, std::string>) {
              key += std::to_string(item.size()) + ":" + item;
            } else {
              key += std::to_string(item) + ",";
            }
          }
        }
      },
      v);
  key += '\x1f';
}

}  // namespace

// ---- the cache -------------------------------------------------------------------------------

namespace detail {

bool parsed_grant::shows(std::string_view column) const {
  return all_columns ||
         std::find(source->columns.begin(), source->columns.end(), column) != source->columns.end();
}

const ast::node* parsed_grant::mask_of(std::string_view column) const {
  for (const auto& [name, expression] : masks) {
    if (name == column) return expression.get();
  }
  return nullptr;
}

std::shared_ptr<const compiled_query> query_cache::find(const std::string& key) {
  const std::lock_guard lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  order_.splice(order_.begin(), order_, it->second);
  return it->second->second;
}

void query_cache::put(const std::string& key, std::shared_ptr<const compiled_query> value) {
  if (capacity_ == 0) return;
  const std::lock_guard lock(mutex_);
  if (auto it = index_.find(key); it != index_.end()) {
    it->second->second = std::move(value);
    order_.splice(order_.begin(), order_, it->second);
    return;
  }
  order_.emplace_front(key, std::move(value));
  index_.emplace(key, order_.begin());
  while (order_.size() > capacity_) {
    index_.erase(order_.back().first);
    order_.pop_back();
  }
}

}  // namespace detail

// ---- the compiler ----------------------------------------------------------------------------

compiler::compiler(std::unique_ptr<state> s) noexcept : state_(std::move(s)) {}
compiler::compiler(compiler&&) noexcept = default;
compiler& compiler::operator=(compiler&&) noexcept = default;
compiler::~compiler() = default;

const dsl::catalog& compiler::catalog() const noexcept {
  return state_->cat;
}

namespace {

using create_result = boost::system::result<compiler, catalog_error>;

// Parses a policy expression: `from x | filter <text>`, so it is the DSL's expression syntax.
boost::system::result<ast::node_ptr, catalog_error> parse_policy(const std::string& text,
                                                                 const std::string& where) {
  // In parentheses, so a function call (`text.extract 1 3 email`) is one argument of the filter.
  auto parsed = parse("from policy_table | filter (" + text + "\n)");
  const std::size_t prefix = std::string_view("from policy_table | filter (").size();
  if (!parsed) {
    auto d = parsed.error();
    const std::uint32_t begin = d.begin >= prefix ? d.begin - static_cast<std::uint32_t>(prefix) : 0;
    auto shifted = diagnostic::at(text, d.code, d.message, begin, begin);
    return catalog_error{where + ": " + shifted.render(text)};
  }
  auto& main = *parsed->main;
  if (main.items.size() != 2 || main.items[1]->items.size() != 1) {
    return catalog_error{where + ": a single expression, not a pipeline: " + text};
  }
  ast::node_ptr e = std::move(main.items[1]->items[0]);
  // Spans back into the policy's own text.
  std::vector<ast::node*> stack{e.get()};
  while (!stack.empty()) {
    auto* n = stack.back();
    stack.pop_back();
    n->where.begin = n->where.begin >= prefix ? n->where.begin - static_cast<std::uint32_t>(prefix) : 0;
    n->where.end = n->where.end >= prefix ? n->where.end - static_cast<std::uint32_t>(prefix) : 0;
    for (auto& item : n->items) {
      if (item) stack.push_back(item.get());
    }
    for (auto& named : n->named) stack.push_back(named.value.get());
  }
  return e;
}

void collect_attributes(const ast::node& n, std::vector<std::string>& out, bool folding) {
  if (n.kind == kind::session && folding) {
    if (std::find(out.begin(), out.end(), n.text) == out.end()) out.push_back(n.text);
  }
  for (const auto& item : n.items) {
    if (item) collect_attributes(*item, out, folding);
  }
}

// The session attributes inside session-only terms (those the compiler decides): walk down to
// the largest foldable subtrees.
void collect_folded(const ast::node& n, std::vector<std::string>& out, bool (*foldable)(const ast::node&)) {
  const bool comparison =
      n.kind == kind::binary || (n.kind == kind::unary && n.text == "!") || n.kind == kind::pipeline;
  if (comparison && foldable(n)) {
    collect_attributes(n, out, true);
    return;
  }
  for (const auto& item : n.items) {
    if (item) collect_folded(*item, out, foldable);
  }
}

}  // namespace

create_result compiler::create(dsl::catalog c, compiler_options options) {
  auto s = std::make_unique<state>();
  s->cat = std::move(c);
  s->options = options;
  s->cache = std::make_unique<detail::query_cache>(options.cache_capacity);
  const auto& cat = s->cat;
  for (const auto& t : cat.tables) {
    if (t.per_tenant && !cat.tenants) {
      return catalog_error{"table " + t.name +
                           " is per_tenant but the catalog has no tenancy (schema_attribute, schemas)"};
    }
  }
  if (cat.tenants && cat.find_attribute(cat.tenants->schema_attribute) == nullptr) {
    return catalog_error{"tenancy.schema_attribute @" + cat.tenants->schema_attribute +
                         " is not a session attribute of the catalog"};
  }
  for (const auto& r : cat.roles) {
    detail::role_policy policy;
    policy.name = r.name;
    // The role and its ancestors, each once; a cycle is an error.
    std::vector<const role*> lineage;
    std::vector<const role*> path;
    std::string cycle;
    const auto visit = [&](const auto& self, const role* current) -> bool {
      if (std::find(path.begin(), path.end(), current) != path.end()) {
        cycle = current->name;
        return false;
      }
      if (std::find(lineage.begin(), lineage.end(), current) != lineage.end()) return true;
      path.push_back(current);
      lineage.push_back(current);
      for (const auto& parent : current->inherits) {
        const auto* p = cat.find_role(parent);
        if (p == nullptr) {
          cycle.clear();
          return false;
        }
        if (!self(self, p)) return false;
      }
      path.pop_back();
      return true;
    };
    if (!visit(visit, &r)) {
      if (!cycle.empty()) return catalog_error{"role " + r.name + " inherits itself (through " + cycle + ")"};
      return catalog_error{"role " + r.name + " inherits a role the catalog does not have"};
    }
    for (const auto* member : lineage) {
      if (member->max_rows > 0 && (policy.max_rows == 0 || member->max_rows < policy.max_rows)) {
        policy.max_rows = member->max_rows;
      }
      for (const auto& g : member->grants) {
        detail::parsed_grant pg;
        pg.source = &g;
        const std::string where = "role " + member->name + ", grant on " + g.table;
        for (const auto& t : cat.tables) {
          if (t.name == g.table || t.schema + "." + t.name == g.table) pg.target = &t;
        }
        if (pg.target == nullptr) return catalog_error{where + ": the catalog has no table " + g.table};
        for (const auto& col : g.columns) {
          if (col == "*") {
            pg.all_columns = true;
          } else if (pg.target->find(col) == nullptr) {
            return catalog_error{joined({where, ": table ", g.table, " has no column ", col})};
          }
        }
        if (!g.row_filter.empty()) {
          auto e = parse_policy(g.row_filter, where + ", row filter");
          if (!e) return e.error();
          pg.row_filter = std::move(*e);
          collect_folded(*pg.row_filter, policy.folded_attributes, &is_foldable);
        }
        if (!g.when.empty()) {
          auto e = parse_policy(g.when, where + ", condition");
          if (!e) return e.error();
          if (!is_foldable(**e)) {
            return catalog_error{where +
                                 ", condition: a condition reads session attributes and literals only (" +
                                 g.when + ")"};
          }
          collect_attributes(**e, policy.folded_attributes, true);
          pg.when = std::move(*e);
        }
        for (const auto& [column_name, text] : g.masks) {
          if (pg.target->find(column_name) == nullptr) {
            return catalog_error{
                joined({where, ": a mask for ", column_name, ", which table ", g.table, " does not have"})};
          }
          auto e = parse_policy(text, joined({where, ", mask of ", column_name}));
          if (!e) return e.error();
          collect_folded(**e, policy.folded_attributes, &is_foldable);
          pg.masks.emplace_back(column_name, std::move(*e));
        }
        policy.grants.push_back(std::move(pg));
      }
    }
    if (cat.tenants) policy.folded_attributes.push_back(cat.tenants->schema_attribute);
    std::sort(policy.folded_attributes.begin(), policy.folded_attributes.end());
    policy.folded_attributes.erase(
        std::unique(policy.folded_attributes.begin(), policy.folded_attributes.end()),
        policy.folded_attributes.end());
    // Every attribute a policy reads must be declared.
    for (const auto& g : policy.grants) {
      std::vector<std::string> read;
      if (g.row_filter) collect_attributes(*g.row_filter, read, true);
      if (g.when) collect_attributes(*g.when, read, true);
      for (const auto& [name, m] : g.masks) collect_attributes(*m, read, true);
      for (const auto& a : read) {
        if (cat.find_attribute(a) == nullptr) {
          return catalog_error{"role " + r.name + ", grant on " + g.source->table + ": @" + a +
                               " is not a session attribute of the catalog"};
        }
      }
    }
    s->roles.push_back(std::move(policy));
  }
  return compiler(std::move(s));
}

parse_result<std::string> compiler::rls_script() const {
  static const session nobody;
  static const detail::role_policy none;
  translator t(*state_, "", nobody, none);
  return t.rls_script();
}

parse_result<std::shared_ptr<const compiled_query>> compiler::compile_uncached(std::string_view text,
                                                                               const session& who) const {
  const auto* role = state_->find_role(who.role);
  if (role == nullptr) {
    return diagnostic::at(text, errc::unknown_role,
                          "the session's role `" + who.role + "` is not in the catalog", 0, 0);
  }
  auto parsed = parse(text);
  if (!parsed) return parsed.error();
  translator t(*state_, text, who, *role);
  return t.run(*parsed);
}

parse_result<std::shared_ptr<const compiled_query>> compiler::compile(std::string_view text,
                                                                      const session& who) const {
  if (state_->options.cache_capacity == 0) return compile_uncached(text, who);
  const auto* role = state_->find_role(who.role);
  if (role == nullptr) return compile_uncached(text, who);
  std::string key;
  key.reserve(text.size() + who.role.size() + 16);
  key.append(text).append(1, '\x1e').append(who.role).append(1, '\x1e');
  for (const auto& a : role->folded_attributes) {
    auto it = who.attributes.find(a);
    if (it == who.attributes.end()) {
      key += "-\x1f";
    } else {
      append_key_value(key, it->second);
    }
  }
  if (auto hit = state_->cache->find(key)) return hit;
  auto compiled = compile_uncached(text, who);
  if (compiled) state_->cache->put(key, *compiled);
  return compiled;
}

// ---- binding ---------------------------------------------------------------------------------

namespace {

std::string array_literal(const std::vector<std::string>& items) {
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

std::optional<std::string> text_of(const session_value& v) {
  return std::visit(
      [](const auto& x) -> std::optional<std::string> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return std::nullopt;
        } else if constexpr (std::is_same_v<T, bool>) {
          return std::string(x ? "true" : "false");
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          return std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          char buffer[32];
          auto [p, ec] = std::to_chars(buffer, buffer + sizeof buffer, x);
          return std::string(buffer, p);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return x;
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          return array_literal(x);
        } else {
          std::string out = "{";
          for (std::size_t i = 0; i < x.size(); ++i) out += (i > 0 ? "," : "") + std::to_string(x[i]);
          return out + "}";
        }
      },
      v);
}

}  // namespace

parse_result<bound_query> compiled_query::bind(const session& who, const arguments& args) const {
  bound_query out;
  out.sql = sql_;
  out.values.reserve(slots_.size());
  for (const auto& s : slots_) {
    switch (s.from) {
      case parameter_slot::source::literal:
        out.values.emplace_back(s.text);
        break;
      case parameter_slot::source::positional:
        if (s.position == 0 || s.position > args.positional.size()) {
          diagnostic d;
          d.code = errc::missing_argument;
          d.message = "the query's $" + s.text + " has no value: pass " + s.text + " positional argument(s)";
          return d;
        }
        out.values.push_back(args.positional[s.position - 1]);
        break;
      case parameter_slot::source::named: {
        auto it = args.named.find(s.text);
        if (it == args.named.end()) {
          diagnostic d;
          d.code = errc::missing_argument;
          d.message = "the query's $" + s.text + " has no value: pass it in arguments.named";
          return d;
        }
        out.values.push_back(it->second);
        break;
      }
      case parameter_slot::source::attribute: {
        auto it = who.attributes.find(s.text);
        if (it == who.attributes.end()) {
          diagnostic d;
          d.code = errc::unknown_session_attribute;
          d.message = "the session gives no @" + s.text + ", which the query or its policy reads";
          return d;
        }
        out.values.push_back(text_of(it->second));
        break;
      }
    }
  }
  return out;
}

}  // namespace keel::dsl
