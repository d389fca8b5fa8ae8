// libFuzzer target for keel::dsl: any text through the parser and, when it parses, the compiler
// under two roles of a fixed catalog (one unrestricted, one with a row filter, hidden columns,
// a mask and a ceiling). An error, never a crash or a hang; errors are placed inside the text;
// compiled SQL numbers exactly the parameters it lists and holds no placeholder.
#include <keel/dsl.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace dsl = keel::dsl;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

const dsl::compiler& fixed_compiler() {
  static const auto c = [] {
    auto cat = dsl::catalog::from_json(R"json({
      "tables": [
        {"name": "t", "columns": [{"name": "a", "type": "integer"}, {"name": "b", "type": "text"},
                                  {"name": "c", "type": "decimal"}, {"name": "d", "type": "date"},
                                  {"name": "tenant", "type": "integer"}]},
        {"name": "u", "columns": [{"name": "a", "type": "integer"}, {"name": "e", "type": "boolean"}]}],
      "session": [{"name": "tenant", "type": "integer"}, {"name": "tags", "type": "text", "array": true}],
      "roles": [
        {"name": "all", "grants": [{"table": "t", "columns": ["*"], "aggregates": true},
                                   {"table": "u", "columns": ["*"], "aggregates": true}]},
        {"name": "some", "max_rows": 50, "grants": [
          {"table": "t", "columns": ["a", "b", "d"], "row_filter": "tenant == @tenant", "masks": {"b": "text.lower b"}},
          {"table": "u", "columns": ["a"], "row_filter": "a > 0 || (\"x\" | in @tags)", "aggregates": true}]}]
})json");
    require(cat.has_value());
    auto made = dsl::compiler::create(std::move(*cat), {.cache_capacity = 0});
    require(made.has_value());
    return std::move(*made);
  }();
  return c;
}

void check_compiled(const dsl::compiled_query& q) {
  const auto& sql = q.sql();
  require(sql.find('\x01') == std::string::npos && sql.find('\x02') == std::string::npos);
  // Every $n names a listed parameter, and every listed one is used.
  std::size_t highest = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    if (sql[i] != '$') continue;
    std::size_t n = 0;
    std::size_t k = i + 1;
    while (k < sql.size() && sql[k] >= '0' && sql[k] <= '9')
      n = n * 10 + static_cast<std::size_t>(sql[k++] - '0');
    require(n >= 1 && n <= q.parameters().size());
    highest = n > highest ? n : highest;
  }
  require(highest == q.parameters().size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = dsl::parse(text);
  if (!parsed) {
    require(parsed.error().begin <= text.size() && parsed.error().end <= text.size() + 1);
    require(!parsed.error().render(text).empty());
    return 0;
  }
  const dsl::session all{.role = "all"};
  const dsl::session some{
      .role = "some", .attributes = {{"tenant", std::int64_t{3}}, {"tags", std::vector<std::string>{"x"}}}};
  for (const auto* who : {&all, &some}) {
    auto compiled = fixed_compiler().compile(text, *who);
    if (!compiled) {
      require(compiled.error().begin <= text.size());
      require(!compiled.error().render(text).empty());
      continue;
    }
    check_compiled(**compiled);
  }
  return 0;
}
