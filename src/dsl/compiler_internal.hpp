#pragma once
// What the compiler's parts share: a role's flattened, parsed policy, and the compiler's state.
#include <keel/dsl/compiler.hpp>

#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace keel::dsl::detail {

// A grant with its expressions parsed once, at compiler creation.
struct parsed_grant {
  const grant* source = nullptr;
  const table* target = nullptr;
  bool all_columns = false;
  ast::node_ptr row_filter;                                  // null: every row
  ast::node_ptr when;                                        // null: always
  std::vector<std::pair<std::string, ast::node_ptr>> masks;  // column → expression
  [[nodiscard]] bool shows(std::string_view column) const;
  [[nodiscard]] const ast::node* mask_of(std::string_view column) const;
};

struct role_policy {
  std::string name;
  std::vector<parsed_grant> grants;  // its own and every inherited role's
  std::int64_t max_rows = 0;         // the smallest ceiling along the inheritance, 0 for none
  // The session attributes whose values the compiler folds into the SQL (grant conditions,
  // session-only terms of row filters, the tenant schema): part of the cache key.
  std::vector<std::string> folded_attributes;
};

// The compiled-query cache: least recently used evicted beyond the capacity.
class query_cache {
 public:
  explicit query_cache(std::size_t capacity) : capacity_(capacity) {}
  std::shared_ptr<const compiled_query> find(const std::string& key);
  void put(const std::string& key, std::shared_ptr<const compiled_query> value);

 private:
  using entry = std::pair<std::string, std::shared_ptr<const compiled_query>>;
  std::size_t capacity_;
  std::mutex mutex_;
  std::list<entry> order_;  // most recent first
  std::unordered_map<std::string, std::list<entry>::iterator> index_;
};

}  // namespace keel::dsl::detail

namespace keel::dsl {

struct compiler::state {
  dsl::catalog cat;
  compiler_options options;
  std::vector<detail::role_policy> roles;
  std::unique_ptr<detail::query_cache> cache;  // its own lock: compile() is const and thread-safe

  [[nodiscard]] const detail::role_policy* find_role(std::string_view name) const noexcept {
    for (const auto& r : roles) {
      if (r.name == name) return &r;
    }
    return nullptr;
  }
};

}  // namespace keel::dsl
