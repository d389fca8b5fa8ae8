#pragma once
/// @file keel/crdt/text.hpp
/// @brief A text CRDT: replicas edit locally at once, exchange deltas since each other's
/// version vectors in any order, any number of times, and converge to the same text.
///
/// Concurrent inserts are ordered as Yjs orders them (YATA, with Yjs's tie-break on the replica
/// id), so a keel text and a Yjs Y.Text that saw the same edits read the same. Characters keep
/// their identity (replica, clock) for life: deletion marks them, so a position held as an id
/// (a cursor) survives concurrent edits. Runs of characters typed one after another by one
/// replica are one item, so a document costs per run, not per character. Not thread-safe: one
/// thread at a time, reads included (a read moves the position cache).
///
/// @code
/// keel::crdt::text alice(1), bob(2);
/// alice.insert(0, "hello").value();
/// bob.apply(alice.delta_since(bob.version())).value();
/// bob.insert(5, " world").value();
/// alice.apply(bob.delta_since(alice.version())).value();
/// // alice.str() == bob.str() == "hello world"
/// @endcode
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/error.hpp>
#include <keel/crdt/version.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::crdt {

/// One character's identity: the replica that inserted it and that replica's counter, which
/// counts characters (the n-th character a replica ever inserted has clock n - 1).
struct char_id {
  replica_id replica = 0;
  std::uint64_t clock = 0;
  friend bool operator==(const char_id&, const char_id&) = default;
};

/// A position that moves with the text: the character it sits before (or the end).
struct cursor {
  std::optional<char_id> before;  ///< empty: at the end of the text
};

class text {
 public:
  /// An empty text edited as `self`.
  explicit text(replica_id self);
  text(text&&) noexcept;
  text& operator=(text&&) noexcept;
  ~text();

  /// Inserts UTF-8 `utf8` before the `pos`-th character (counted in code points). @returns
  /// errc::out_of_range past the end, errc::invalid_utf8; nothing changes then.
  [[nodiscard]] result<void> insert(std::size_t pos, std::string_view utf8);
  /// Deletes `count` characters from `pos`. @returns errc::out_of_range if they are not all there.
  [[nodiscard]] result<void> erase(std::size_t pos, std::size_t count);

  /// Takes back this replica's last edit not taken back yet (an insert or erase call, or the
  /// calls of an undo group): characters it typed are deleted, characters it deleted are typed
  /// again where they were. Other replicas' edits stay; the undo is itself an edit, sent in the
  /// next deltas. @returns false when there is nothing to undo.
  bool undo();
  /// Brings back the last edit undo() took back, unless this replica edited since.
  bool redo();
  [[nodiscard]] bool can_undo() const noexcept;
  [[nodiscard]] bool can_redo() const noexcept;
  /// Edits between these are one undo step (groups nest; the outermost counts).
  void begin_undo_group();
  void end_undo_group();
  /// How many steps undo() can go back (1,000 by default; the oldest go first). 0: none kept.
  void set_undo_limit(std::size_t steps);

  /// The text, UTF-8.
  [[nodiscard]] std::string str() const;
  /// Characters (code points) in the text.
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] replica_id self() const noexcept;

  [[nodiscard]] version_vector version() const;
  /// The changes this replica has that a replica at `seen` lacks: the characters inserted since,
  /// and every deletion (docs/crdt.md gives the encoding).
  [[nodiscard]] bytes delta_since(const version_vector& seen) const;
  /// Applies another replica's delta: commutative, associative and idempotent. A delta whose
  /// characters refer to ones this replica has not seen waits inside until they come (a later
  /// delta), and counts in pending(). @returns errc::malformed_delta (nothing applied then).
  [[nodiscard]] result<void> apply(bytes_view delta);
  /// Characters received that wait for ones not yet seen.
  [[nodiscard]] std::size_t pending() const noexcept;

  /// The whole document (a delta since nothing), and a text loaded from one, edited as `self`.
  [[nodiscard]] bytes save() const;
  [[nodiscard]] static result<text> load(bytes_view saved, replica_id self);

  /// A cursor before the `pos`-th character (the end when pos == size()), and where it is now.
  [[nodiscard]] result<cursor> cursor_at(std::size_t pos) const;
  [[nodiscard]] std::size_t position_of(const cursor& c) const;

  /// Items (runs of characters kept as one) in the document, deleted ones included.
  [[nodiscard]] std::size_t item_count() const noexcept;

  struct state;

 private:
  std::unique_ptr<state> state_;
};

}  // namespace keel::crdt
