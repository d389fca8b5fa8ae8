// The PN-counter (keel/crdt/pn_counter.hpp): per-replica totals, merged by taking the greater.
#include <keel/core/byte_io.hpp>
#include <keel/crdt/detail/dot_kernel.hpp>
#include <keel/crdt/pn_counter.hpp>

#include <algorithm>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::crdt {
namespace {

constexpr std::string_view magic = "KPNC";
constexpr std::uint8_t format_version = 1;
constexpr std::uint64_t total_limit = std::numeric_limits<std::int64_t>::max();

}  // namespace

result<void> pn_counter::add(std::uint64_t tally::*total, std::uint64_t by) {
  if (by == 0) return {};
  const auto found = tallies_.find(self_);
  const tally current = found == tallies_.end() ? tally{} : found->second;
  if (current.*total > total_limit - by) return errc::counter_overflow;
  // Decoders keep `changes` under the dot limit, so counting one more cannot wrap.
  auto& mine = tallies_[self_];
  mine.*total += by;
  ++mine.changes;
  return {};
}

result<void> pn_counter::increment(std::uint64_t by) {
  return add(&tally::increments, by);
}

result<void> pn_counter::decrement(std::uint64_t by) {
  return add(&tally::decrements, by);
}

std::int64_t pn_counter::value() const noexcept {
  std::uint64_t sum = 0;  // unsigned: wraps, where a signed sum would be undefined
  for (const auto& [replica, t] : tallies_) sum += t.increments - t.decrements;
  return static_cast<std::int64_t>(sum);
}

version_vector pn_counter::version() const {
  version_vector out;
  for (const auto& [replica, t] : tallies_) out[replica] = t.changes;
  return out;
}

bytes pn_counter::delta_since(const version_vector& seen) const {
  std::vector<std::pair<replica_id, tally>> changed;
  for (const auto& [replica, t] : tallies_) {
    const auto known = seen.find(replica);
    if (known == seen.end() || known->second < t.changes) changed.emplace_back(replica, t);
  }
  // Begun with the tag, not appended to an empty buffer: GCC 12 at -O3 misreads that insert.
  bytes out(magic.begin(), magic.end());
  out.reserve(magic.size() + 2 + changed.size() * 8);
  byte_writer w(out);
  w.u8(format_version);
  w.varint(changed.size());
  for (const auto& [replica, t] : changed) {
    w.varint(replica);
    w.varint(t.changes);
    w.varint(t.increments);
    w.varint(t.decrements);
  }
  return out;
}

result<void> pn_counter::apply(bytes_view delta) {
  // Decoded whole before anything is merged: a bad delta changes nothing.
  byte_reader r(delta);
  const auto tag = r.take(magic.size());
  if (!tag || as_chars(*tag) != magic) return errc::malformed_delta;
  const auto format = r.u8();
  if (!format || *format != format_version) return errc::malformed_delta;
  const auto count = r.varint();
  // Each tally takes four bytes at least: a count beyond that is a lie.
  if (!count || *count > r.remaining() / 4) return errc::malformed_delta;
  std::vector<std::pair<replica_id, tally>> arrived;
  arrived.reserve(static_cast<std::size_t>(*count));
  for (std::uint64_t k = 0; k < *count; ++k) {
    const auto replica = r.varint();
    const auto changes = r.varint();
    const auto increments = r.varint();
    const auto decrements = r.varint();
    if (!replica || !changes || !increments || !decrements) return errc::malformed_delta;
    if (!arrived.empty() && *replica <= arrived.back().first) return errc::malformed_delta;  // ascending
    if (*changes == 0 || *changes >= detail::counter_limit || *increments > total_limit ||
        *decrements > total_limit)
      return errc::malformed_delta;
    arrived.emplace_back(*replica, tally{*changes, *increments, *decrements});
  }
  if (!r.expect_end()) return errc::malformed_delta;
  for (const auto& [replica, theirs] : arrived) {
    auto& mine = tallies_[replica];
    mine.changes = std::max(mine.changes, theirs.changes);
    mine.increments = std::max(mine.increments, theirs.increments);
    mine.decrements = std::max(mine.decrements, theirs.decrements);
  }
  return {};
}

result<pn_counter> pn_counter::load(bytes_view saved, replica_id self) {
  pn_counter out(self);
  if (auto applied = out.apply(saved); !applied) return applied.error();
  return out;
}

}  // namespace keel::crdt
