// The causal core shared by the OR-set, the registers and the maps (keel/crdt/detail/dot_kernel.hpp).
#include <keel/core/assert.hpp>
#include <keel/core/byte_io.hpp>
#include <keel/crdt/detail/dot_kernel.hpp>
#include <keel/crdt/error.hpp>

#include <algorithm>
#include <iterator>
#include <optional>
#include <vector>

namespace keel::crdt::detail {
namespace {

constexpr std::uint8_t format_version = 1;

bool starts_with(std::string_view text, std::string_view prefix) noexcept {
  return text.substr(0, prefix.size()) == prefix;
}

}  // namespace

bool causal_context::contains(const dot& d) const noexcept {
  const auto replica = ranges_.find(d.replica);
  if (replica == ranges_.end()) return false;
  const auto after = replica->second.upper_bound(d.counter);
  if (after == replica->second.begin()) return false;
  return d.counter < std::prev(after)->second;
}

void causal_context::insert_range(replica_id replica, std::uint64_t first, std::uint64_t end) {
  KEEL_ASSERT(first < end, "an empty range of dots");
  auto& held = ranges_[replica];
  auto it = held.upper_bound(first);
  if (it != held.begin()) {
    const auto before = std::prev(it);
    if (before->second >= first) {  // overlaps or touches: one range
      first = before->first;
      end = std::max(end, before->second);
      it = held.erase(before);
    }
  }
  while (it != held.end() && it->first <= end) {
    end = std::max(end, it->second);
    it = held.erase(it);
  }
  held.emplace(first, end);
}

void causal_context::erase(const dot& d) {
  const auto replica = ranges_.find(d.replica);
  if (replica == ranges_.end()) return;
  auto& held = replica->second;
  const auto after = held.upper_bound(d.counter);
  if (after == held.begin()) return;
  const auto at = std::prev(after);
  const auto first = at->first;
  const auto end = at->second;
  if (d.counter >= end) return;
  held.erase(at);
  if (first < d.counter) held.emplace(first, d.counter);
  if (d.counter + 1 < end) held.emplace(d.counter + 1, end);
  // No empty entries: equal sets must compare equal.
  if (held.empty()) ranges_.erase(replica);
}

void causal_context::join(const causal_context& other) {
  for (const auto& [replica, held] : other.ranges_) {
    for (const auto& [first, end] : held) insert_range(replica, first, end);
  }
}

version_vector causal_context::version() const {
  version_vector out;
  for (const auto& [replica, held] : ranges_) {
    if (!held.empty() && held.begin()->first == 1) out[replica] = held.begin()->second - 1;
  }
  return out;
}

std::uint64_t causal_context::highest(replica_id replica) const noexcept {
  const auto it = ranges_.find(replica);
  if (it == ranges_.end() || it->second.empty()) return 0;
  return std::prev(it->second.end())->second - 1;
}

void dot_kernel::insert_entry(const dot& d, entry e) {
  by_key_[e.key].insert(d);
  entries_.insert_or_assign(d, std::move(e));
}

void dot_kernel::erase_entry(const dot& d) {
  const auto it = entries_.find(d);
  KEEL_ASSERT(it != entries_.end(), "erasing a dot the store does not hold");
  const auto key = by_key_.find(it->second.key);
  KEEL_ASSERT(key != by_key_.end() && key->second.contains(d), "the key index lost a dot");
  key->second.erase(d);
  if (key->second.empty()) by_key_.erase(key);
  entries_.erase(it);
}

dot dot_kernel::add(std::string key, std::string value) {
  const dot d{self_, context_.highest(self_) + 1};
  // Decoders refuse counters past the limit, so only 2^62 local changes could reach it.
  KEEL_ASSERT(d.counter < counter_limit, "a replica made 2^62 changes");
  context_.insert(d);
  insert_entry(d, entry{std::move(key), std::move(value)});
  return d;
}

const std::set<dot>& dot_kernel::dots_of(std::string_view key) const {
  static const std::set<dot> none;
  const auto it = by_key_.find(key);
  return it == by_key_.end() ? none : it->second;
}

void dot_kernel::remove_key(std::string_view key) {
  const auto it = by_key_.find(key);
  if (it == by_key_.end()) return;
  const std::vector<dot> dots(it->second.begin(), it->second.end());
  for (const auto& d : dots) erase_entry(d);
}

void dot_kernel::remove_prefix(std::string_view prefix) {
  std::vector<dot> dots;
  for (auto it = by_key_.lower_bound(prefix); it != by_key_.end() && starts_with(it->first, prefix); ++it) {
    dots.insert(dots.end(), it->second.begin(), it->second.end());
  }
  for (const auto& d : dots) erase_entry(d);
}

void dot_kernel::join(const dot_kernel& other) {
  // Ours that the other side saw and no longer holds were removed there. Looked up range by
  // range of its context, so that a small delta costs its own size, not this store's.
  for (const auto& [replica, held] : other.context_.by_replica()) {
    for (const auto& [first, end] : held) {
      auto it = entries_.lower_bound(dot{replica, first});
      while (it != entries_.end() && it->first.replica == replica && it->first.counter < end) {
        const auto d = it->first;
        ++it;
        if (!other.entries_.contains(d)) erase_entry(d);
      }
    }
  }
  // Theirs that we have not seen are new here; a dot both hold keeps the greater payload.
  for (const auto& [d, e] : other.entries_) {
    const auto mine = entries_.find(d);
    if (mine != entries_.end()) {
      if (mine->second < e) {
        erase_entry(d);
        insert_entry(d, e);
      }
    } else if (!context_.contains(d)) {
      insert_entry(d, e);
    }
  }
  context_.join(other.context_);
}

dot_kernel dot_kernel::delta_since(const version_vector& seen) const {
  dot_kernel out(self_);
  out.context_ = context_;
  for (const auto& [d, e] : entries_) {
    const auto known = seen.find(d.replica);
    if (known != seen.end() && d.counter <= known->second) {
      // The receiver holds this one: leaving its dot out of the context keeps it there.
      out.context_.erase(d);
    } else {
      out.insert_entry(d, e);
    }
  }
  return out;
}

dot_kernel dot_kernel::slice(std::string_view prefix) const {
  dot_kernel out(self_);
  out.context_ = context_;
  for (auto it = by_key_.lower_bound(prefix); it != by_key_.end() && starts_with(it->first, prefix); ++it) {
    for (const auto& d : it->second) {
      out.insert_entry(d, entry{it->first.substr(prefix.size()), entries_.at(d).value});
    }
  }
  return out;
}

void dot_kernel::replace_slice(std::string_view prefix, const dot_kernel& part) {
  remove_prefix(prefix);
  for (const auto& [d, e] : part.entries_) {
    std::string key(prefix);
    key += e.key;
    insert_entry(d, entry{std::move(key), e.value});
  }
  context_.join(part.context_);
}

bytes dot_kernel::encode(std::string_view magic) const {
  // Begun with the tag, not appended to an empty buffer: GCC 12 at -O3 misreads that insert.
  bytes out(magic.begin(), magic.end());
  out.reserve(magic.size() + 4 + entries_.size() * 8);
  byte_writer w(out);
  w.u8(format_version);
  w.varint(context_.by_replica().size());
  for (const auto& [replica, held] : context_.by_replica()) {
    w.varint(replica);
    w.varint(held.size());
    std::uint64_t previous_end = 1;
    for (const auto& [first, end] : held) {
      w.varint(first - previous_end);
      w.varint(end - first);
      previous_end = end;
    }
  }
  w.varint(entries_.size());
  for (const auto& [d, e] : entries_) {
    w.varint(d.replica);
    w.varint(d.counter);
    w.append_varint_prefixed(as_bytes(e.key));
    w.append_varint_prefixed(as_bytes(e.value));
  }
  return out;
}

result<dot_kernel> dot_kernel::decode(bytes_view in, std::string_view magic, entry_check check,
                                      replica_id self) {
  byte_reader r(in);
  const auto tag = r.take(magic.size());
  if (!tag || as_chars(*tag) != magic) return errc::malformed_delta;
  const auto format = r.u8();
  if (!format || *format != format_version) return errc::malformed_delta;

  dot_kernel out(self);
  // Every count is checked against the bytes left (each item takes at least one), so a hostile
  // count cannot make the loop or an allocation outrun the input.
  const auto replicas = r.varint();
  if (!replicas || *replicas > r.remaining()) return errc::malformed_delta;
  std::uint64_t previous_replica = 0;
  for (std::uint64_t k = 0; k < *replicas; ++k) {
    const auto replica = r.varint();
    const auto count = r.varint();
    if (!replica || !count || *count == 0 || *count > r.remaining()) return errc::malformed_delta;
    if (k > 0 && *replica <= previous_replica) return errc::malformed_delta;  // ascending, once each
    previous_replica = *replica;
    std::uint64_t previous_end = 1;
    for (std::uint64_t j = 0; j < *count; ++j) {
      const auto gap = r.varint();
      const auto length = r.varint();
      if (!gap || !length || *length == 0) return errc::malformed_delta;
      // Ranges after the first are apart from the one before (else they would be one range).
      if (j > 0 && *gap == 0) return errc::malformed_delta;
      if (*gap >= counter_limit - previous_end || *length > counter_limit - previous_end - *gap)
        return errc::malformed_delta;
      const auto first = previous_end + *gap;
      const auto end = first + *length;
      out.context_.insert_range(*replica, first, end);
      previous_end = end;
    }
  }
  const auto entries = r.varint();
  if (!entries || *entries > r.remaining()) return errc::malformed_delta;
  std::optional<dot> previous;
  for (std::uint64_t k = 0; k < *entries; ++k) {
    const auto replica = r.varint();
    const auto counter = r.varint();
    if (!replica || !counter) return errc::malformed_delta;
    const dot d{*replica, *counter};
    if ((previous && d <= *previous) || !out.context_.contains(d)) return errc::malformed_delta;
    previous = d;
    const auto key = r.take_varint_prefixed(r.remaining());
    if (!key) return errc::malformed_delta;
    const auto value = r.take_varint_prefixed(r.remaining());
    if (!value || !check(as_chars(*key), as_chars(*value))) return errc::malformed_delta;
    out.insert_entry(d, entry{std::string(as_chars(*key)), std::string(as_chars(*value))});
  }
  if (!r.expect_end()) return errc::malformed_delta;
  return out;
}

std::string composite_prefix(std::string_view key) {
  bytes length;
  append_varint(length, key.size());
  std::string out(as_chars(length));
  out += key;
  return out;
}

std::optional<std::pair<std::string_view, std::string_view>> split_composite(std::string_view composite) {
  const auto raw = as_bytes(composite);
  std::size_t at = 0;
  const auto length = decode_varint(raw, at);
  if (!length || *length > composite.size() - at) return std::nullopt;
  const auto size = static_cast<std::size_t>(*length);
  return std::pair{composite.substr(at, size), composite.substr(at + size)};
}

}  // namespace keel::crdt::detail
