#pragma once
/// @file keel/crdt/yjs.hpp
/// @brief Yjs's update format v1 as a pure codec — what Yjs calls differential updates: decode
/// and encode every struct and content kind, merge updates, the state vector of an update, and
/// an update's difference from a state vector, all without building a document.
///
/// The editor ecosystem (ProseMirror/Tiptap, CodeMirror, Monaco, Quill bindings) speaks Yjs; a
/// server holding its documents as updates merges what clients send and answers each client
/// with what it lacks. The results are byte for byte those of Yjs 13.6 (`Y.mergeUpdates`,
/// `Y.encodeStateVectorFromUpdate`, `Y.diffUpdate`) on the updates Yjs writes, and Yjs reads them
/// to the same documents (tests/crdt/yjs_test.cpp checks both against npm yjs).
///
/// @code
/// auto merged = keel::crdt::yjs::merge_updates({update_a, update_b}).value();
/// auto missing = keel::crdt::yjs::diff_update(merged, client_state_vector).value();
/// @endcode
///
/// Bad input — truncated, corrupt, not valid UTF-8 where Yjs keeps text, a content kind Yjs does
/// not have, values past 2^53 — is refused with errc::malformed_update, never half-used.
#include <keel/core/bytes.hpp>
#include <keel/core/result.hpp>
#include <keel/crdt/error.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace keel::crdt::yjs {

/// A Yjs client id (a document replica, random per session in Yjs).
using client_id = std::uint64_t;

/// One unit of a client's changes: its client and its clock (the n-th unit it made has clock n-1).
struct id {
  client_id client = 0;
  std::uint64_t clock = 0;
  friend bool operator==(const id&, const id&) = default;
};

/// What a struct of an update is.
enum class struct_kind : std::uint8_t {
  item,  ///< content placed in a type
  gc,    ///< a garbage-collected run: deleted, content and placement dropped
  skip,  ///< a gap in a merged update: changes of the client that it does not hold
};

/// An item's content; the numbers are Yjs's content references, written in the info byte.
enum class content_kind : std::uint8_t {
  deleted = 1,  ///< deleted content, its length only
  json = 2,     ///< values as JSON texts (old Y.Array content)
  binary = 3,   ///< a byte array (one unit)
  string = 4,   ///< text (one unit per UTF-16 code unit, as Yjs counts)
  embed = 5,    ///< an embedded JSON value in text (one unit)
  format = 6,   ///< a formatting mark in text: attribute and JSON value (one unit)
  type = 7,     ///< a nested shared type (one unit)
  any = 8,      ///< values in lib0's binary encoding (Y.Array, Y.Map entries)
  doc = 9,      ///< a subdocument: guid and options (one unit)
};

/// The kind of a nested type (content_kind::type), as Yjs numbers them.
enum class type_ref : std::uint8_t {
  array = 0,
  map = 1,
  text = 2,
  xml_element = 3,
  xml_fragment = 4,
  xml_hook = 5,
  xml_text = 6,
};

struct content {
  content_kind kind = content_kind::deleted;
  std::uint64_t deleted_length = 0;  ///< deleted
  std::string text;                  ///< string: UTF-8; embed: JSON; format: the value's JSON
  std::string key;  ///< format: the attribute; type: an XML element's or hook's name; doc: guid
  type_ref type = type_ref::array;  ///< type
  bytes data;                       ///< binary: the bytes; doc: its options (one lib0 `any`)
  std::vector<bytes> values;        ///< any: each value as lib0 encodes it; json: each value's JSON text
};

/// One struct (a run of one client's consecutive clocks).
struct block {
  struct_kind kind = struct_kind::item;
  id start;
  /// Units of clock it covers; for an item, what its content counts (see content_kind).
  std::uint64_t length = 0;
  // Items only:
  std::optional<id> origin;        ///< the unit left of it when it was inserted
  std::optional<id> right_origin;  ///< the unit right of it then
  /// Written only for an item with neither origin: the root type's name, or the item holding
  /// the type it is in.
  std::optional<std::string> parent_root;
  std::optional<id> parent_item;
  std::optional<std::string> parent_key;  ///< a map entry's key (Yjs's parentSub)
  /// Yjs sets the parent-key flag on a map entry's item that has an origin too, but writes the
  /// key only for one with neither: such an item reads with no parent_key and this set, so that
  /// it encodes to its own bytes. (Yjs's merge and diff drop the flag; so do keel's.)
  bool key_flag_without_key = false;
  yjs::content content;
};

/// Deleted ranges of one client: clock and length.
struct delete_range {
  std::uint64_t clock = 0;
  std::uint64_t length = 0;
  friend bool operator==(const delete_range&, const delete_range&) = default;
};

struct update {
  /// In the order written: groups of one client's consecutive structs.
  std::vector<block> blocks;
  /// Per client, in the order written.
  std::vector<std::pair<client_id, std::vector<delete_range>>> deletes;
};

/// A state vector: per client, the clock of its next change (what a document has seen).
using state_vector = std::vector<std::pair<client_id, std::uint64_t>>;

/// Decodes an update (format v1). @returns errc::malformed_update.
[[nodiscard]] result<update> decode_update(bytes_view encoded);
/// Encodes an update: consecutive blocks of one client with consecutive clocks share a header.
/// An item's length is taken from its content. Throws std::invalid_argument for an item that
/// Yjs could not place (neither origin nor parent) or a content that does not encode.
[[nodiscard]] bytes encode_update(const update& u);

/// Merges updates into one holding all their changes (overlaps written once, gaps as skips,
/// delete sets merged), as Y.mergeUpdates does. One update comes back as it is.
[[nodiscard]] result<bytes> merge_updates(std::span<const bytes_view> updates);
[[nodiscard]] result<bytes> merge_updates(std::span<const bytes> updates);
/// The state vector an update brings a document to (encoded as Yjs encodes state vectors), as
/// Y.encodeStateVectorFromUpdate: a client counts up to its first gap.
[[nodiscard]] result<bytes> state_vector_from_update(bytes_view update);
/// What of `update` a document at `state_vector` (encoded) lacks, with the whole delete set, as
/// Y.diffUpdate.
[[nodiscard]] result<bytes> diff_update(bytes_view update, bytes_view state_vector);

[[nodiscard]] result<state_vector> decode_state_vector(bytes_view encoded);
[[nodiscard]] bytes encode_state_vector(const state_vector& sv);

}  // namespace keel::crdt::yjs
