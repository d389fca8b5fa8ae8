// keel-dslc: PRQL on stdin, parameterized SQL on stdout, compiled under a catalog's role — for
// scripts, for reading what keel sends, and for comparison with other compilers.
#include <keel/dsl.hpp>

#include <boost/json.hpp>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace dsl = keel::dsl;

constexpr const char* usage =
    R"(usage: keel-dslc --catalog FILE [--role NAME] [--session k=v]... [--parameters] < query.prql

  --catalog FILE   the catalog, JSON (docs/dsl.md gives the form): tables, session attributes, roles
  --role NAME      the role to compile for (may be left out when the catalog has one role)
  --session k=v    a session attribute's value; an array attribute takes a,b,c
  --arg VALUE      the value of $1, $2, … in order (with --parameters)
  --named k=v      the value of $k (with --parameters)
  --parameters     after the SQL, print the parameters' values as a JSON array
  --rls            print the catalog as Postgres row-level security instead (no query read)

exit status: 0 compiled, 1 the query or catalog is refused (the reason on stderr), 2 usage
)";

}  // namespace

int main(int argc, char** argv) {
  std::string catalog_path;
  std::string role;
  std::vector<std::pair<std::string, std::string>> session_values;
  dsl::arguments args;
  bool parameters = false;
  bool rls = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    const auto pair = [](const std::string& text) -> std::optional<std::pair<std::string, std::string>> {
      const auto eq = text.find('=');
      if (eq == std::string::npos || eq == 0) return std::nullopt;
      return std::pair{text.substr(0, eq), text.substr(eq + 1)};
    };
    if (flag == "--help" || flag == "-h") {
      std::cout << usage;
      return 0;
    }
    if (flag == "--parameters") {
      parameters = true;
      continue;
    }
    if (flag == "--rls") {
      rls = true;
      continue;
    }
    auto v = value();
    if (!v) {
      std::cerr << "keel-dslc: " << flag << " needs a value\n" << usage;
      return 2;
    }
    if (flag == "--catalog") {
      catalog_path = *v;
    } else if (flag == "--role") {
      role = *v;
    } else if (flag == "--arg") {
      args.positional.emplace_back(*v);
    } else if (flag == "--session" || flag == "--named") {
      auto kv = pair(*v);
      if (!kv) {
        std::cerr << "keel-dslc: " << flag << " takes name=value\n";
        return 2;
      }
      if (flag == "--session") {
        session_values.push_back(*kv);
      } else {
        args.named.emplace(kv->first, kv->second);
      }
    } else {
      std::cerr << "keel-dslc: unknown option " << flag << "\n" << usage;
      return 2;
    }
  }
  if (catalog_path.empty()) {
    std::cerr << "keel-dslc: --catalog is required\n" << usage;
    return 2;
  }
  std::ifstream catalog_file(catalog_path);
  if (!catalog_file) {
    std::cerr << "keel-dslc: cannot read the catalog " << catalog_path << "\n";
    return 1;
  }
  const std::string catalog_text{std::istreambuf_iterator<char>(catalog_file), {}};
  auto cat = dsl::catalog::from_json(catalog_text);
  if (!cat) {
    std::cerr << "keel-dslc: " << catalog_path << ": " << cat.error().message << "\n";
    return 1;
  }
  if (rls) {
    auto c = dsl::compiler::create(std::move(*cat), {.cache_capacity = 0});
    if (!c) {
      std::cerr << "keel-dslc: " << catalog_path << ": " << c.error().message << "\n";
      return 1;
    }
    auto script = c->rls_script();
    if (!script) {
      std::cerr << "keel-dslc: " << script.error().message << "\n";
      return 1;
    }
    std::cout << *script;
    return 0;
  }
  if (role.empty()) {
    if (cat->roles.size() != 1) {
      std::cerr << "keel-dslc: the catalog has " << cat->roles.size() << " roles: name one with --role\n";
      return 2;
    }
    role = cat->roles.front().name;
  }
  dsl::session who{.role = role};
  for (const auto& [name, text] : session_values) {
    const auto* attribute = cat->find_attribute(name);
    auto v = attribute == nullptr ? std::nullopt : dsl::session_value_from_text(*attribute, text);
    if (!v) {
      std::cerr << "keel-dslc: --session " << name
                << ": not a session attribute of the catalog, or not a value of "
                << "its type\n";
      return 2;
    }
    who.attributes.emplace(name, std::move(*v));
  }
  auto compiler = dsl::compiler::create(std::move(*cat), {.cache_capacity = 0});
  if (!compiler) {
    std::cerr << "keel-dslc: " << catalog_path << ": " << compiler.error().message << "\n";
    return 1;
  }
  const std::string text{std::istreambuf_iterator<char>(std::cin), {}};
  auto compiled = compiler->compile(text, who);
  if (!compiled) {
    std::cerr << compiled.error().render(text);
    return 1;
  }
  std::cout << (*compiled)->sql() << "\n";
  if (parameters) {
    auto bound = (*compiled)->bind(who, args);
    if (!bound) {
      std::cerr << "keel-dslc: " << bound.error().message << "\n";
      return 1;
    }
    boost::json::array values;
    for (const auto& v : bound->values) {
      if (v) {
        values.emplace_back(*v);
      } else {
        values.emplace_back(nullptr);
      }
    }
    std::cout << boost::json::serialize(values) << "\n";
  }
  return 0;
}
