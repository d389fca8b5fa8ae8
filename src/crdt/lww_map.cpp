// The LWW map (keel/crdt/lww_map.hpp): keys of a dot kernel whose values are stamped writes or
// stamped removals.
#include <keel/crdt/lww_map.hpp>

#include "lww.hpp"

#include <algorithm>

namespace keel::crdt {
namespace {

// After the stamp: 1 and the value, or 0 alone for a removal.
constexpr char present_flag = 1;
constexpr char absent_flag = 0;

std::uint64_t highest_stamp(const detail::dot_kernel& kernel) {
  std::uint64_t highest = 0;
  for (const auto& [d, e] : kernel.entries()) {
    if (const auto s = detail::read_stamp(e.value)) highest = std::max(highest, s->stamp);
  }
  return highest;
}

}  // namespace

lww_map::lww_map(detail::dot_kernel kernel)
    : kernel_(std::move(kernel)), highest_stamp_(highest_stamp(kernel_)) {}

void lww_map::write(std::string_view key, bool present, std::string_view value, std::uint64_t now) {
  const auto stamp = detail::next_stamp(now, highest_stamp_);
  std::string rest(1, present ? present_flag : absent_flag);
  rest += value;
  kernel_.remove_key(key);
  kernel_.add(std::string(key), detail::with_stamp(stamp, rest));
  highest_stamp_ = stamp;
}

void lww_map::set(std::string_view key, std::string_view value, std::uint64_t now) {
  write(key, true, value, now);
}

void lww_map::erase(std::string_view key, std::uint64_t now) {
  write(key, false, {}, now);
}

std::optional<std::string> lww_map::get(std::string_view key) const {
  const auto winner = detail::lww_winner(kernel_, key);
  if (!winner || winner->rest.front() != present_flag) return std::nullopt;
  return std::string(winner->rest.substr(1));
}

std::vector<std::string> lww_map::keys() const {
  std::vector<std::string> out;
  for (const auto& [key, dots] : kernel_.keys()) {
    const auto winner = detail::lww_winner(kernel_, key);
    if (winner && winner->rest.front() == present_flag) out.push_back(key);
  }
  return out;
}

bytes lww_map::delta_since(const version_vector& seen) const {
  return kernel_.delta_since(seen).encode(magic());
}

bool lww_map::valid_entry(std::string_view /*key*/, std::string_view value) noexcept {
  const auto s = detail::read_stamp(value);
  if (!s || s->rest.empty()) return false;
  return s->rest.front() == present_flag || (s->rest.front() == absent_flag && s->rest.size() == 1);
}

result<void> lww_map::apply(bytes_view delta) {
  auto decoded = detail::dot_kernel::decode(delta, magic(), &valid_entry, kernel_.self());
  if (!decoded) return decoded.error();
  kernel_.join(*decoded);
  highest_stamp_ = std::max(highest_stamp_, highest_stamp(*decoded));
  return {};
}

result<lww_map> lww_map::load(bytes_view saved, replica_id self) {
  lww_map out(self);
  if (auto applied = out.apply(saved); !applied) return applied.error();
  return out;
}

}  // namespace keel::crdt
