// The add-wins OR-set (keel/crdt/or_set.hpp): elements are keys of a dot kernel.
#include <keel/crdt/or_set.hpp>

namespace keel::crdt {

void or_set::add(std::string_view element) {
  // The new dot stands for the earlier additions seen here: a remove that saw it removes all.
  kernel_.remove_key(element);
  kernel_.add(std::string(element), {});
}

std::vector<std::string> or_set::elements() const {
  std::vector<std::string> out;
  out.reserve(kernel_.keys().size());
  for (const auto& [element, dots] : kernel_.keys()) out.push_back(element);
  return out;
}

bytes or_set::delta_since(const version_vector& seen) const {
  return kernel_.delta_since(seen).encode(magic());
}

bool or_set::valid_entry(std::string_view /*key*/, std::string_view value) noexcept {
  return value.empty();
}

result<void> or_set::apply(bytes_view delta) {
  auto decoded = detail::dot_kernel::decode(delta, magic(), &valid_entry, kernel_.self());
  if (!decoded) return decoded.error();
  kernel_.join(*decoded);
  return {};
}

result<or_set> or_set::load(bytes_view saved, replica_id self) {
  or_set out(self);
  if (auto applied = out.apply(saved); !applied) return applied.error();
  return out;
}

}  // namespace keel::crdt
