// Yjs's update format v1 without a document. An update is decoded into light structs that
// point into its bytes (content is never copied until written), and merge, state vector and
// diff walk those exactly as Yjs's differential-update functions walk theirs, so that the bytes
// written are the ones Yjs writes. What Yjs's format holds:
//   update   = varuint groups, group*, delete set
//   group    = varuint structs, varuint client, varuint clock, struct*
//   struct   = info byte: 0 gc (varuint length) | 10 skip (varuint length) | item
//   item     = info (content ref in bits 0-4; 0x80 origin, 0x40 right origin, 0x20 parent key),
//              [origin id], [right origin id], [parent (only with neither): varuint 1 + root
//              name | varuint 0 + id], [parent key (only with neither)], content
//   delete set = varuint clients, (varuint client, varuint ranges, (varuint clock, varuint length)*)*
// Strings are lib0's: a varuint byte length, then UTF-8.
#include <keel/core/assert.hpp>
#include <keel/core/utf8.hpp>
#include <keel/core/varint.hpp>
#include <keel/crdt/yjs.hpp>

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string_view>

namespace keel::crdt::yjs {
namespace {

// Yjs's numbers are JavaScript numbers: clocks, clients and lengths stay below 2^53.
constexpr std::uint64_t max_safe = (std::uint64_t{1} << 53U) - 1;
constexpr std::uint8_t info_origin = 0x80;
constexpr std::uint8_t info_right = 0x40;
constexpr std::uint8_t info_key = 0x20;
constexpr std::uint8_t info_content = 0x1F;
constexpr std::uint8_t info_gc = 0;
constexpr std::uint8_t info_skip = 10;
// lib0's `any` tags.
constexpr std::uint8_t any_undefined = 127, any_null = 126, any_integer = 125, any_float32 = 124,
                       any_float64 = 123, any_bigint = 122, any_false = 121, any_true = 120, any_string = 119,
                       any_object = 118, any_array = 117, any_bytes = 116;
// Nesting of `any` values past this is refused (the decoder recurses).
constexpr int max_any_depth = 128;

// A struct as it lies in an update: everything but its content decoded, the content a view.
struct raw_block {
  id start;
  std::uint64_t length = 0;
  id origin;
  id right;
  id parent_item;
  std::string_view parent_root;
  std::string_view key;
  bytes_view body;            // the content as encoded
  std::uint64_t dropped = 0;  // units at the front of `body` sliced off (a merge's overlap)
  struct_kind kind = struct_kind::item;
  content_kind content = content_kind::deleted;
  enum class parent_form : std::uint8_t { none, root, item } parent = parent_form::none;
  bool has_origin = false;
  bool has_right = false;
  bool has_key = false;
  bool key_flag_only = false;  // the flag without a key (kept by decode and encode only)

  [[nodiscard]] std::uint64_t end() const noexcept { return start.clock + length; }
};

struct raw_update {
  std::vector<raw_block> blocks;
  std::vector<std::pair<client_id, std::vector<delete_range>>> deletes;  // as read, clients merged
};

class reader {
 public:
  explicit reader(bytes_view in) : in_(in) {}
  result<std::uint64_t> varuint() {
    auto v = decode_varint(in_, at_);
    if (!v || *v > max_safe) return errc::malformed_update;
    return *v;
  }
  result<std::uint8_t> u8() {
    if (at_ >= in_.size()) return errc::malformed_update;
    return in_[at_++];
  }
  result<bytes_view> take(std::uint64_t n) {
    if (n > in_.size() - at_) return errc::malformed_update;
    auto out = in_.subspan(at_, static_cast<std::size_t>(n));
    at_ += static_cast<std::size_t>(n);
    return out;
  }
  // A lib0 string: byte length, UTF-8.
  result<std::string_view> string() {
    auto size = varuint();
    if (!size) return size.error();
    auto raw = take(*size);
    if (!raw || !valid_utf8(as_chars(*raw))) return errc::malformed_update;
    return as_chars(*raw);
  }
  result<id> read_id() {
    auto client = varuint();
    auto clock = varuint();
    if (!client || !clock) return errc::malformed_update;
    return id{*client, *clock};
  }
  // Skips one lib0 `any`, checking it.
  result<void> skip_any(int depth = 0) {
    if (depth > max_any_depth) return errc::malformed_update;
    auto tag = u8();
    if (!tag) return tag.error();
    switch (*tag) {
      case any_undefined:
      case any_null:
      case any_false:
      case any_true:
        return {};
      case any_integer: {  // lib0's signed varint: 6 bits, then 7-bit groups
        auto first = u8();
        if (!first) return first.error();
        if ((*first & 0x80U) == 0) return {};
        for (int k = 0; k < 9; ++k) {
          auto next = u8();
          if (!next) return next.error();
          if ((*next & 0x80U) == 0) return {};
        }
        return errc::malformed_update;
      }
      case any_float32:
        return take(4).has_value() ? result<void>{} : errc::malformed_update;
      case any_float64:
      case any_bigint:
        return take(8).has_value() ? result<void>{} : errc::malformed_update;
      case any_string:
        return string().has_value() ? result<void>{} : errc::malformed_update;
      case any_object: {
        auto count = varuint();
        if (!count || *count > remaining()) return errc::malformed_update;
        for (std::uint64_t k = 0; k < *count; ++k) {
          if (!string()) return errc::malformed_update;
          if (auto v = skip_any(depth + 1); !v) return v;
        }
        return {};
      }
      case any_array: {
        auto count = varuint();
        if (!count || *count > remaining()) return errc::malformed_update;
        for (std::uint64_t k = 0; k < *count; ++k) {
          if (auto v = skip_any(depth + 1); !v) return v;
        }
        return {};
      }
      case any_bytes: {
        auto size = varuint();
        if (!size) return size.error();
        return take(*size).has_value() ? result<void>{} : errc::malformed_update;
      }
      default:
        return errc::malformed_update;
    }
  }
  [[nodiscard]] std::size_t position() const noexcept { return at_; }
  [[nodiscard]] std::size_t remaining() const noexcept { return in_.size() - at_; }
  [[nodiscard]] bytes_view from(std::size_t start) const { return in_.subspan(start, at_ - start); }
  [[nodiscard]] bool done() const noexcept { return at_ == in_.size(); }

 private:
  bytes_view in_;
  std::size_t at_ = 0;
};

// UTF-16 code units of valid UTF-8 (what Yjs counts a string in).
std::uint64_t utf16_length(std::string_view utf8) {
  std::uint64_t units = 0;
  for (const char c : utf8) {
    const auto b = static_cast<unsigned char>(c);
    if ((b & 0xC0U) != 0x80U) units += b >= 0xF0U ? 2 : 1;
  }
  return units;
}

// Reads an item's content; @returns its length in Yjs units.
result<std::uint64_t> read_content(reader& in, content_kind kind) {
  switch (kind) {
    case content_kind::deleted:
      return in.varuint();
    case content_kind::json: {
      auto count = in.varuint();
      if (!count || *count > in.remaining()) return errc::malformed_update;
      for (std::uint64_t k = 0; k < *count; ++k) {
        if (!in.string()) return errc::malformed_update;
      }
      return *count;
    }
    case content_kind::binary: {
      auto size = in.varuint();
      if (!size || !in.take(*size)) return errc::malformed_update;
      return 1;
    }
    case content_kind::string: {
      auto s = in.string();
      if (!s) return s.error();
      return utf16_length(*s);
    }
    case content_kind::embed:
      return in.string().has_value() ? result<std::uint64_t>{1} : errc::malformed_update;
    case content_kind::format:
      return in.string().has_value() && in.string().has_value() ? result<std::uint64_t>{1}
                                                                : errc::malformed_update;
    case content_kind::type: {
      auto ref = in.varuint();
      if (!ref || *ref > static_cast<std::uint64_t>(type_ref::xml_text)) return errc::malformed_update;
      if (*ref == static_cast<std::uint64_t>(type_ref::xml_element) ||
          *ref == static_cast<std::uint64_t>(type_ref::xml_hook)) {
        if (!in.string()) return errc::malformed_update;
      }
      return 1;
    }
    case content_kind::any: {
      auto count = in.varuint();
      if (!count || *count > in.remaining()) return errc::malformed_update;
      for (std::uint64_t k = 0; k < *count; ++k) {
        if (!in.skip_any()) return errc::malformed_update;
      }
      return *count;
    }
    case content_kind::doc:
      if (!in.string() || !in.skip_any()) return errc::malformed_update;
      return 1;
  }
  return errc::malformed_update;
}

result<void> read_block(reader& in, client_id client, std::uint64_t clock, raw_block& b) {
  auto info = in.u8();
  if (!info) return info.error();
  b.start = {client, clock};
  if (*info == info_skip || *info == info_gc) {
    b.kind = *info == info_skip ? struct_kind::skip : struct_kind::gc;
    auto length = in.varuint();
    if (!length || *length == 0) return errc::malformed_update;
    b.length = *length;
    return {};
  }
  const auto ref = *info & info_content;
  if (ref == info_gc || ref > static_cast<std::uint8_t>(content_kind::doc)) return errc::malformed_update;
  b.kind = struct_kind::item;
  b.content = static_cast<content_kind>(ref);
  b.has_origin = (*info & info_origin) != 0;
  b.has_right = (*info & info_right) != 0;
  if (b.has_origin) {
    auto o = in.read_id();
    if (!o) return o.error();
    b.origin = *o;
  }
  if (b.has_right) {
    auto r = in.read_id();
    if (!r) return r.error();
    b.right = *r;
  }
  // Yjs reads the parent, and the key, only for an item with neither origin (where its origins
  // are, the parent is theirs); the key flag of any other item is not kept.
  if (!b.has_origin && !b.has_right) {
    auto form = in.varuint();
    if (!form || *form > 1) return errc::malformed_update;
    if (*form == 1) {
      auto root = in.string();
      if (!root) return root.error();
      b.parent = raw_block::parent_form::root;
      b.parent_root = *root;
    } else {
      auto parent = in.read_id();
      if (!parent) return parent.error();
      b.parent = raw_block::parent_form::item;
      b.parent_item = *parent;
    }
    if ((*info & info_key) != 0) {
      auto key = in.string();
      if (!key) return key.error();
      b.has_key = true;
      b.key = *key;
    }
  } else {
    b.key_flag_only = (*info & info_key) != 0;
  }
  const auto body_start = in.position();
  auto length = read_content(in, b.content);
  if (!length || *length == 0) return errc::malformed_update;
  b.length = *length;
  b.body = in.from(body_start);
  return {};
}

result<void> read_delete_set(reader& in, std::vector<std::pair<client_id, std::vector<delete_range>>>& out) {
  auto clients = in.varuint();
  if (!clients || *clients > in.remaining()) return errc::malformed_update;
  for (std::uint64_t c = 0; c < *clients; ++c) {
    auto client = in.varuint();
    auto count = in.varuint();
    if (!client || !count || *count > in.remaining()) return errc::malformed_update;
    if (*count == 0) continue;  // Yjs keeps no entry for it
    auto entry = std::find_if(out.begin(), out.end(), [&](const auto& e) { return e.first == *client; });
    if (entry == out.end()) entry = out.insert(out.end(), {*client, {}});
    for (std::uint64_t k = 0; k < *count; ++k) {
      auto clock = in.varuint();
      auto length = in.varuint();
      if (!clock || !length || *clock + *length > max_safe) return errc::malformed_update;
      entry->second.push_back({*clock, *length});
    }
  }
  return {};
}

result<raw_update> read_update(bytes_view encoded) {
  reader in(encoded);
  raw_update u;
  auto groups = in.varuint();
  if (!groups || *groups > in.remaining()) return errc::malformed_update;
  for (std::uint64_t g = 0; g < *groups; ++g) {
    auto count = in.varuint();
    auto client = in.varuint();
    auto clock = in.varuint();
    if (!count || !client || !clock || *count > in.remaining()) return errc::malformed_update;
    std::uint64_t at = *clock;
    for (std::uint64_t k = 0; k < *count; ++k) {
      raw_block b;
      if (auto read = read_block(in, *client, at, b); !read) return read.error();
      if (b.length > max_safe - at) return errc::malformed_update;
      at += b.length;
      u.blocks.push_back(b);
    }
  }
  if (auto ds = read_delete_set(in, u.deletes); !ds) return ds.error();
  if (!in.done()) return errc::malformed_update;
  return u;
}

// ---- writing -----------------------------------------------------------------------------------
void put_varuint(bytes& out, std::uint64_t v) {
  append_varint(out, v);
}
void put_string(bytes& out, std::string_view s) {
  put_varuint(out, s.size());
  const auto raw = as_bytes(s);
  out.insert(out.end(), raw.begin(), raw.end());
}
void put_id(bytes& out, const id& i) {
  put_varuint(out, i.client);
  put_varuint(out, i.clock);
}

// A string's UTF-8 from UTF-16 unit `units` on. Cutting a character of two units (one of four
// UTF-8 bytes) leaves a lone surrogate, which Yjs writes as U+FFFD: so does this.
void put_string_from(bytes& out, std::string_view utf8, std::uint64_t units) {
  std::size_t at = 0;
  bool replaced = false;
  while (units > 0 && at < utf8.size()) {
    const auto length = utf8_sequence_length(utf8.substr(at));
    KEEL_ASSERT(length > 0);
    if (length == 4 && units == 1) {
      replaced = true;
      units = 0;
    } else {
      units -= length == 4 ? 2 : 1;
    }
    at += length;
  }
  const auto rest = utf8.substr(at);
  put_varuint(out, rest.size() + (replaced ? 3 : 0));
  if (replaced) out.insert(out.end(), {0xEF, 0xBF, 0xBD});
  const auto raw = as_bytes(rest);
  out.insert(out.end(), raw.begin(), raw.end());
}

// The byte length of the first `count` values of a json or any content (after its count).
std::size_t values_size(bytes_view values, content_kind kind, std::uint64_t count) {
  reader in(values);
  for (std::uint64_t k = 0; k < count; ++k) {
    const bool ok = kind == content_kind::json ? in.string().has_value() : in.skip_any().has_value();
    KEEL_ASSERT(ok);
  }
  return in.position();
}

void put_content(bytes& out, const raw_block& b, std::uint64_t offset) {
  const auto drop = b.dropped + offset;
  switch (b.content) {
    case content_kind::deleted:
      put_varuint(out, b.length - offset);
      return;
    case content_kind::json:
    case content_kind::any: {
      std::size_t count_size = 0;
      (void)decode_varint(b.body, count_size);
      const auto values = b.body.subspan(count_size);
      const auto skipped = values_size(values, b.content, drop);
      put_varuint(out, b.length - offset);
      out.insert(out.end(), values.begin() + static_cast<std::ptrdiff_t>(skipped), values.end());
      return;
    }
    case content_kind::string: {
      std::size_t at = 0;
      (void)decode_varint(b.body, at);
      put_string_from(out, as_chars(b.body.subspan(at)), drop);
      return;
    }
    default:
      KEEL_ASSERT(drop == 0);  // one unit: never cut
      out.insert(out.end(), b.body.begin(), b.body.end());
  }
}

// Writes `b` from unit `offset` on, as Yjs's struct write does.
void put_block(bytes& out, const raw_block& b, std::uint64_t offset, bool keep_key_flag = false) {
  if (b.kind != struct_kind::item) {
    out.push_back(b.kind == struct_kind::skip ? info_skip : info_gc);
    put_varuint(out, b.length - offset);
    return;
  }
  const bool has_origin = offset > 0 || b.has_origin;
  const id origin = offset > 0 ? id{b.start.client, b.start.clock + offset - 1} : b.origin;
  auto info = static_cast<std::uint8_t>(b.content);
  if (has_origin) info |= info_origin;
  if (b.has_right) info |= info_right;
  if (b.has_key || (keep_key_flag && b.key_flag_only)) info |= info_key;
  out.push_back(info);
  if (has_origin) put_id(out, origin);
  if (b.has_right) put_id(out, b.right);
  if (!has_origin && !b.has_right) {
    if (b.parent == raw_block::parent_form::root) {
      put_varuint(out, 1);
      put_string(out, b.parent_root);
    } else if (b.parent == raw_block::parent_form::item) {
      put_varuint(out, 0);
      put_id(out, b.parent_item);
    } else {
      throw std::invalid_argument(
          "keel::crdt::yjs: an item with neither origin needs a parent (a root name or an item)");
    }
    if (b.has_key) put_string(out, b.key);
  }
  put_content(out, b, offset);
}

// Yjs's lazy struct writer: structs of one client in a row share a header (count, client,
// first clock); the groups are counted once all are written.
class struct_writer {
 public:
  void write(const raw_block& b, std::uint64_t offset, bool keep_key_flag = false) {
    if (written_ > 0 && client_ != b.start.client) flush();
    if (written_ == 0) {
      client_ = b.start.client;
      put_varuint(current_, b.start.client);
      put_varuint(current_, b.start.clock + offset);
    }
    put_block(current_, b, offset, keep_key_flag);
    ++written_;
    next_clock_ = b.end();
  }
  // Ends the group (encode_update: the next struct does not follow on).
  void flush() {
    if (written_ == 0) return;
    groups_.emplace_back(written_, std::move(current_));
    current_.clear();
    written_ = 0;
  }
  [[nodiscard]] bool follows(const raw_block& b) const {
    return written_ > 0 && client_ == b.start.client && next_clock_ == b.start.clock;
  }
  bytes finish() {
    flush();
    std::size_t total = 10;
    for (const auto& g : groups_) total += g.second.size() + 10;
    bytes out;
    out.reserve(total);
    put_varuint(out, groups_.size());
    for (const auto& [count, body] : groups_) {
      put_varuint(out, count);
      out.insert(out.end(), body.begin(), body.end());
    }
    return out;
  }

 private:
  std::vector<std::pair<std::uint64_t, bytes>> groups_;
  bytes current_;
  std::uint64_t written_ = 0;
  client_id client_ = 0;
  std::uint64_t next_clock_ = 0;
};

// Clients in descending order, each one's ranges as given (Yjs's writeDeleteSet).
void put_delete_set(bytes& out, std::vector<std::pair<client_id, std::vector<delete_range>>> ds) {
  std::stable_sort(ds.begin(), ds.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  put_varuint(out, ds.size());
  for (const auto& [client, ranges] : ds) {
    put_varuint(out, client);
    put_varuint(out, ranges.size());
    for (const auto& r : ranges) {
      put_varuint(out, r.clock);
      put_varuint(out, r.length);
    }
  }
}

// The right part of `b` from unit `diff` on (Yjs's sliceStruct): an item's origin becomes the
// unit before it.
raw_block slice(const raw_block& b, std::uint64_t diff) {
  KEEL_ASSERT(diff > 0 && diff < b.length);
  raw_block right = b;
  right.start.clock += diff;
  right.length -= diff;
  if (b.kind == struct_kind::item) {
    right.has_origin = true;
    right.origin = {b.start.client, b.start.clock + diff - 1};
    right.dropped += diff;
  }
  return right;
}

// ---- merging -----------------------------------------------------------------------------------
struct cursor {
  const std::vector<raw_block>* blocks;
  std::size_t at = 0;
  [[nodiscard]] const raw_block* current() const { return at < blocks->size() ? &(*blocks)[at] : nullptr; }
  const raw_block* next() {
    ++at;
    return current();
  }
};

bytes merge(std::vector<raw_update>& updates) {
  // Skips are gaps: a merge reads past them.
  for (auto& u : updates)
    std::erase_if(u.blocks, [](const raw_block& b) { return b.kind == struct_kind::skip; });
  std::vector<cursor> storage;
  storage.reserve(updates.size());
  for (auto& u : updates) storage.push_back({&u.blocks});
  std::vector<cursor*> cursors;
  cursors.reserve(storage.size());
  for (auto& c : storage) cursors.push_back(&c);

  struct_writer writer;
  std::optional<raw_block> pending;  // the struct being written (Yjs's currWrite)
  while (true) {
    // Higher clients first; one client's structs by clock.
    std::erase_if(cursors, [](const cursor* c) { return c->current() == nullptr; });
    std::stable_sort(cursors.begin(), cursors.end(), [](const cursor* a, const cursor* b) {
      const auto& x = a->current()->start;
      const auto& y = b->current()->start;
      return x.client != y.client ? x.client > y.client : x.clock < y.clock;
    });
    if (cursors.empty()) break;
    cursor& source = *cursors.front();
    const client_id first_client = source.current()->start.client;
    if (pending) {
      const raw_block* curr = source.current();
      bool iterated = false;
      // Past what is written already (higher clients come first).
      while (curr != nullptr && curr->end() <= pending->end() &&
             curr->start.client >= pending->start.client) {
        curr = source.next();
        iterated = true;
      }
      if (curr == nullptr || curr->start.client != first_client ||
          (iterated && curr->start.clock > pending->end()))
        continue;
      if (first_client != pending->start.client) {
        writer.write(*pending, 0);
        pending = *curr;
        source.next();
      } else if (pending->end() < curr->start.clock) {
        if (pending->kind == struct_kind::skip) {
          pending->length = curr->end() - pending->start.clock;
        } else {
          writer.write(*pending, 0);
          raw_block gap;
          gap.kind = struct_kind::skip;
          gap.start = {first_client, pending->end()};
          gap.length = curr->start.clock - pending->end();
          pending = gap;
        }
      } else {
        const auto overlap = pending->end() - curr->start.clock;
        raw_block next = *curr;
        if (overlap > 0) {
          if (pending->kind == struct_kind::skip) {
            pending->length -= overlap;
          } else {
            next = slice(*curr, overlap);
          }
        }
        // Only runs of gc (or of skips) join: Yjs's item merge needs a document's neighbours.
        if (pending->kind != struct_kind::item && pending->kind == next.kind) {
          pending->length += next.length;
        } else {
          writer.write(*pending, 0);
          pending = next;
          source.next();
        }
      }
    } else {
      pending = *source.current();
      source.next();
    }
    for (const raw_block* next = source.current();
         next != nullptr && next->start.client == first_client && next->start.clock == pending->end() &&
         next->kind != struct_kind::skip;
         next = source.next()) {
      writer.write(*pending, 0);
      pending = *next;
    }
  }
  if (pending) writer.write(*pending, 0);
  bytes out = writer.finish();

  // Delete sets: per client, every range, sorted by clock, overlapping and touching ones joined.
  std::map<client_id, std::vector<delete_range>> all;
  for (const auto& u : updates) {
    for (const auto& [client, ranges] : u.deletes) {
      auto& into = all[client];
      into.insert(into.end(), ranges.begin(), ranges.end());
    }
  }
  std::vector<std::pair<client_id, std::vector<delete_range>>> merged;
  for (auto& [client, ranges] : all) {
    std::stable_sort(ranges.begin(), ranges.end(),
                     [](const auto& a, const auto& b) { return a.clock < b.clock; });
    std::vector<delete_range> joined{ranges.front()};
    for (std::size_t k = 1; k < ranges.size(); ++k) {
      auto& left = joined.back();
      if (left.clock + left.length >= ranges[k].clock) {
        left.length = std::max(left.length, ranges[k].clock + ranges[k].length - left.clock);
      } else {
        joined.push_back(ranges[k]);
      }
    }
    merged.emplace_back(client, std::move(joined));
  }
  put_delete_set(out, std::move(merged));
  return out;
}

}  // namespace

// ---- the public functions --------------------------------------------------------------------
result<update> decode_update(bytes_view encoded) {
  auto raw = read_update(encoded);
  if (!raw) return raw.error();
  update out;
  out.deletes = std::move(raw->deletes);
  out.blocks.reserve(raw->blocks.size());
  for (const auto& r : raw->blocks) {
    block b;
    b.kind = r.kind;
    b.start = r.start;
    b.length = r.length;
    if (r.has_origin) b.origin = r.origin;
    if (r.has_right) b.right_origin = r.right;
    if (r.parent == raw_block::parent_form::root) b.parent_root = std::string(r.parent_root);
    if (r.parent == raw_block::parent_form::item) b.parent_item = r.parent_item;
    if (r.has_key) b.parent_key = std::string(r.key);
    b.key_flag_without_key = r.key_flag_only;
    if (r.kind == struct_kind::item) {
      auto& c = b.content;
      c.kind = r.content;
      reader in(r.body);
      switch (r.content) {
        case content_kind::deleted:
          c.deleted_length = r.length;
          break;
        case content_kind::json:
        case content_kind::any: {
          (void)in.varuint();
          for (std::uint64_t k = 0; k < r.length; ++k) {
            const auto at = in.position();
            if (r.content == content_kind::json) {
              const auto json = as_bytes(in.string().value());
              c.values.emplace_back(json.begin(), json.end());
            } else {
              (void)in.skip_any();
              const auto v = in.from(at);
              c.values.emplace_back(v.begin(), v.end());
            }
          }
          break;
        }
        case content_kind::binary: {
          const auto size = in.varuint().value();
          const auto data = in.take(size).value();
          c.data.assign(data.begin(), data.end());
          break;
        }
        case content_kind::string:
        case content_kind::embed:
          c.text = std::string(in.string().value());
          break;
        case content_kind::format:
          c.key = std::string(in.string().value());
          c.text = std::string(in.string().value());
          break;
        case content_kind::type:
          c.type = static_cast<type_ref>(in.varuint().value());
          if (c.type == type_ref::xml_element || c.type == type_ref::xml_hook)
            c.key = std::string(in.string().value());
          break;
        case content_kind::doc: {
          c.key = std::string(in.string().value());
          const auto at = in.position();
          (void)in.skip_any();
          const auto opts = in.from(at);
          c.data.assign(opts.begin(), opts.end());
          break;
        }
      }
    }
    out.blocks.push_back(std::move(b));
  }
  return out;
}

bytes encode_update(const update& u) {
  struct_writer writer;
  bytes body;
  for (const auto& b : u.blocks) {
    raw_block r;
    r.kind = b.kind;
    r.start = b.start;
    r.length = b.length;
    if (b.kind == struct_kind::item) {
      r.has_origin = b.origin.has_value();
      r.has_right = b.right_origin.has_value();
      if (r.has_origin) r.origin = *b.origin;
      if (r.has_right) r.right = *b.right_origin;
      if (b.parent_root) r.parent = raw_block::parent_form::root, r.parent_root = *b.parent_root;
      if (b.parent_item) r.parent = raw_block::parent_form::item, r.parent_item = *b.parent_item;
      r.has_key = b.parent_key.has_value();
      if (r.has_key) r.key = *b.parent_key;
      r.key_flag_only = b.key_flag_without_key;
      const auto& c = b.content;
      r.content = c.kind;
      body.clear();
      switch (c.kind) {
        case content_kind::deleted:
          put_varuint(body, c.deleted_length);
          r.length = c.deleted_length;
          break;
        case content_kind::json:
        case content_kind::any:
          put_varuint(body, c.values.size());
          for (const auto& v : c.values) {
            if (c.kind == content_kind::json) {
              put_string(body, as_chars(v));
            } else {
              body.insert(body.end(), v.begin(), v.end());
            }
          }
          r.length = c.values.size();
          break;
        case content_kind::binary:
          put_varuint(body, c.data.size());
          body.insert(body.end(), c.data.begin(), c.data.end());
          r.length = 1;
          break;
        case content_kind::string:
          if (!valid_utf8(c.text))
            throw std::invalid_argument("keel::crdt::yjs: string content that is not UTF-8");
          put_string(body, c.text);
          r.length = utf16_length(c.text);
          break;
        case content_kind::embed:
          put_string(body, c.text);
          r.length = 1;
          break;
        case content_kind::format:
          put_string(body, c.key);
          put_string(body, c.text);
          r.length = 1;
          break;
        case content_kind::type:
          put_varuint(body, static_cast<std::uint64_t>(c.type));
          if (c.type == type_ref::xml_element || c.type == type_ref::xml_hook) put_string(body, c.key);
          r.length = 1;
          break;
        case content_kind::doc:
          put_string(body, c.key);
          body.insert(body.end(), c.data.begin(), c.data.end());
          r.length = 1;
          break;
      }
      r.body = body;
    }
    if (!writer.follows(r)) writer.flush();
    writer.write(r, 0, true);
  }
  bytes out = writer.finish();
  put_delete_set(out, u.deletes);
  return out;
}

result<bytes> merge_updates(std::span<const bytes_view> updates) {
  std::vector<raw_update> decoded;
  decoded.reserve(updates.size());
  for (const auto& u : updates) {
    auto raw = read_update(u);
    if (!raw) return raw.error();
    decoded.push_back(std::move(*raw));
  }
  if (updates.size() == 1) return bytes(updates[0].begin(), updates[0].end());
  return merge(decoded);
}

result<bytes> merge_updates(std::span<const bytes> updates) {
  std::vector<bytes_view> views(updates.begin(), updates.end());
  return merge_updates(std::span<const bytes_view>(views));
}

result<bytes> state_vector_from_update(bytes_view encoded) {
  auto u = read_update(encoded);
  if (!u) return u.error();
  // Yjs's walk: a client counts from clock 0 up to its first gap (a skip, or a later start).
  state_vector sv;
  if (!u->blocks.empty()) {
    const auto& first = u->blocks.front();
    client_id client = first.start.client;
    bool stopped = first.start.clock != 0;
    std::uint64_t clock = stopped ? 0 : first.end();
    for (const auto& b : u->blocks) {
      if (b.start.client != client) {
        if (clock != 0) sv.emplace_back(client, clock);
        client = b.start.client;
        clock = 0;
        stopped = b.start.clock != 0;
      }
      if (b.kind == struct_kind::skip) stopped = true;
      if (!stopped) clock = b.end();
    }
    if (clock != 0) sv.emplace_back(client, clock);
  }
  return encode_state_vector(sv);
}

result<bytes> diff_update(bytes_view encoded, bytes_view encoded_state) {
  auto seen_list = decode_state_vector(encoded_state);
  if (!seen_list) return seen_list.error();
  std::map<client_id, std::uint64_t> seen;
  for (const auto& [client, clock] : *seen_list) seen[client] = clock;  // the last one counts, as in Yjs
  auto u = read_update(encoded);
  if (!u) return u.error();
  struct_writer writer;
  const auto& blocks = u->blocks;
  for (std::size_t k = 0; k < blocks.size();) {
    const auto& curr = blocks[k];
    const auto client = curr.start.client;
    const auto found = seen.find(client);
    const std::uint64_t known = found == seen.end() ? 0 : found->second;
    if (curr.kind == struct_kind::skip) {
      ++k;
      continue;
    }
    if (curr.end() > known) {
      writer.write(curr, known > curr.start.clock ? known - curr.start.clock : 0);
      for (++k; k < blocks.size() && blocks[k].start.client == client; ++k) writer.write(blocks[k], 0);
    } else {
      while (k < blocks.size() && blocks[k].start.client == client && blocks[k].end() <= known) ++k;
    }
  }
  bytes out = writer.finish();
  put_delete_set(out, std::move(u->deletes));
  return out;
}

result<state_vector> decode_state_vector(bytes_view encoded) {
  reader in(encoded);
  auto count = in.varuint();
  if (!count || *count > in.remaining()) return errc::malformed_update;
  state_vector sv;
  sv.reserve(static_cast<std::size_t>(*count));
  for (std::uint64_t k = 0; k < *count; ++k) {
    auto client = in.varuint();
    auto clock = in.varuint();
    if (!client || !clock) return errc::malformed_update;
    sv.emplace_back(*client, *clock);
  }
  if (!in.done()) return errc::malformed_update;
  return sv;
}

bytes encode_state_vector(const state_vector& sv) {
  bytes out;
  put_varuint(out, sv.size());
  for (const auto& [client, clock] : sv) {
    put_varuint(out, client);
    put_varuint(out, clock);
  }
  return out;
}

}  // namespace keel::crdt::yjs
