// The text CRDT. Items (runs of characters one replica typed in a row) sit in document order in
// blocks of a few dozen, each block knowing its visible length, so a position is found by
// summing blocks then items — from the block of the last edit when the edit is after it, which
// typing always is. An index per replica finds the item holding a character id. Remote items
// are placed by Yjs's YATA rule (Item.integrate in Yjs), so concurrent inserts order as in Yjs.
#include <keel/core/assert.hpp>
#include <keel/core/byte_io.hpp>
#include <keel/core/utf8.hpp>
#include <keel/core/varint.hpp>
#include <keel/core/xxhash.hpp>
#include <keel/crdt/text.hpp>

#include <algorithm>
#include <array>
#include <limits>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace keel::crdt {
namespace {

constexpr std::uint32_t none = std::numeric_limits<std::uint32_t>::max();
// Items per block: a block splits at twice this. Small enough that a scan inside one is cheap,
// large enough that the blocks of a long document are few.
constexpr std::size_t block_items = 32;
// Undo steps kept by default: an editor's long session, not a whole history.
constexpr std::size_t default_undo_limit = 1000;
constexpr std::array<std::uint8_t, 4> magic = {'K', 'C', 'R', 'T'};
constexpr std::uint8_t format_version = 1;

// Item flags in the encoding.
constexpr std::uint8_t has_origin = 1U << 0U;
constexpr std::uint8_t has_right = 1U << 1U;
constexpr std::uint8_t is_deleted = 1U << 2U;
constexpr std::uint8_t same_replica = 1U << 3U;        // the replica of the previous item
constexpr std::uint8_t continues_clock = 1U << 4U;     // its clock follows the previous item's
constexpr std::uint8_t origin_is_previous = 1U << 5U;  // origin: (own replica, clock - 1)
constexpr std::uint8_t known_flags = 0x3F;

struct item {
  char_id id;
  std::uint32_t length = 0;
  std::uint32_t content = none;  // offset into the characters; none for deleted ones received
  std::uint32_t block = 0;       // the block's id (stable across block splits)
  bool has_origin = false;
  bool has_right = false;
  bool deleted = false;
  char_id origin;  // the character left of it when it was inserted
  char_id right;   // the character right of it then
};

struct block {
  std::vector<std::uint32_t> items;
  std::uint64_t visible = 0;
  std::uint32_t id = 0;
};

// An item as a delta carries it, before it is placed.
struct incoming {
  item fields;
  std::u32string chars;  // empty for deleted items
};

struct range {
  char_id start;
  std::uint64_t length = 0;
};

// A list holding its first element in place: most undo steps are one action of one range, and
// recording one must not cost an allocation per keystroke.
template <class T>
class few {
 public:
  void push_back(T value) {
    if (count_ == 0) {
      first_ = std::move(value);
    } else {
      rest_.push_back(std::move(value));
    }
    ++count_;
  }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  T& operator[](std::size_t k) { return k == 0 ? first_ : rest_[k - 1]; }
  const T& operator[](std::size_t k) const { return k == 0 ? first_ : rest_[k - 1]; }
  T& back() { return (*this)[count_ - 1]; }
  [[nodiscard]] const T& front() const { return first_; }
  void clear() {
    count_ = 0;
    rest_.clear();
  }
  // A new last element, cleared (its buffers kept when it is the first).
  T& emplace_cleared() {
    if (count_++ == 0) {
      first_.clear();
      return first_;
    }
    return rest_.emplace_back();
  }

 private:
  T first_{};
  std::vector<T> rest_;
  std::size_t count_ = 0;
};

// One part of an undoable edit: characters typed (their ids), or characters deleted (their ids
// and their text), each range one run in document order.
struct undo_action {
  bool inserted = false;
  few<range> ranges;
  std::u32string chars;  // deleted: the ranges' characters, one range after the other
  void clear() {
    inserted = false;
    ranges.clear();
    chars.clear();
  }
};

// What one undo takes back: an insert or erase call, or the calls of a group.
struct undo_step {
  few<undo_action> actions;
};

// The newest `limit` undo steps in a ring: recording one reuses the oldest's slot.
class step_ring {
 public:
  explicit step_ring(std::size_t limit) : limit_(limit) {}
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  undo_step& back() { return slots_[(head_ + count_ - 1) % slots_.size()]; }
  void pop_back() { --count_; }
  void clear() { count_ = 0; }
  // A new newest step, empty; the oldest goes when the ring is full.
  undo_step& push() {
    KEEL_ASSERT(limit_ > 0);
    undo_step* slot = nullptr;
    if (count_ < slots_.size()) {
      slot = &slots_[(head_ + count_++) % slots_.size()];
    } else if (slots_.size() < limit_) {
      // Still growing: nothing was overwritten yet, so the oldest is at 0.
      KEEL_ASSERT(head_ == 0);
      slot = &slots_.emplace_back();
      ++count_;
    } else {
      slot = &slots_[head_];
      head_ = (head_ + 1) % slots_.size();
    }
    slot->actions.clear();
    return *slot;
  }
  // Keeps the newest `limit`.
  void set_limit(std::size_t limit) {
    std::vector<undo_step> kept;
    const auto n = std::min(count_, limit);
    for (std::size_t k = count_ - n; k < count_; ++k)
      kept.push_back(std::move(slots_[(head_ + k) % slots_.size()]));
    slots_ = std::move(kept);
    head_ = 0;
    count_ = n;
    limit_ = limit;
  }

 private:
  std::vector<undo_step> slots_;
  std::size_t head_ = 0;  // the oldest
  std::size_t count_ = 0;
  std::size_t limit_;
};

bool same_origin(bool a_has, const char_id& a, bool b_has, const char_id& b) {
  return a_has == b_has && (!a_has || a == b);
}

// Well-formed UTF-8 to code points; false (with `out` partly filled) if it is not.
bool decode_utf8(std::string_view in, std::u32string& out) {
  while (!in.empty()) {
    const auto length = utf8_sequence_length(in);
    if (length == 0) return false;
    out.push_back(utf8_code_point(in, length));
    in.remove_prefix(length);
  }
  return true;
}

}  // namespace

struct text::state {
  replica_id self;
  std::vector<item> items;
  std::u32string chars;
  std::vector<block> blocks;            // document order
  std::vector<std::uint32_t> block_at;  // block id -> position in `blocks`
  bool block_at_stale = false;
  std::uint64_t visible = 0;
  version_vector versions;                                                       // next clock per replica
  std::unordered_map<replica_id, std::map<std::uint64_t, std::uint32_t>> index;  // clock start -> item
  // Received items that wait for characters not seen yet: per replica, by clock.
  std::map<replica_id, std::map<std::uint64_t, incoming>> waiting;
  std::vector<range> pending_deletes;
  // What is deleted, per replica: clock start -> length, merged (the delete set deltas carry).
  std::map<replica_id, std::map<std::uint64_t, std::uint64_t>> deleted;
  // This replica's edits that undo() takes back (oldest first) and what redo() types again.
  step_ring undo_steps{default_undo_limit}, redo_steps{default_undo_limit};
  std::size_t undo_limit = default_undo_limit;
  // Deleted runs an undo typed again: old clock start -> (length, first new character).
  std::map<replica_id, std::map<std::uint64_t, std::pair<std::uint64_t, char_id>>> retyped;
  int group_depth = 0;
  bool group_open = false;  // the last undo step takes the group's next edits
  // Where the last position search ended: a block and the visible characters before it.
  std::size_t cache_block = 0;
  std::uint64_t cache_before = 0;

  explicit state(replica_id who) : self(who) {}

  // ---- blocks -------------------------------------------------------------------------------
  std::size_t block_position(std::uint32_t id) {
    if (block_at_stale) {
      block_at.assign(blocks.size(), 0);
      for (std::size_t b = 0; b < blocks.size(); ++b) block_at[blocks[b].id] = static_cast<std::uint32_t>(b);
      block_at_stale = false;
    }
    return block_at[id];
  }

  // The block and index of item `x`, which was at (b, i) before a split after it: there still,
  // or moved to the next block if that split the block.
  std::pair<std::size_t, std::size_t> where_after_split(std::uint32_t x, std::size_t b, std::size_t i) {
    if (i < blocks[b].items.size() && blocks[b].items[i] == x) return {b, i};
    if (i >= block_items && b + 1 < blocks.size() && i - block_items < blocks[b + 1].items.size() &&
        blocks[b + 1].items[i - block_items] == x)
      return {b + 1, i - block_items};
    return where(x);
  }

  // The block and index of an item.
  std::pair<std::size_t, std::size_t> where(std::uint32_t x) {
    const auto b = block_position(items[x].block);
    const auto& list = blocks[b].items;
    const auto i = static_cast<std::size_t>(std::find(list.begin(), list.end(), x) - list.begin());
    KEEL_ASSERT(i < list.size());
    return {b, i};
  }

  void changed_visible(std::size_t b, std::int64_t delta) {
    blocks[b].visible = static_cast<std::uint64_t>(static_cast<std::int64_t>(blocks[b].visible) + delta);
    visible = static_cast<std::uint64_t>(static_cast<std::int64_t>(visible) + delta);
    if (b < cache_block) cache_block = 0, cache_before = 0;
  }

  // Puts item `x` at index `i` of block `b` (visible length counted), splitting the block when full.
  void place(std::size_t b, std::size_t i, std::uint32_t x) {
    if (blocks.empty()) {
      blocks.push_back(block{{}, 0, 0});
      block_at.assign(1, 0);
      b = 0, i = 0;
    }
    auto& list = blocks[b].items;
    list.insert(list.begin() + static_cast<std::ptrdiff_t>(i), x);
    items[x].block = blocks[b].id;
    if (!items[x].deleted) changed_visible(b, items[x].length);
    if (list.size() >= 2 * block_items) split_block(b);
  }

  void split_block(std::size_t b) {
    block second;
    second.id = static_cast<std::uint32_t>(blocks.size());
    auto& first = blocks[b].items;
    second.items.assign(first.begin() + static_cast<std::ptrdiff_t>(block_items), first.end());
    first.resize(block_items);
    for (const auto x : second.items) {
      items[x].block = second.id;
      if (!items[x].deleted) second.visible += items[x].length;
    }
    blocks[b].visible -= second.visible;
    blocks.insert(blocks.begin() + static_cast<std::ptrdiff_t>(b) + 1, std::move(second));
    block_at_stale = true;
    if (b < cache_block) cache_block = 0, cache_before = 0;
  }

  // The item after the one at (b, i), or none.
  std::uint32_t next_of(std::size_t& b, std::size_t& i) const {
    if (i + 1 < blocks[b].items.size()) return blocks[b].items[++i];
    if (b + 1 < blocks.size()) {
      ++b, i = 0;
      return blocks[b].items[0];
    }
    return none;
  }

  // ---- finding ------------------------------------------------------------------------------
  // The visible character `pos` (< visible): its block, index in the block, offset in the item.
  struct found {
    std::size_t b, i;
    std::uint32_t offset;
  };
  found find_visible(std::uint64_t pos) {
    std::size_t b = 0;
    std::uint64_t before = 0;
    if (cache_block < blocks.size()) {
      b = cache_block, before = cache_before;
      // Backwards from the last edit when the position is before it (and nearer it than the start).
      if (pos < before && pos > before / 2) {
        while (pos < before) --b, before -= blocks[b].visible;
      } else if (pos < before) {
        b = 0, before = 0;
      }
    }
    while (pos >= before + blocks[b].visible) before += blocks[b].visible, ++b;
    cache_block = b, cache_before = before;
    const auto& list = blocks[b].items;
    std::uint64_t at = before;
    for (std::size_t i = 0;; ++i) {
      const auto& it = items[list[i]];
      if (it.deleted) continue;
      if (pos < at + it.length) return {b, i, static_cast<std::uint32_t>(pos - at)};
      at += it.length;
    }
  }

  // The item holding character `id`, and the character's offset in it; none if unknown.
  std::pair<std::uint32_t, std::uint32_t> find_id(const char_id& id) const {
    const auto r = index.find(id.replica);
    if (r == index.end()) return {none, 0};
    auto at = r->second.upper_bound(id.clock);
    if (at == r->second.begin()) return {none, 0};
    --at;
    const auto& it = items[at->second];
    if (id.clock >= it.id.clock + it.length) return {none, 0};
    return {at->second, static_cast<std::uint32_t>(id.clock - it.id.clock)};
  }

  [[nodiscard]] bool known(const char_id& id) const {
    const auto v = versions.find(id.replica);
    return v != versions.end() && id.clock < v->second;
  }

  // ---- changing ------------------------------------------------------------------------------
  std::uint32_t add_item(const item& fields) {
    const auto x = static_cast<std::uint32_t>(items.size());
    items.push_back(fields);
    index[fields.id.replica][fields.id.clock] = x;
    return x;
  }

  // Splits the item at (b, i) so that its first `k` characters stay; the rest becomes the next
  // item. @returns the new item.
  std::uint32_t split(std::size_t b, std::size_t i, std::uint32_t k) {
    const auto x = blocks[b].items[i];
    KEEL_ASSERT(k > 0 && k < items[x].length);
    item right = items[x];
    right.id.clock += k;
    right.length -= k;
    right.has_origin = true;
    right.origin = {items[x].id.replica, items[x].id.clock + k - 1};
    if (right.content != none) right.content += k;
    items[x].length = k;
    const auto y = add_item(right);
    // Placed by hand: its characters were counted as the left part's.
    auto& list = blocks[b].items;
    list.insert(list.begin() + static_cast<std::ptrdiff_t>(i) + 1, y);
    items[y].block = blocks[b].id;
    if (list.size() >= 2 * block_items) split_block(b);
    return y;
  }

  // The item ending with character `id` (splitting after it), or none if unknown.
  std::uint32_t item_ending_at(const char_id& id) {
    auto [x, offset] = find_id(id);
    if (x == none) return none;
    if (offset + 1 < items[x].length) {
      auto [b, i] = where(x);
      split(b, i, offset + 1);
    }
    return x;
  }

  // The item starting with character `id` (splitting before it), or none if unknown.
  std::uint32_t item_starting_at(const char_id& id) {
    auto [x, offset] = find_id(id);
    if (x == none) return none;
    if (offset == 0) return x;
    auto [b, i] = where(x);
    return split(b, i, offset);
  }

  void note_deleted(const char_id& id, std::uint64_t length) {
    auto& ranges = deleted[id.replica];
    std::uint64_t start = id.clock, end = id.clock + length;
    auto it = ranges.upper_bound(start);
    if (it != ranges.begin()) {
      const auto before = std::prev(it);
      if (before->first + before->second >= start) {
        start = before->first;
        end = std::max(end, before->first + before->second);
        it = ranges.erase(before);
      }
    }
    while (it != ranges.end() && it->first <= end) {
      end = std::max(end, it->first + it->second);
      it = ranges.erase(it);
    }
    ranges.emplace(start, end - start);
  }

  // Whether all of [start, start + length) is deleted already.
  [[nodiscard]] bool all_deleted(const range& r) const {
    const auto ranges = deleted.find(r.start.replica);
    if (ranges == deleted.end()) return false;
    auto it = ranges->second.upper_bound(r.start.clock);
    if (it == ranges->second.begin()) return false;
    --it;
    return it->first + it->second >= r.start.clock + r.length;
  }

  void mark_deleted(std::size_t b, std::uint32_t x) {
    if (items[x].deleted) return;
    items[x].deleted = true;
    changed_visible(b, -static_cast<std::int64_t>(items[x].length));
    note_deleted(items[x].id, items[x].length);
  }

  // Deletes the known characters [start, start + length) of one replica; @returns how many
  // (a prefix: the rest is not known yet).
  std::uint64_t delete_known(const range& r) {
    if (all_deleted(r)) return r.length;
    std::uint64_t done = 0;
    while (done < r.length) {
      const char_id id{r.start.replica, r.start.clock + done};
      if (!known(id)) break;
      const auto x = item_starting_at(id);
      KEEL_ASSERT(x != none);
      const auto want = r.length - done;
      if (items[x].length > want) {
        auto [b, i] = where(x);
        split(b, i, static_cast<std::uint32_t>(want));
      }
      auto [b, i] = where(x);
      mark_deleted(b, x);
      done += items[x].length;
    }
    return done;
  }

  // ---- local edits, and undo ----------------------------------------------------------------------
  // Types `added` before visible character `pos` (<= visible) as this replica.
  void insert_chars(std::size_t pos, std::u32string_view added) {
    auto& s = *this;
    const auto n = static_cast<std::uint32_t>(added.size());
    std::uint64_t& next_clock = s.versions[s.self];
    std::uint32_t left = none, right = none;
    std::size_t b = 0, i = 0;
    if (pos == 0) {
      if (!s.blocks.empty()) right = s.blocks[0].items[0];
    } else {
      auto at = s.find_visible(pos - 1);
      b = at.b, i = at.i;
      left = s.blocks[b].items[i];
      if (at.offset + 1 < s.items[left].length) s.split(b, i, at.offset + 1);
      // The split may have moved the item to a new block.
      std::tie(b, i) = s.where_after_split(left, b, i);
      std::size_t nb = b, ni = i;
      right = s.next_of(nb, ni);
    }
    if (left != none) {
      // Typing on at the end of one's own run: the run grows, no new item.
      item& l = s.items[left];
      const bool right_same = right == none ? !l.has_right : (l.has_right && l.right == s.items[right].id);
      if (l.id.replica == s.self && !l.deleted && l.id.clock + l.length == next_clock && l.content != none &&
          l.content + l.length == s.chars.size() && right_same) {
        l.length += n;
        s.chars.append(added);
        s.changed_visible(b, n);
        next_clock += n;
        return;
      }
    }
    item fresh;
    fresh.id = {s.self, next_clock};
    fresh.length = n;
    fresh.content = static_cast<std::uint32_t>(s.chars.size());
    if (left != none) {
      fresh.has_origin = true;
      fresh.origin = {s.items[left].id.replica, s.items[left].id.clock + s.items[left].length - 1};
    }
    if (right != none) {
      fresh.has_right = true;
      fresh.right = s.items[right].id;
    }
    s.chars.append(added);
    const auto x = s.add_item(fresh);
    if (left == none) {
      s.place(0, 0, x);
    } else {
      s.place(b, i + 1, x);
    }
    next_clock += n;
  }

  // Deletes `count` visible characters from `pos`; what it deleted goes into `record` (if any).
  void erase_chars(std::size_t pos, std::size_t count, undo_action* record) {
    auto& s = *this;
    while (count > 0) {
      auto at = s.find_visible(pos);
      auto x = s.blocks[at.b].items[at.i];
      std::size_t b = at.b, i = at.i;
      if (at.offset > 0) {
        x = s.split(b, i, at.offset);
        std::tie(b, i) = s.where_after_split(x, b, i + 1);
      }
      if (s.items[x].length > count) {
        s.split(b, i, static_cast<std::uint32_t>(count));
        std::tie(b, i) = s.where_after_split(x, b, i);
      }
      count -= s.items[x].length;
      if (record != nullptr) record_deleted(*record, x);
      s.mark_deleted(b, x);
    }
  }

  // Where a local edit is kept for undo() (none when no undo is kept): the open group's last
  // action of the kind, or a new step. A new edit ends what redo() could bring back.
  undo_action* recording(bool inserted) {
    if (undo_limit == 0) return nullptr;
    redo_steps.clear();
    if (group_open && !undo_steps.empty()) {
      auto& actions = undo_steps.back().actions;
      if (actions.back().inserted == inserted) return &actions.back();
      auto& action = actions.emplace_cleared();
      action.inserted = inserted;
      return &action;
    }
    auto& action = undo_steps.push().actions.emplace_cleared();
    action.inserted = inserted;
    group_open = group_depth > 0;
    return &action;
  }

  // Where undo typed characters of `r` again: the new characters' ranges.
  [[nodiscard]] std::vector<range> retyped_parts(const range& r) const {
    std::vector<range> out;
    const auto runs = retyped.find(r.start.replica);
    if (runs == retyped.end()) return out;
    const auto end = r.start.clock + r.length;
    auto at = runs->second.upper_bound(r.start.clock);
    if (at != runs->second.begin()) --at;
    for (; at != runs->second.end() && at->first < end; ++at) {
      const auto [length, target] = at->second;
      const auto from = std::max(at->first, r.start.clock);
      const auto to = std::min(at->first + length, end);
      if (from < to) out.push_back({{target.replica, target.clock + (from - at->first)}, to - from});
    }
    return out;
  }

  // Visible characters before character `id` (known).
  [[nodiscard]] std::uint64_t visible_before(const char_id& id) {
    const auto [x, offset] = find_id(id);
    KEEL_ASSERT(x != none);
    const auto [b, i] = where(x);
    std::uint64_t pos = 0;
    for (std::size_t k = 0; k < b; ++k) pos += blocks[k].visible;
    for (std::size_t k = 0; k < i; ++k) {
      const auto& it = items[blocks[b].items[k]];
      if (!it.deleted) pos += it.length;
    }
    if (!items[x].deleted) pos += offset;
    return pos;
  }

  // Deletes what of the characters `r` (known) is visible; records it.
  void erase_ids(const range& r, undo_action& record) {
    for (std::uint64_t done = 0; done < r.length;) {
      const char_id id{r.start.replica, r.start.clock + done};
      const auto [x, offset] = find_id(id);
      KEEL_ASSERT(x != none);
      const auto take = std::min<std::uint64_t>(items[x].length - offset, r.length - done);
      if (!items[x].deleted) {
        const auto y = item_starting_at(id);
        if (items[y].length > take) {
          auto [b, i] = where(y);
          split(b, i, static_cast<std::uint32_t>(take));
        }
        auto [b, i] = where(y);
        record_deleted(record, y);
        mark_deleted(b, y);
      } else {
        // Deleted, and perhaps typed again by an undo: then the new characters go.
        for (const auto& moved : retyped_parts({id, take})) erase_ids(moved, record);
      }
      done += take;
    }
  }

  // Types `added` as this replica right before item `x`, whatever it holds (a deleted item
  // too: its neighbour on the left becomes the origin). @returns the first new character.
  char_id insert_before(std::uint32_t x, std::u32string_view added) {
    const auto [b, i] = where(x);
    std::uint32_t left = none;
    if (i > 0) {
      left = blocks[b].items[i - 1];
    } else if (b > 0) {
      left = blocks[b - 1].items.back();
    }
    item fresh;
    fresh.id = {self, versions[self]};
    fresh.length = static_cast<std::uint32_t>(added.size());
    fresh.content = static_cast<std::uint32_t>(chars.size());
    if (left != none) {
      fresh.has_origin = true;
      fresh.origin = {items[left].id.replica, items[left].id.clock + items[left].length - 1};
    }
    fresh.has_right = true;
    fresh.right = items[x].id;
    chars.append(added);
    const auto y = add_item(fresh);
    place(b, i, y);
    versions[self] += fresh.length;
    return fresh.id;
  }

  // Types deleted characters again, each run right before where it lies deleted; remembers
  // where they went, so that undoing the edit that typed them deletes the new ones.
  void retype(const undo_action& gone, undo_action& record) {
    std::size_t chars_at = 0;
    for (std::size_t k = 0; k < gone.ranges.size(); ++k) {
      const auto& r = gone.ranges[k];
      const auto x = item_starting_at(r.start);
      KEEL_ASSERT(x != none);
      const auto first = insert_before(
          x, std::u32string_view(gone.chars).substr(chars_at, static_cast<std::size_t>(r.length)));
      chars_at += static_cast<std::size_t>(r.length);
      record.ranges.push_back({first, r.length});
      retyped[r.start.replica][r.start.clock] = {r.length, first};
    }
  }

  // Takes a step back; @returns the step that takes it forward again.
  void revert(const undo_step& step, undo_step& inverse) {
    for (std::size_t k = step.actions.size(); k-- > 0;) {
      const auto& a = step.actions[k];
      auto& done = inverse.actions.emplace_cleared();
      done.inserted = !a.inserted;
      if (a.inserted) {
        for (std::size_t r = 0; r < a.ranges.size(); ++r) erase_ids(a.ranges[r], done);
      } else {
        retype(a, done);
      }
    }
  }

  void record_deleted(undo_action& record, std::uint32_t x) const {
    const item& it = items[x];
    record.ranges.push_back({it.id, it.length});
    record.chars.append(chars, it.content, it.length);
  }

  // ---- integrating remote items (Yjs's YATA) --------------------------------------------------
  enum class outcome : std::uint8_t { placed, already, waiting };

  outcome integrate(incoming& in) {
    item& r = in.fields;
    const auto v = versions.find(r.id.replica);
    const std::uint64_t next = v == versions.end() ? 0 : v->second;
    if (r.id.clock + r.length <= next) return outcome::already;
    if (r.id.clock > next) return outcome::waiting;  // an earlier part of this replica's run is missing
    if (r.id.clock < next) {
      // Part seen before: keep what is new, left of it the last character already here.
      const auto seen = static_cast<std::uint32_t>(next - r.id.clock);
      r.id.clock = next;
      r.length -= seen;
      r.has_origin = true;
      r.origin = {r.id.replica, next - 1};
      if (!in.chars.empty()) in.chars.erase(0, seen);
    }
    if ((r.has_origin && !known(r.origin)) || (r.has_right && !known(r.right))) return outcome::waiting;

    std::uint32_t left = r.has_origin ? item_ending_at(r.origin) : none;
    const std::uint32_t right = r.has_right ? item_starting_at(r.right) : none;
    // The candidates: from after `left` (or the start) up to `right`.
    std::size_t b = 0, i = 0;
    std::uint32_t o = none;
    if (left != none) {
      std::tie(b, i) = where(left);
      o = next_of(b, i);
    } else if (!blocks.empty()) {
      o = blocks[0].items[0];
    }
    bool scan = false;
    if (left == none) {
      scan = right == none ? o != none : o != right;
    } else {
      scan = o != right;
    }
    if (scan) {
      std::unordered_set<std::uint32_t> conflicting, before_origin;
      while (o != none && o != right) {
        before_origin.insert(o);
        conflicting.insert(o);
        const item& other = items[o];
        if (same_origin(r.has_origin, r.origin, other.has_origin, other.origin)) {
          if (other.id.replica < r.id.replica) {
            left = o;
            conflicting.clear();
          } else if (same_origin(r.has_right, r.right, other.has_right, other.right)) {
            break;
          }
        } else if (other.has_origin) {
          const auto origin_item = find_id(other.origin).first;
          if (origin_item != none && before_origin.contains(origin_item)) {
            if (!conflicting.contains(origin_item)) {
              left = o;
              conflicting.clear();
            }
          } else {
            break;
          }
        } else {
          break;
        }
        o = next_of(b, i);
      }
    }
    r.content = none;
    if (!in.chars.empty()) {
      r.content = static_cast<std::uint32_t>(chars.size());
      chars.append(in.chars);
    }
    const auto x = add_item(r);
    if (r.deleted) note_deleted(r.id, r.length);
    if (left == none) {
      place(0, 0, x);
    } else {
      auto [lb, li] = where(left);
      place(lb, li + 1, x);
    }
    versions[r.id.replica] = r.id.clock + r.length;
    return outcome::placed;
  }

  // The replica whose character `in` waits for (its own, for a gap in its run).
  [[nodiscard]] replica_id waits_for(const incoming& in) const {
    const item& r = in.fields;
    const auto v = versions.find(r.id.replica);
    if ((v == versions.end() ? 0 : v->second) < r.id.clock) return r.id.replica;
    if (r.has_origin && !known(r.origin)) return r.origin.replica;
    return r.right.replica;
  }

  // Keeps an item until it can be placed; the same run sent twice waits once.
  void wait(incoming in) {
    auto& queue = waiting[in.fields.id.replica];
    const auto [at, fresh] = queue.try_emplace(in.fields.id.clock);
    if (fresh || at->second.fields.length < in.fields.length) at->second = std::move(in);
  }

  // Places what waits, as long as something can be. Each replica's items go in clock order;
  // when one waits for another replica's character, that replica's queue goes first (a stack,
  // as Yjs does it), so a delta with many replicas' interleaved runs is placed in one pass.
  // A replica is stuck when it waits for a character no queue holds; one that waits for a
  // replica already on the stack gives way and is tried again once something was placed.
  void integrate_pending() {
    std::unordered_set<replica_id> stuck;
    std::unordered_map<replica_id, std::uint64_t> gave_way_at;  // `placed` when it last gave way
    std::uint64_t placed = 0;
    std::vector<replica_id> starts;
    for (const auto& [replica, queue] : waiting) starts.push_back(replica);
    for (std::uint64_t before = placed + 1; before != placed;) {
      before = placed;
      for (const auto start : starts) {
        std::vector<replica_id> stack{start};
        while (!stack.empty()) {
          const auto current = stack.back();
          auto& queue = waiting[current];
          if (queue.empty() || stuck.contains(current)) {
            stack.pop_back();
            continue;
          }
          if (integrate(queue.begin()->second) != outcome::waiting) {
            queue.erase(queue.begin());
            ++placed;
            continue;
          }
          const auto needed = waits_for(queue.begin()->second);
          const auto other = waiting.find(needed);
          if (needed == current || other == waiting.end() || other->second.empty() ||
              stuck.contains(needed)) {
            stuck.insert(current);  // waits for what no delta so far brought
            stack.pop_back();
            continue;
          }
          const auto gave_way = gave_way_at.find(needed);
          const bool worth_trying = gave_way == gave_way_at.end() || gave_way->second < placed;
          if (worth_trying && std::find(stack.begin(), stack.end(), needed) == stack.end()) {
            stack.push_back(needed);
          } else {
            gave_way_at[current] = placed;
            stack.pop_back();
          }
        }
      }
    }
    std::erase_if(waiting, [](const auto& entry) { return entry.second.empty(); });
    // Deletions, merged first: every delta carries the sender's whole delete set.
    std::sort(pending_deletes.begin(), pending_deletes.end(), [](const range& a, const range& b) {
      return a.start.replica != b.start.replica ? a.start.replica < b.start.replica
                                                : a.start.clock < b.start.clock;
    });
    std::vector<range> merged;
    for (const auto& d : pending_deletes) {
      if (!merged.empty() && merged.back().start.replica == d.start.replica &&
          d.start.clock <= merged.back().start.clock + merged.back().length) {
        merged.back().length =
            std::max(merged.back().length, d.start.clock + d.length - merged.back().start.clock);
      } else {
        merged.push_back(d);
      }
    }
    std::vector<range> deletes;
    for (auto& d : merged) {
      const auto done = delete_known(d);
      if (done < d.length) deletes.push_back({{d.start.replica, d.start.clock + done}, d.length - done});
    }
    pending_deletes = std::move(deletes);
  }
};

text::text(replica_id self) : state_(std::make_unique<state>(self)) {}
text::text(text&&) noexcept = default;
text& text::operator=(text&&) noexcept = default;
text::~text() = default;

result<void> text::insert(std::size_t pos, std::string_view utf8) {
  auto& s = *state_;
  if (pos > s.visible) return errc::out_of_range;
  std::u32string added;
  if (!decode_utf8(utf8, added)) return errc::invalid_utf8;
  if (added.empty()) return {};
  if (s.chars.size() + added.size() >= none) return errc::out_of_range;
  const char_id first{s.self, s.versions[s.self]};
  s.insert_chars(pos, added);
  if (auto* typed = s.recording(true)) {
    // Typing on within a group: its one range grows.
    if (!typed->ranges.empty() &&
        typed->ranges.back().start.clock + typed->ranges.back().length == first.clock &&
        typed->ranges.back().start.replica == first.replica) {
      typed->ranges.back().length += added.size();
    } else {
      typed->ranges.push_back({first, added.size()});
    }
  }
  return {};
}

result<void> text::erase(std::size_t pos, std::size_t count) {
  auto& s = *state_;
  if (pos > s.visible || count > s.visible - pos) return errc::out_of_range;
  if (count == 0) return {};
  s.erase_chars(pos, count, s.recording(false));
  return {};
}

bool text::undo() {
  auto& s = *state_;
  if (s.undo_steps.empty()) return false;
  s.revert(s.undo_steps.back(), s.redo_steps.push());
  s.undo_steps.pop_back();
  s.group_open = false;
  return true;
}

bool text::redo() {
  auto& s = *state_;
  if (s.redo_steps.empty()) return false;
  s.revert(s.redo_steps.back(), s.undo_steps.push());
  s.redo_steps.pop_back();
  s.group_open = false;
  return true;
}

bool text::can_undo() const noexcept {
  return !state_->undo_steps.empty();
}

bool text::can_redo() const noexcept {
  return !state_->redo_steps.empty();
}

void text::begin_undo_group() {
  auto& s = *state_;
  if (s.group_depth++ == 0) s.group_open = false;
}

void text::end_undo_group() {
  auto& s = *state_;
  KEEL_ASSERT(s.group_depth > 0);
  if (--s.group_depth == 0) s.group_open = false;
}

void text::set_undo_limit(std::size_t steps) {
  auto& s = *state_;
  s.undo_limit = steps;
  s.undo_steps.set_limit(steps);
  s.redo_steps.set_limit(steps);
}

std::string text::str() const {
  std::string out;
  out.reserve(state_->visible);
  for (const auto& blk : state_->blocks) {
    for (const auto x : blk.items) {
      const auto& it = state_->items[x];
      if (it.deleted) continue;
      for (std::uint32_t k = 0; k < it.length; ++k) append_utf8(out, state_->chars[it.content + k]);
    }
  }
  return out;
}

std::size_t text::size() const noexcept {
  return static_cast<std::size_t>(state_->visible);
}

replica_id text::self() const noexcept {
  return state_->self;
}

version_vector text::version() const {
  version_vector out;
  for (const auto& [replica, next] : state_->versions) {
    if (next > 0) out.emplace(replica, next);
  }
  return out;
}

std::size_t text::pending() const noexcept {
  std::size_t n = 0;
  for (const auto& [replica, queue] : state_->waiting) {
    for (const auto& [clock, in] : queue) n += in.fields.length;
  }
  return n;
}

std::size_t text::item_count() const noexcept {
  return state_->items.size();
}

bytes text::delta_since(const version_vector& seen) const {
  const auto& s = *state_;
  bytes out(magic.begin(), magic.end());
  out.push_back(format_version);
  // Items per replica in clock order, the part each replica at `seen` lacks.
  std::vector<std::pair<replica_id, const std::map<std::uint64_t, std::uint32_t>*>> replicas;
  for (const auto& [replica, runs] : s.index) replicas.emplace_back(replica, &runs);
  std::sort(replicas.begin(), replicas.end());
  bytes body;
  std::uint64_t count = 0;
  bool first = true;
  char_id previous_end{};
  for (const auto& [replica, runs] : replicas) {
    const auto known = seen.find(replica);
    const std::uint64_t from = known == seen.end() ? 0 : known->second;
    // From the item holding `from` on.
    auto start = runs->upper_bound(from);
    if (start != runs->begin()) --start;
    for (auto run = start; run != runs->end(); ++run) {
      item it = s.items[run->second];
      if (it.id.clock + it.length <= from) continue;
      if (it.id.clock < from) {
        const auto skip = static_cast<std::uint32_t>(from - it.id.clock);
        it.id.clock = from;
        it.length -= skip;
        it.has_origin = true;
        it.origin = {replica, from - 1};
        if (it.content != none) it.content += skip;
      }
      std::uint8_t flags = 0;
      if (it.has_origin) flags |= has_origin;
      if (it.has_right) flags |= has_right;
      if (it.deleted) flags |= is_deleted;
      const bool same = !first && previous_end.replica == replica;
      if (same) flags |= same_replica;
      if (same && previous_end.clock == it.id.clock) flags |= continues_clock;
      if (it.has_origin && it.origin.replica == replica && it.id.clock > 0 &&
          it.origin.clock == it.id.clock - 1)
        flags |= origin_is_previous;
      body.push_back(flags);
      if (!same) append_varint(body, replica);
      if ((flags & continues_clock) == 0) append_varint(body, it.id.clock);
      append_varint(body, it.length);
      if (it.has_origin && (flags & origin_is_previous) == 0) {
        append_varint(body, it.origin.replica);
        append_varint(body, it.origin.clock);
      }
      if (it.has_right) {
        append_varint(body, it.right.replica);
        append_varint(body, it.right.clock);
      }
      if (!it.deleted) {
        std::string utf8;
        for (std::uint32_t k = 0; k < it.length; ++k) append_utf8(utf8, s.chars[it.content + k]);
        append_varint(body, utf8.size());
        body.insert(body.end(), utf8.begin(), utf8.end());
      }
      previous_end = {replica, it.id.clock + it.length};
      first = false;
      ++count;
    }
  }
  append_varint(out, count);
  out.insert(out.end(), body.begin(), body.end());
  std::uint64_t ranges = 0;
  for (const auto& [replica, deleted] : s.deleted) ranges += deleted.size();
  append_varint(out, ranges);
  for (const auto& [replica, deleted] : s.deleted) {
    for (const auto& [clock, length] : deleted) {
      append_varint(out, replica);
      append_varint(out, clock);
      append_varint(out, length);
    }
  }
  return out;
}

result<void> text::apply(bytes_view delta) {
  // Decoded whole before anything is applied: a bad delta changes nothing.
  byte_reader in(delta);
  auto start = in.take(magic.size());
  if (!start || !std::equal(start->begin(), start->end(), magic.begin())) return errc::malformed_delta;
  auto version = in.u8();
  if (!version || *version != format_version) return errc::malformed_delta;
  auto count = in.varint();
  if (!count) return errc::malformed_delta;
  std::vector<incoming> arrived;
  arrived.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*count, delta.size())));
  char_id previous_end{};
  bool first = true;
  for (std::uint64_t k = 0; k < *count; ++k) {
    auto flags = in.u8();
    if (!flags || (*flags & ~known_flags) != 0) return errc::malformed_delta;
    if (first && (*flags & same_replica) != 0) return errc::malformed_delta;
    incoming one;
    item& it = one.fields;
    if ((*flags & same_replica) != 0) {
      it.id.replica = previous_end.replica;
    } else {
      auto replica = in.varint();
      if (!replica) return errc::malformed_delta;
      it.id.replica = *replica;
      if ((*flags & continues_clock) != 0) return errc::malformed_delta;
    }
    if ((*flags & continues_clock) != 0) {
      it.id.clock = previous_end.clock;
    } else {
      auto clock = in.varint();
      if (!clock) return errc::malformed_delta;
      it.id.clock = *clock;
    }
    auto length = in.varint();
    if (!length || *length == 0 || *length > std::numeric_limits<std::uint32_t>::max() / 2 ||
        it.id.clock > std::numeric_limits<std::uint64_t>::max() - *length)
      return errc::malformed_delta;
    it.length = static_cast<std::uint32_t>(*length);
    it.has_origin = (*flags & has_origin) != 0;
    it.has_right = (*flags & has_right) != 0;
    it.deleted = (*flags & is_deleted) != 0;
    if ((*flags & origin_is_previous) != 0) {
      if (!it.has_origin || it.id.clock == 0) return errc::malformed_delta;
      it.origin = {it.id.replica, it.id.clock - 1};
    } else if (it.has_origin) {
      auto replica = in.varint();
      auto clock = in.varint();
      if (!replica || !clock) return errc::malformed_delta;
      it.origin = {*replica, *clock};
    }
    if (it.has_right) {
      auto replica = in.varint();
      auto clock = in.varint();
      if (!replica || !clock) return errc::malformed_delta;
      it.right = {*replica, *clock};
    }
    // An item cannot sit next to itself.
    if ((it.has_origin && it.origin.replica == it.id.replica && it.origin.clock >= it.id.clock &&
         it.origin.clock < it.id.clock + it.length) ||
        (it.has_right && it.right.replica == it.id.replica && it.right.clock >= it.id.clock &&
         it.right.clock < it.id.clock + it.length))
      return errc::malformed_delta;
    if (!it.deleted) {
      auto size = in.varint();
      if (!size) return errc::malformed_delta;
      auto raw = in.take(*size);
      if (!raw) return errc::malformed_delta;
      one.chars.reserve(std::min<std::size_t>(it.length, raw->size()));  // a claimed length is not trusted
      if (!decode_utf8(as_chars(*raw), one.chars) || one.chars.size() != it.length)
        return errc::malformed_delta;
    }
    previous_end = {it.id.replica, it.id.clock + it.length};
    first = false;
    arrived.push_back(std::move(one));
  }
  auto deletes = in.varint();
  if (!deletes) return errc::malformed_delta;
  std::vector<range> removed;
  for (std::uint64_t k = 0; k < *deletes; ++k) {
    auto replica = in.varint();
    auto clock = in.varint();
    auto length = in.varint();
    if (!replica || !clock || !length || *length == 0 ||
        *clock > std::numeric_limits<std::uint64_t>::max() - *length)
      return errc::malformed_delta;
    removed.push_back({{*replica, *clock}, *length});
  }
  if (!in.empty()) return errc::malformed_delta;

  auto& s = *state_;
  for (auto& one : arrived) s.wait(std::move(one));
  for (const auto& d : removed) s.pending_deletes.push_back(d);
  s.integrate_pending();
  return {};
}

// ---- the saved document (format KCRD 1, docs/crdt.md) ------------------------------------------
// Items in document order, so that loading places none of them: the blocks are built as they
// come. Neighbours in the document predict most origins, so those cost two flag bits.
namespace {

constexpr std::array<std::uint8_t, 4> document_magic = {'K', 'C', 'R', 'D'};
constexpr std::uint8_t document_version = 1;
constexpr std::uint8_t doc_deleted = 1U << 0U;
constexpr std::uint8_t doc_same_replica = 1U << 1U;  // the replica of the item before it
constexpr unsigned doc_origin_shift = 2;             // bits 2-3: an origin_mode
constexpr unsigned doc_right_shift = 4;              // bits 4-5: an origin_mode
constexpr std::uint8_t doc_known_flags = 0x3F;
constexpr std::size_t checksum_size = 8;

// How an item's origin (or right origin) is written.
enum origin_mode : std::uint8_t {
  no_origin = 0,
  neighbour = 1,     // origin: the last character of the item before; right: the first of the one after
  own_previous = 2,  // origin only: its own replica's previous character
  written = 3,       // a replica index, then the clock as a zigzag difference from the item's own
};

std::uint64_t clock_difference(std::uint64_t clock, std::uint64_t from) {
  return zigzag_encode(static_cast<std::int64_t>(clock - from));
}

}  // namespace

bytes text::save() const {
  const auto& s = *state_;
  bytes out(document_magic.begin(), document_magic.end());
  out.push_back(document_version);
  std::vector<replica_id> replicas;
  for (const auto& [replica, next] : s.versions) {
    if (next > 0) replicas.push_back(replica);
  }
  append_varint(out, replicas.size());
  for (const auto r : replicas) append_varint(out, r);
  const auto replica_index = [&](replica_id r) {
    return static_cast<std::uint64_t>(std::lower_bound(replicas.begin(), replicas.end(), r) -
                                      replicas.begin());
  };

  // Neighbours that a split made two (same run, same state, same right origin, characters one
  // after the other) are saved as one.
  std::vector<item> runs;
  runs.reserve(s.items.size());
  for (const auto& blk : s.blocks) {
    for (const auto x : blk.items) {
      const item& it = s.items[x];
      if (!runs.empty()) {
        item& last = runs.back();
        if (last.id.replica == it.id.replica && last.id.clock + last.length == it.id.clock &&
            last.deleted == it.deleted && (it.deleted || last.content + last.length == it.content) &&
            it.has_origin && it.origin.replica == it.id.replica && it.origin.clock + 1 == it.id.clock &&
            same_origin(last.has_right, last.right, it.has_right, it.right)) {
          last.length += it.length;
          continue;
        }
      }
      runs.push_back(it);
    }
  }
  std::string text_column;
  text_column.reserve(s.visible);
  append_varint(out, runs.size());
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const item& it = runs[k];
    const item* before = k > 0 ? &runs[k - 1] : nullptr;
    const item* after = k + 1 < runs.size() ? &runs[k + 1] : nullptr;
    origin_mode origin = no_origin, right = no_origin;
    if (it.has_origin) {
      if (before != nullptr &&
          it.origin == char_id{before->id.replica, before->id.clock + before->length - 1}) {
        origin = neighbour;
      } else if (it.origin.replica == it.id.replica && it.origin.clock + 1 == it.id.clock) {
        origin = own_previous;
      } else {
        origin = written;
      }
    }
    if (it.has_right) right = after != nullptr && it.right == after->id ? neighbour : written;
    const bool same = before != nullptr && before->id.replica == it.id.replica;
    const unsigned bits = (it.deleted ? unsigned{doc_deleted} : 0U) |
                          (same ? unsigned{doc_same_replica} : 0U) | (unsigned{origin} << doc_origin_shift) |
                          (unsigned{right} << doc_right_shift);
    out.push_back(static_cast<std::uint8_t>(bits));
    if (!same) append_varint(out, replica_index(it.id.replica));
    append_varint(out, it.id.clock);
    append_varint(out, it.length);
    if (origin == written) {
      append_varint(out, replica_index(it.origin.replica));
      append_varint(out, clock_difference(it.origin.clock, it.id.clock));
    }
    if (right == written) {
      append_varint(out, replica_index(it.right.replica));
      append_varint(out, clock_difference(it.right.clock, it.id.clock));
    }
    if (!it.deleted) {
      for (std::uint32_t c = 0; c < it.length; ++c) append_utf8(text_column, s.chars[it.content + c]);
    }
  }
  append_varint(out, text_column.size());
  out.insert(out.end(), text_column.begin(), text_column.end());
  const auto sum = xxh3_64(out);
  for (std::size_t b = 0; b < checksum_size; ++b) out.push_back(static_cast<std::uint8_t>(sum >> (8 * b)));
  return out;
}

result<text> text::load(bytes_view saved, replica_id self) {
  text t(self);
  auto& s = *t.state_;
  if (saved.size() >= magic.size() && std::equal(magic.begin(), magic.end(), saved.begin())) {
    // A delta since nothing is a document too.
    if (auto applied = t.apply(saved); !applied) return applied.error();
    // A whole document refers only to itself: anything left waiting means it is not one.
    if (!s.waiting.empty() || !s.pending_deletes.empty()) return errc::malformed_delta;
    return t;
  }
  if (saved.size() < document_magic.size() + 1 + checksum_size ||
      !std::equal(document_magic.begin(), document_magic.end(), saved.begin()) ||
      saved[document_magic.size()] != document_version)
    return errc::malformed_delta;
  const auto body = saved.first(saved.size() - checksum_size);
  std::uint64_t sum = 0;
  for (std::size_t b = 0; b < checksum_size; ++b)
    sum |= static_cast<std::uint64_t>(saved[body.size() + b]) << (8 * b);
  if (sum != xxh3_64(body)) return errc::malformed_delta;

  byte_reader in(body.subspan(document_magic.size() + 1));
  auto replica_count = in.varint();
  if (!replica_count || *replica_count > body.size()) return errc::malformed_delta;
  std::vector<replica_id> replicas;
  for (std::uint64_t k = 0; k < *replica_count; ++k) {
    auto r = in.varint();
    if (!r || (!replicas.empty() && *r <= replicas.back())) return errc::malformed_delta;
    replicas.push_back(*r);
  }
  const auto replica_at = [&](std::uint64_t index) -> result<replica_id> {
    if (index >= replicas.size()) return errc::malformed_delta;
    return replicas[static_cast<std::size_t>(index)];
  };
  const auto read_origin = [&](const item& it, char_id& origin) -> result<void> {
    auto index = in.varint();
    auto difference = in.varint();
    if (!index || !difference) return errc::malformed_delta;
    auto replica = replica_at(*index);
    if (!replica) return replica.error();
    origin = {*replica, it.id.clock + static_cast<std::uint64_t>(zigzag_decode(*difference))};
    return {};
  };
  auto count = in.varint();
  if (!count || *count > body.size()) return errc::malformed_delta;
  s.items.reserve(static_cast<std::size_t>(*count));
  std::uint64_t live = 0;
  bool right_is_next = false;
  for (std::uint64_t k = 0; k < *count; ++k) {
    auto flags = in.u8();
    if (!flags || (*flags & ~doc_known_flags) != 0) return errc::malformed_delta;
    const auto origin = static_cast<origin_mode>((*flags >> doc_origin_shift) & 3U);
    const auto right = static_cast<origin_mode>((*flags >> doc_right_shift) & 3U);
    item it;
    it.deleted = (*flags & doc_deleted) != 0;
    if ((*flags & doc_same_replica) != 0) {
      if (k == 0) return errc::malformed_delta;
      it.id.replica = s.items.back().id.replica;
    } else {
      auto index = in.varint();
      if (!index) return errc::malformed_delta;
      auto replica = replica_at(*index);
      if (!replica) return replica.error();
      it.id.replica = *replica;
    }
    auto clock = in.varint();
    auto length = in.varint();
    if (!clock || !length || *length == 0 || *length > std::numeric_limits<std::uint32_t>::max() / 2 ||
        *clock > std::numeric_limits<std::uint64_t>::max() - *length)
      return errc::malformed_delta;
    it.id.clock = *clock;
    it.length = static_cast<std::uint32_t>(*length);
    it.has_origin = origin != no_origin;
    if (origin == neighbour) {
      if (k == 0) return errc::malformed_delta;
      const auto& before = s.items.back();
      it.origin = {before.id.replica, before.id.clock + before.length - 1};
    } else if (origin == own_previous) {
      if (it.id.clock == 0) return errc::malformed_delta;
      it.origin = {it.id.replica, it.id.clock - 1};
    } else if (origin == written) {
      if (auto read = read_origin(it, it.origin); !read) return read.error();
    }
    it.has_right = right != no_origin;
    if (right == own_previous) return errc::malformed_delta;
    if (right == written) {
      if (auto read = read_origin(it, it.right); !read) return read.error();
    }
    if (!it.deleted) live += it.length;
    // The item before learns its right origin now, if it was this one.
    if (right_is_next) s.items.back().right = it.id;
    right_is_next = right == neighbour;
    s.items.push_back(it);
  }
  if (right_is_next) return errc::malformed_delta;  // a right neighbour after the last item
  auto text_size = in.varint();
  if (!text_size) return errc::malformed_delta;
  auto text_bytes = in.take(*text_size);
  if (!text_bytes || !in.empty()) return errc::malformed_delta;
  s.chars.reserve(std::min<std::size_t>(static_cast<std::size_t>(live), text_bytes->size()));
  if (!decode_utf8(as_chars(*text_bytes), s.chars) || s.chars.size() != live || live >= none)
    return errc::malformed_delta;

  // Contents, blocks, and the index; every id once, every replica's clocks from 0 without gaps.
  std::uint32_t content = 0;
  std::vector<std::pair<char_id, std::uint32_t>> by_id;
  by_id.reserve(s.items.size());
  for (std::uint32_t x = 0; x < s.items.size(); ++x) {
    auto& it = s.items[x];
    if (!it.deleted) it.content = content, content += it.length;
    if (x % block_items == 0) s.blocks.push_back(block{{}, 0, static_cast<std::uint32_t>(s.blocks.size())});
    auto& blk = s.blocks.back();
    blk.items.push_back(x);
    it.block = blk.id;
    if (!it.deleted) blk.visible += it.length;
    by_id.emplace_back(it.id, x);
  }
  s.visible = live;
  s.block_at.resize(s.blocks.size());
  for (std::uint32_t b = 0; b < s.blocks.size(); ++b) s.block_at[b] = b;
  std::sort(by_id.begin(), by_id.end(), [](const auto& a, const auto& b) {
    return a.first.replica != b.first.replica ? a.first.replica < b.first.replica
                                              : a.first.clock < b.first.clock;
  });
  for (const auto& [id, x] : by_id) {
    auto& next = s.versions[id.replica];
    if (id.clock != next) return errc::malformed_delta;  // a gap, or an id twice
    next += s.items[x].length;
    auto& runs = s.index[id.replica];
    runs.emplace_hint(runs.end(), id.clock, x);
    if (s.items[x].deleted) s.note_deleted(id, s.items[x].length);
  }
  if (s.versions.size() != replicas.size()) return errc::malformed_delta;  // a replica with no item
  for (const auto& it : s.items) {
    const auto inside = [&](const char_id& id) {
      return id.replica == it.id.replica && id.clock >= it.id.clock && id.clock < it.id.clock + it.length;
    };
    if ((it.has_origin && (!s.known(it.origin) || inside(it.origin))) ||
        (it.has_right && (!s.known(it.right) || inside(it.right))))
      return errc::malformed_delta;
  }
  return t;
}

result<cursor> text::cursor_at(std::size_t pos) const {
  auto& s = *state_;
  if (pos > s.visible) return errc::out_of_range;
  if (pos == s.visible) return cursor{};
  const auto at = s.find_visible(pos);
  const auto& it = s.items[s.blocks[at.b].items[at.i]];
  return cursor{char_id{it.id.replica, it.id.clock + at.offset}};
}

std::size_t text::position_of(const cursor& c) const {
  auto& s = *state_;
  if (!c.before || s.find_id(*c.before).first == none) return s.visible;
  return static_cast<std::size_t>(s.visible_before(*c.before));
}

}  // namespace keel::crdt
