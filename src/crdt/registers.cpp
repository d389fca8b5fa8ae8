// The LWW and multi-value registers (keel/crdt/lww_register.hpp, mv_register.hpp): one key in a
// dot kernel; a write replaces the dots its replica saw.
#include <keel/crdt/lww_register.hpp>
#include <keel/crdt/mv_register.hpp>

#include "lww.hpp"

#include <algorithm>

namespace keel::crdt {

void lww_register::set(std::string_view value, std::uint64_t now) {
  const auto seen = detail::lww_winner(kernel_, {});
  const auto stamp = detail::next_stamp(now, seen ? seen->stamp : 0);
  kernel_.remove_key({});
  kernel_.add({}, detail::with_stamp(stamp, value));
}

std::optional<std::string> lww_register::get() const {
  const auto winner = detail::lww_winner(kernel_, {});
  if (!winner) return std::nullopt;
  return std::string(winner->rest);
}

std::uint64_t lww_register::timestamp() const noexcept {
  const auto winner = detail::lww_winner(kernel_, {});
  return winner ? winner->stamp : 0;
}

bytes lww_register::delta_since(const version_vector& seen) const {
  return kernel_.delta_since(seen).encode(magic());
}

bool lww_register::valid_entry(std::string_view key, std::string_view value) noexcept {
  return key.empty() && detail::read_stamp(value).has_value();
}

result<void> lww_register::apply(bytes_view delta) {
  auto decoded = detail::dot_kernel::decode(delta, magic(), &valid_entry, kernel_.self());
  if (!decoded) return decoded.error();
  kernel_.join(*decoded);
  return {};
}

result<lww_register> lww_register::load(bytes_view saved, replica_id self) {
  lww_register out(self);
  if (auto applied = out.apply(saved); !applied) return applied.error();
  return out;
}

void mv_register::set(std::string_view value) {
  kernel_.remove_key({});
  kernel_.add({}, std::string(value));
}

std::vector<std::string> mv_register::values() const {
  std::vector<std::string> out;
  for (const auto& d : kernel_.dots_of({})) out.push_back(kernel_.entries().at(d).value);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

bytes mv_register::delta_since(const version_vector& seen) const {
  return kernel_.delta_since(seen).encode(magic());
}

bool mv_register::valid_entry(std::string_view key, std::string_view /*value*/) noexcept {
  return key.empty();
}

result<void> mv_register::apply(bytes_view delta) {
  auto decoded = detail::dot_kernel::decode(delta, magic(), &valid_entry, kernel_.self());
  if (!decoded) return decoded.error();
  kernel_.join(*decoded);
  return {};
}

result<mv_register> mv_register::load(bytes_view saved, replica_id self) {
  mv_register out(self);
  if (auto applied = out.apply(saved); !applied) return applied.error();
  return out;
}

}  // namespace keel::crdt
