#include <keel/ledger/merkle.hpp>

#include <boost/json.hpp>
// SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, but EVP's per-call
// dispatch (init, provider lookup, finalisation) costs more than hashing a 119-byte leaf with
// the CPU's SHA extensions; the Merkle tree hashes two of these per journal entry.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

namespace keel::ledger {

namespace {

// The largest power of two strictly smaller than n (n >= 2): RFC 9162's split point k.
std::uint64_t split_point(std::uint64_t n) noexcept {
  return std::bit_floor(n - 1);
}

bool is_hash(bytes_view b) noexcept {
  return b.size() == sizeof(tree_hash);
}

// SHA-256 of prefix ‖ data with the low-level API (cannot fail for SHA-256).
tree_hash prefixed_sha256(std::uint8_t prefix, const std::uint8_t* data, std::size_t size) {
  SHA256_CTX context;
  SHA256_Init(&context);
  SHA256_Update(&context, &prefix, 1);
  if (size != 0) SHA256_Update(&context, data, size);  // data may be null when size is 0
  tree_hash out;
  SHA256_Final(out.data(), &context);
  return out;
}

tree_hash node_hash_raw(const std::uint8_t* left, const std::uint8_t* right) {
  std::array<std::uint8_t, 64> children;
  std::memcpy(children.data(), left, 32);
  std::memcpy(children.data() + 32, right, 32);
  return prefixed_sha256(0x01, children.data(), children.size());
}

bool equal(const tree_hash& a, bytes_view b) noexcept {
  return b.size() == a.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace

tree_hash leaf_hash(bytes_view data) {
  return prefixed_sha256(0x00, data.data(), data.size());
}

tree_hash node_hash(const tree_hash& left, const tree_hash& right) {
  return node_hash_raw(left.data(), right.data());
}

tree_hash empty_root() {
  return sha256(bytes_view{});
}

void merkle_tree::append(const tree_hash& leaf) {
  if (levels_.empty()) levels_.emplace_back();
  levels_[0].push_back(leaf);
  // Each time a level gains an even count, a complete subtree one level up is finished.
  for (std::size_t level = 0; levels_[level].size() % 2 == 0; ++level) {
    if (level + 1 == levels_.size()) levels_.emplace_back();
    const auto& row = levels_[level];
    const auto n = row.size();
    const auto parent = node_hash(row[n - 2], row[n - 1]);
    levels_[level + 1].push_back(parent);
  }
}

void merkle_tree::reserve(std::uint64_t leaves) {
  for (unsigned level = 0; (leaves >> level) != 0; ++level) {
    if (levels_.size() == level) levels_.emplace_back();
    levels_[level].reserve(leaves >> level);
  }
}

tree_hash merkle_tree::subtree(std::uint64_t begin, std::uint64_t end) const {
  const node_reader read = [this](unsigned level, std::uint64_t index) -> result<tree_hash> {
    return levels_[level][index];
  };
  return subtree_hash(read, begin, end).value();
}

result<tree_hash> merkle_tree::root(std::uint64_t tree_size) const {
  if (tree_size > size()) return errc::sequence_out_of_range;
  if (tree_size == 0) return empty_root();
  return subtree(0, tree_size);
}

result<tree_hash> merkle_tree::leaf(std::uint64_t index) const {
  if (index >= size()) return errc::sequence_out_of_range;
  return levels_[0][index];
}

result<std::vector<tree_hash>> merkle_tree::inclusion_proof(std::uint64_t index,
                                                            std::uint64_t tree_size) const {
  if (tree_size > size() || index >= tree_size) return errc::sequence_out_of_range;
  const node_reader read = [this](unsigned level, std::uint64_t i) -> result<tree_hash> {
    return levels_[level][i];
  };
  return ledger::inclusion_proof(read, index, tree_size);
}

result<std::vector<tree_hash>> merkle_tree::consistency_proof(std::uint64_t old_size,
                                                              std::uint64_t new_size) const {
  if (old_size == 0 || old_size > new_size || new_size > size()) return errc::sequence_out_of_range;
  const node_reader read = [this](unsigned level, std::uint64_t i) -> result<tree_hash> {
    return levels_[level][i];
  };
  return ledger::consistency_proof(read, old_size, new_size);
}

result<std::vector<tree_hash>> merkle_tree::subtree_consistency_proof(std::uint64_t start, std::uint64_t end,
                                                                      std::uint64_t tree_size) const {
  if (tree_size > size()) return errc::sequence_out_of_range;
  const node_reader read = [this](unsigned level, std::uint64_t i) -> result<tree_hash> {
    return levels_[level][i];
  };
  return ledger::subtree_consistency_proof(read, start, end, tree_size);
}

result<tree_hash> subtree_hash(const node_reader& read, std::uint64_t begin, std::uint64_t end) {
  // An empty range has no root to read (and would split at 2^63, far outside any tree).
  if (end <= begin) return errc::sequence_out_of_range;
  const auto n = end - begin;
  if (std::has_single_bit(n) && begin % n == 0) {
    const auto level = static_cast<unsigned>(std::countr_zero(n));
    return read(level, begin >> level);
  }
  const auto k = split_point(n);
  auto left = subtree_hash(read, begin, begin + k);
  if (!left) return left.error();
  auto right = subtree_hash(read, begin + k, end);
  if (!right) return right.error();
  return node_hash(*left, *right);
}

result<std::vector<tree_hash>> inclusion_proof(const node_reader& read, std::uint64_t index,
                                               std::uint64_t tree_size) {
  if (index >= tree_size) return errc::sequence_out_of_range;
  std::vector<tree_hash> path;
  // Walk down from the root; siblings are collected top-down and reversed (the path is leaf-up).
  std::uint64_t begin = 0;
  std::uint64_t end = tree_size;
  while (end - begin > 1) {
    const auto k = split_point(end - begin);
    result<tree_hash> sibling = tree_hash{};
    if (index < begin + k) {
      sibling = subtree_hash(read, begin + k, end);
      end = begin + k;
    } else {
      sibling = subtree_hash(read, begin, begin + k);
      begin += k;
    }
    if (!sibling) return sibling.error();
    path.push_back(*sibling);
  }
  std::reverse(path.begin(), path.end());
  return path;
}

result<std::vector<tree_hash>> consistency_proof(const node_reader& read, std::uint64_t old_size,
                                                 std::uint64_t new_size) {
  if (old_size == 0 || old_size > new_size) return errc::sequence_out_of_range;
  std::vector<tree_hash> proof;
  if (old_size == new_size) return proof;
  // SUBPROOF(m, D[begin:end], b), iteratively; hashes collected top-down, reversed at the end.
  std::uint64_t m = old_size;
  std::uint64_t begin = 0;
  std::uint64_t end = new_size;
  bool whole = true;  // b: the old tree is the whole current subtree's left part so far
  while (true) {
    const auto n = end - begin;
    result<tree_hash> h = tree_hash{};
    if (m == n) {
      if (whole) break;
      h = subtree_hash(read, begin, end);
      if (!h) return h.error();
      proof.push_back(*h);
      break;
    }
    const auto k = split_point(n);
    if (m <= k) {
      h = subtree_hash(read, begin + k, end);
      end = begin + k;
    } else {
      h = subtree_hash(read, begin, begin + k);
      begin += k;
      m -= k;
      whole = false;
    }
    if (!h) return h.error();
    proof.push_back(*h);
  }
  std::reverse(proof.begin(), proof.end());
  return proof;
}

bool is_valid_subtree(std::uint64_t start, std::uint64_t end) noexcept {
  if (start >= end) return false;
  const auto width = end - start;
  return width <= (std::uint64_t{1} << 63U) && start % std::bit_ceil(width) == 0;
}

result<std::vector<tree_hash>> subtree_consistency_proof(const node_reader& read, std::uint64_t start,
                                                         std::uint64_t end, std::uint64_t tree_size) {
  if (!is_valid_subtree(start, end) || end > tree_size) return errc::sequence_out_of_range;
  // SUBTREE_SUBPROOF(start, end, D[begin:stop], known), iteratively; hashes collected top-down,
  // reversed at the end. `known`: the verifier already has the hash of the current range's
  // leftmost part, so the recursion's base case adds nothing.
  std::vector<tree_hash> proof;
  std::uint64_t begin = 0;
  std::uint64_t stop = tree_size;
  std::uint64_t first = start;  // relative to begin
  std::uint64_t last = end;     // relative to begin, exclusive
  bool known = true;
  while (true) {
    const auto n = stop - begin;
    result<tree_hash> h = tree_hash{};
    if (first == 0 && last == n) {
      if (known) break;
      h = subtree_hash(read, begin, stop);
      if (!h) return h.error();
      proof.push_back(*h);
      break;
    }
    const auto k = split_point(n);
    if (last <= k) {
      h = subtree_hash(read, begin + k, stop);
      stop = begin + k;
    } else {
      // Either the subtree lies right of the split, or (a valid subtree cannot straddle a
      // power-of-two boundary otherwise) it starts at 0 and only its right part recurses.
      h = subtree_hash(read, begin, begin + k);
      begin += k;
      last -= k;
      if (first >= k) {
        first -= k;
      } else {
        known = false;
      }
    }
    if (!h) return h.error();
    proof.push_back(*h);
  }
  std::reverse(proof.begin(), proof.end());
  return proof;
}

void merkle_frontier::append(const tree_hash& leaf, std::vector<completed_node>& completed) {
  const auto new_size = size_ + 1;
  completed.push_back({0, size_, leaf});
  tree_hash carry = leaf;
  unsigned level = 0;
  while (((size_ >> level) & 1U) != 0U) {
    carry = node_hash(levels_[level], carry);
    ++level;
    completed.push_back({level, (new_size >> level) - 1, carry});
  }
  if (levels_.size() <= level) levels_.resize(level + 1);
  levels_[level] = carry;
  size_ = new_size;
}

tree_hash merkle_frontier::root() const {
  if (size_ == 0) return empty_root();
  bool first = true;
  tree_hash acc{};
  for (unsigned level = 0; level < 64; ++level) {
    if (((size_ >> level) & 1U) == 0U) continue;
    acc = first ? levels_[level] : node_hash(levels_[level], acc);
    first = false;
  }
  return acc;
}

bytes merkle_frontier::serialize() const {
  bytes out;
  for (unsigned level = 0; level < 64; ++level)
    if (((size_ >> level) & 1U) != 0U) out.insert(out.end(), levels_[level].begin(), levels_[level].end());
  return out;
}

result<merkle_frontier> merkle_frontier::parse(std::uint64_t tree_size, bytes_view data) {
  if (data.size() != static_cast<std::size_t>(std::popcount(tree_size)) * sizeof(tree_hash))
    return errc::corrupt_entry;
  merkle_frontier f;
  f.size_ = tree_size;
  f.levels_.resize(64);
  std::size_t at = 0;
  for (unsigned level = 0; level < 64; ++level) {
    if (((tree_size >> level) & 1U) == 0U) continue;
    std::copy_n(data.begin() + static_cast<std::ptrdiff_t>(at), sizeof(tree_hash), f.levels_[level].begin());
    at += sizeof(tree_hash);
  }
  return f;
}

result<void> verify_inclusion(std::uint64_t index, std::uint64_t tree_size, bytes_view leaf,
                              std::span<const bytes> proof, bytes_view root) {
  if (index >= tree_size || !is_hash(leaf) || !is_hash(root)) return errc::invalid_proof;
  std::uint64_t fn = index;
  std::uint64_t sn = tree_size - 1;
  tree_hash r;
  std::copy(leaf.begin(), leaf.end(), r.begin());
  for (const auto& p : proof) {
    if (sn == 0 || !is_hash(p)) return errc::invalid_proof;
    if ((fn & 1U) == 1U || fn == sn) {
      r = node_hash_raw(p.data(), r.data());
      if ((fn & 1U) == 0U) {
        while ((fn & 1U) == 0U && fn != 0) {
          fn >>= 1U;
          sn >>= 1U;
        }
      }
    } else {
      r = node_hash_raw(r.data(), p.data());
    }
    fn >>= 1U;
    sn >>= 1U;
  }
  if (sn != 0 || !equal(r, root)) return errc::invalid_proof;
  return {};
}

result<void> verify_consistency(std::uint64_t old_size, std::uint64_t new_size, bytes_view old_root,
                                bytes_view new_root, std::span<const bytes> proof) {
  if (old_size == 0 || old_size > new_size) return errc::invalid_proof;
  if (old_size == new_size) {
    if (!proof.empty() || old_root.size() != new_root.size() ||
        !std::equal(old_root.begin(), old_root.end(), new_root.begin()))
      return errc::invalid_proof;
    return {};
  }
  if (proof.empty() || !is_hash(old_root) || !is_hash(new_root)) return errc::invalid_proof;
  for (const auto& p : proof)
    if (!is_hash(p)) return errc::invalid_proof;
  // When the old tree is a complete subtree, its root is the proof's implicit first element.
  std::vector<bytes_view> path;
  path.reserve(proof.size() + 1);
  if (std::has_single_bit(old_size)) path.push_back(old_root);
  for (const auto& p : proof) path.emplace_back(p);

  std::uint64_t fn = old_size - 1;
  std::uint64_t sn = new_size - 1;
  while ((fn & 1U) == 1U) {
    fn >>= 1U;
    sn >>= 1U;
  }
  tree_hash fr;
  std::copy(path[0].begin(), path[0].end(), fr.begin());
  tree_hash sr = fr;
  for (std::size_t i = 1; i < path.size(); ++i) {
    const auto& c = path[i];
    if (sn == 0) return errc::invalid_proof;
    if ((fn & 1U) == 1U || fn == sn) {
      fr = node_hash_raw(c.data(), fr.data());
      sr = node_hash_raw(c.data(), sr.data());
      if ((fn & 1U) == 0U) {
        while ((fn & 1U) == 0U && fn != 0) {
          fn >>= 1U;
          sn >>= 1U;
        }
      }
    } else {
      sr = node_hash_raw(sr.data(), c.data());
    }
    fn >>= 1U;
    sn >>= 1U;
  }
  if (sn != 0 || !equal(fr, old_root) || !equal(sr, new_root)) return errc::invalid_proof;
  return {};
}

result<void> verify_subtree_inclusion(std::uint64_t index, std::uint64_t start, std::uint64_t end,
                                      bytes_view leaf, std::span<const bytes> proof,
                                      bytes_view subtree_root) {
  if (!is_valid_subtree(start, end) || index < start || index >= end) return errc::invalid_proof;
  return verify_inclusion(index - start, end - start, leaf, proof, subtree_root);
}

result<void> verify_subtree_consistency(std::uint64_t start, std::uint64_t end, std::uint64_t tree_size,
                                        bytes_view subtree_root, bytes_view root,
                                        std::span<const bytes> proof) {
  if (end > tree_size) return errc::invalid_proof;
  // The edge cases follow the published probes: an empty range is consistent with any tree
  // when its hash is the empty tree's; the whole tree is consistent with itself.
  if (start == end) {
    if (!proof.empty() || !equal(empty_root(), subtree_root)) return errc::invalid_proof;
    return {};
  }
  if (start == 0 && end == tree_size) {
    if (!proof.empty() || subtree_root.size() != root.size() ||
        !std::equal(subtree_root.begin(), subtree_root.end(), root.begin()))
      return errc::invalid_proof;
    return {};
  }
  if (!is_valid_subtree(start, end) || !is_hash(subtree_root) || !is_hash(root)) return errc::invalid_proof;
  for (const auto& p : proof)
    if (!is_hash(p)) return errc::invalid_proof;
  // fn and sn are the subtree's first and last leaf, tn the tree's last; shifting climbs a level.
  std::uint64_t fn = start;
  std::uint64_t sn = end - 1;
  std::uint64_t tn = tree_size - 1;
  const auto climb = [&] {
    fn >>= 1U;
    sn >>= 1U;
    tn >>= 1U;
  };
  if (sn == tn) {
    // Flush with the tree's right edge: no sibling on the way up to the subtree's own root.
    while (fn != sn) climb();
  } else {
    while (fn != sn && (sn & 1U) == 1U) climb();
  }
  tree_hash fr;
  std::size_t next = 0;
  if (fn == sn) {
    std::copy(subtree_root.begin(), subtree_root.end(), fr.begin());
  } else {
    if (proof.empty()) return errc::invalid_proof;
    std::copy(proof[0].begin(), proof[0].end(), fr.begin());
    next = 1;
  }
  tree_hash sr = fr;
  for (; next < proof.size(); ++next) {
    const auto& c = proof[next];
    if (tn == 0) return errc::invalid_proof;
    if ((sn & 1U) == 1U || sn == tn) {
      if (fn < sn) fr = node_hash_raw(c.data(), fr.data());
      sr = node_hash_raw(c.data(), sr.data());
      while ((sn & 1U) == 0U) climb();  // sn > 0 here: sn == tn == 0 was rejected above
    } else {
      sr = node_hash_raw(sr.data(), c.data());
    }
    climb();
  }
  if (tn != 0 || !equal(fr, subtree_root) || !equal(sr, root)) return errc::invalid_proof;
  return {};
}

std::vector<bytes> to_bytes(std::span<const tree_hash> hashes) {
  std::vector<bytes> out;
  out.reserve(hashes.size());
  for (const auto& h : hashes) out.emplace_back(h.begin(), h.end());
  return out;
}

namespace {
void put_u64_be(bytes& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}
constexpr std::string_view checkpoint_domain = "keel.ledger.checkpoint.v1\n";
}  // namespace

bytes checkpoint::message(std::uint64_t tree_size, const tree_hash& root, std::uint64_t timestamp) {
  bytes out(checkpoint_domain.begin(), checkpoint_domain.end());
  put_u64_be(out, tree_size);
  out.insert(out.end(), root.begin(), root.end());
  put_u64_be(out, timestamp);
  return out;
}

checkpoint checkpoint::sign(std::uint64_t tree_size, const tree_hash& root, std::uint64_t timestamp,
                            const ed25519_private_key& key) {
  checkpoint c{
      .tree_size = tree_size, .root = root, .timestamp = timestamp, .key = key.public_key(), .signature = {}};
  c.signature = key.sign(message(tree_size, root, timestamp));
  return c;
}

bool checkpoint::verify(const ed25519_public_key& trusted) const {
  return key == trusted && trusted.verify(message(tree_size, root, timestamp), signature);
}

std::string checkpoint::to_json() const {
  boost::json::object o;
  o["tree_size"] = tree_size;
  o["root"] = to_hex(root);
  o["timestamp"] = timestamp;
  o["key"] = to_hex(key.bytes);
  o["signature"] = to_hex(signature);
  return boost::json::serialize(o);
}

result<checkpoint> checkpoint::from_json(std::string_view text) {
  boost::system::error_code ec;
  auto value = boost::json::parse(text, ec);
  if (ec || !value.is_object()) return errc::invalid_argument;
  const auto& o = value.as_object();
  const auto* size = o.if_contains("tree_size");
  const auto* ts = o.if_contains("timestamp");
  const auto* root = o.if_contains("root");
  const auto* key = o.if_contains("key");
  const auto* sig = o.if_contains("signature");
  if (size == nullptr || ts == nullptr || root == nullptr || key == nullptr || sig == nullptr)
    return errc::invalid_argument;
  const auto as_u64 = [](const boost::json::value& v) -> std::optional<std::uint64_t> {
    if (v.is_uint64()) return v.as_uint64();
    if (v.is_int64() && v.as_int64() >= 0) return static_cast<std::uint64_t>(v.as_int64());
    return std::nullopt;
  };
  const auto decode = [](const boost::json::value& v, std::size_t n) -> std::optional<bytes> {
    if (!v.is_string()) return std::nullopt;
    auto b = from_hex(std::string_view(v.as_string()));
    if (!b || b->size() != n) return std::nullopt;
    return std::move(*b);
  };
  auto size_v = as_u64(*size);
  auto ts_v = as_u64(*ts);
  auto root_v = decode(*root, 32);
  auto key_v = decode(*key, 32);
  auto sig_v = decode(*sig, 64);
  if (!size_v || !ts_v || !root_v || !key_v || !sig_v) return errc::invalid_argument;
  checkpoint c;
  c.tree_size = *size_v;
  c.timestamp = *ts_v;
  std::copy(root_v->begin(), root_v->end(), c.root.begin());
  std::copy(key_v->begin(), key_v->end(), c.key.bytes.begin());
  std::copy(sig_v->begin(), sig_v->end(), c.signature.begin());
  return c;
}

}  // namespace keel::ledger
