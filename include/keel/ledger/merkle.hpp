#pragma once
/// @file keel/ledger/merkle.hpp
/// @brief RFC 6962 / RFC 9162 Merkle trees: hashing, an append-only tree, inclusion and
/// consistency proofs, strict verifiers, and Ed25519-signed checkpoints.
#include <keel/core/bytes.hpp>
#include <keel/core/ed25519.hpp>
#include <keel/core/hash.hpp>
#include <keel/ledger/detail/segmented_vector.hpp>
#include <keel/ledger/types.hpp>

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace keel::ledger {

/// A tree hash (SHA-256).
using tree_hash = sha256_digest;

/// SHA-256(0x00 ‖ data): the hash of a leaf.
[[nodiscard]] tree_hash leaf_hash(bytes_view data);
/// SHA-256(0x01 ‖ left ‖ right): the hash of an interior node.
[[nodiscard]] tree_hash node_hash(const tree_hash& left, const tree_hash& right);
/// SHA-256 of the empty string: the root of the empty tree.
[[nodiscard]] tree_hash empty_root();

/// An append-only Merkle tree over leaf hashes. It keeps every complete subtree's hash (2n
/// hashes for n leaves), so roots of any earlier size and proofs cost O(log n) lookups.
class merkle_tree {
 public:
  /// Appends a leaf hash; the new leaf's index is size() before the call.
  void append(const tree_hash& leaf);
  /// Allocates and faults in room for `leaves` leaves (and their interior nodes) now.
  void reserve(std::uint64_t leaves);
  [[nodiscard]] std::uint64_t size() const noexcept { return levels_.empty() ? 0 : levels_[0].size(); }
  /// The root of the first `tree_size` leaves. @returns errc::sequence_out_of_range beyond size().
  [[nodiscard]] result<tree_hash> root(std::uint64_t tree_size) const;
  [[nodiscard]] tree_hash root() const { return root(size()).value(); }
  /// The hash of leaf `index`.
  [[nodiscard]] result<tree_hash> leaf(std::uint64_t index) const;
  /// The audit path (RFC 9162 §2.1.3.1) of leaf `index` in the tree of the first `tree_size`
  /// leaves. @returns errc::sequence_out_of_range unless index < tree_size <= size().
  [[nodiscard]] result<std::vector<tree_hash>> inclusion_proof(std::uint64_t index,
                                                               std::uint64_t tree_size) const;
  /// The consistency proof (RFC 9162 §2.1.4.1) from `old_size` to `new_size`.
  /// @returns errc::sequence_out_of_range unless 0 < old_size <= new_size <= size().
  [[nodiscard]] result<std::vector<tree_hash>> consistency_proof(std::uint64_t old_size,
                                                                 std::uint64_t new_size) const;
  /// The subtree consistency proof (draft-ietf-plants-merkle-tree-certs) that the subtree of
  /// leaves [start, end) is part of the tree of the first `tree_size` leaves.
  /// @returns errc::sequence_out_of_range unless is_valid_subtree(start, end) and
  /// end <= tree_size <= size().
  [[nodiscard]] result<std::vector<tree_hash>> subtree_consistency_proof(std::uint64_t start,
                                                                         std::uint64_t end,
                                                                         std::uint64_t tree_size) const;

 private:
  [[nodiscard]] tree_hash subtree(std::uint64_t begin, std::uint64_t end) const;
  std::vector<detail::segmented_vector<tree_hash>> levels_;  // levels_[l][i] covers leaves [i·2^l, (i+1)·2^l)
};

/// Reads the hash of the complete subtree at (level, index), which covers leaves
/// [index·2^level, (index+1)·2^level); level 0 is the leaf hashes. Lets proofs be built over
/// any storage of the nodes (memory, a database table).
using node_reader = std::function<result<tree_hash>(unsigned level, std::uint64_t index)>;

/// The root of leaves [begin, end) from complete-subtree hashes. @returns
/// errc::sequence_out_of_range for an empty or reversed range, or what `read` returns.
[[nodiscard]] result<tree_hash> subtree_hash(const node_reader& read, std::uint64_t begin, std::uint64_t end);
/// The audit path of leaf `index` in the tree of `tree_size` leaves (index < tree_size).
[[nodiscard]] result<std::vector<tree_hash>> inclusion_proof(const node_reader& read, std::uint64_t index,
                                                             std::uint64_t tree_size);
/// The consistency proof from `old_size` to `new_size` (0 < old_size <= new_size).
[[nodiscard]] result<std::vector<tree_hash>> consistency_proof(const node_reader& read,
                                                               std::uint64_t old_size,
                                                               std::uint64_t new_size);

/// True when leaves [start, end) form a subtree the tree actually has a node for (or would, on
/// its right edge): start < end and start a multiple of bit_ceil(end - start).
[[nodiscard]] bool is_valid_subtree(std::uint64_t start, std::uint64_t end) noexcept;
/// The subtree consistency proof for [start, end) in the tree of `tree_size` leaves.
[[nodiscard]] result<std::vector<tree_hash>> subtree_consistency_proof(const node_reader& read,
                                                                       std::uint64_t start, std::uint64_t end,
                                                                       std::uint64_t tree_size);

/// A complete subtree finished by an append, for storing: (level, index, hash).
struct completed_node {
  unsigned level;
  std::uint64_t index;
  tree_hash hash;
};

/// The right edge of a tree: one hash per set bit of its size. Enough to append leaves and to
/// compute the current root without reading the rest of the tree (what a database writer keeps).
class merkle_frontier {
 public:
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  /// Appends a leaf hash; every complete subtree it finishes (the leaf itself first) is added
  /// to `completed`.
  void append(const tree_hash& leaf, std::vector<completed_node>& completed);
  [[nodiscard]] tree_hash root() const;
  /// The hashes, lowest level first, concatenated.
  [[nodiscard]] bytes serialize() const;
  /// @returns errc::corrupt_entry unless `data` holds one hash per set bit of `tree_size`.
  [[nodiscard]] static result<merkle_frontier> parse(std::uint64_t tree_size, bytes_view data);

 private:
  std::uint64_t size_ = 0;
  std::vector<tree_hash> levels_;  // levels_[l] is meaningful when bit l of size_ is set
};

/// Verifies that `leaf` (a 32-byte leaf hash) is leaf `index` of the tree of size `tree_size`
/// whose root is `root`, by RFC 9162 §2.1.3.2. Strict: any hash that is not 32 bytes, an index
/// outside the tree, a path element too many or too few, or a mismatch rejects the proof.
/// @returns errc::invalid_proof on rejection.
[[nodiscard]] result<void> verify_inclusion(std::uint64_t index, std::uint64_t tree_size, bytes_view leaf,
                                            std::span<const bytes> proof, bytes_view root);
/// Verifies a consistency proof between (old_size, old_root) and (new_size, new_root), by RFC
/// 9162 §2.1.4.2. Strict as verify_inclusion; old_size 0 is rejected (there is nothing to be
/// consistent with). Equal sizes need an empty proof and byte-for-byte equal roots, of any
/// length: that case compares and never hashes, as the reference verifier and its probes do.
[[nodiscard]] result<void> verify_consistency(std::uint64_t old_size, std::uint64_t new_size,
                                              bytes_view old_root, bytes_view new_root,
                                              std::span<const bytes> proof);

/// Verifies that `leaf` is leaf `index` of the subtree of leaves [start, end) whose hash is
/// `subtree_root` (draft-ietf-plants-merkle-tree-certs subtree inclusion). The subtree must be
/// one the tree actually has: start < end and start a multiple of bit_ceil(end - start); the
/// proof is then the RFC 9162 path within it.
[[nodiscard]] result<void> verify_subtree_inclusion(std::uint64_t index, std::uint64_t start,
                                                    std::uint64_t end, bytes_view leaf,
                                                    std::span<const bytes> proof, bytes_view subtree_root);

/// Verifies that the subtree of leaves [start, end) whose hash is `subtree_root` is part of the
/// tree of size `tree_size` whose root is `root` (draft-ietf-plants-merkle-tree-certs subtree
/// consistency): a checkpoint of a range of the journal can be tied to a later full checkpoint.
/// Strict as verify_inclusion; the subtree must be valid and end <= tree_size. As in the
/// transparency-dev probes, an empty range (start == end) verifies with an empty proof when
/// `subtree_root` is empty_root(), and the whole tree (start 0, end tree_size) with an empty
/// proof and byte-for-byte equal roots (of any length, as for equal sizes in verify_consistency).
[[nodiscard]] result<void> verify_subtree_consistency(std::uint64_t start, std::uint64_t end,
                                                      std::uint64_t tree_size, bytes_view subtree_root,
                                                      bytes_view root, std::span<const bytes> proof);

/// Copies digests into the byte strings the verifiers take.
[[nodiscard]] std::vector<bytes> to_bytes(std::span<const tree_hash> hashes);

/// A signed tree head: the journal had `tree_size` entries with root `root` at `timestamp`.
struct checkpoint {
  std::uint64_t tree_size = 0;
  tree_hash root{};
  std::uint64_t timestamp = 0;  ///< ns since the Unix epoch
  ed25519_public_key key{};
  ed25519_signature signature{};

  /// The signed bytes: "keel.ledger.checkpoint.v1\n" ‖ tree_size (u64 BE) ‖ root ‖ timestamp (u64 BE).
  [[nodiscard]] static bytes message(std::uint64_t tree_size, const tree_hash& root, std::uint64_t timestamp);
  /// Signs a tree head with `key`.
  [[nodiscard]] static checkpoint sign(std::uint64_t tree_size, const tree_hash& root,
                                       std::uint64_t timestamp, const ed25519_private_key& key);
  /// True when the signature is `trusted`'s over these fields (and `key` is `trusted`).
  [[nodiscard]] bool verify(const ed25519_public_key& trusted) const;

  /// JSON: {"tree_size":N,"root":"hex","timestamp":N,"key":"hex","signature":"hex"}.
  [[nodiscard]] std::string to_json() const;
  /// Parses to_json()'s form. @returns errc::invalid_argument for anything else.
  [[nodiscard]] static result<checkpoint> from_json(std::string_view text);
};

}  // namespace keel::ledger
