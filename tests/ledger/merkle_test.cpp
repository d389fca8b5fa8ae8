// RFC 6962 / 9162 hashing, tree, proofs and strict verifiers against published vectors.
#include <keel/ledger/merkle.hpp>

#include <boost/json.hpp>
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <bit>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <support/random.hpp>
#include <support/result.hpp>

namespace ledger = keel::ledger;
namespace fs = std::filesystem;

namespace {

boost::json::value load_json(const fs::path& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path.string());
  std::stringstream text;
  text << in.rdbuf();
  return boost::json::parse(text.str());
}

fs::path data_dir() {
  return fs::path(KEEL_TEST_DATA_DIR) / "merkle";
}

keel::bytes b64(const boost::json::value& v) {
  if (v.is_null()) return {};
  return keel::from_base64(std::string_view(v.as_string())).value();
}

keel::bytes hex(const boost::json::value& v) {
  return keel::from_hex(std::string_view(v.as_string())).value();
}

std::vector<keel::bytes> b64_list(const boost::json::value& v) {
  std::vector<keel::bytes> out;
  if (v.is_null()) return out;
  for (const auto& e : v.as_array()) out.push_back(b64(e));
  return out;
}

std::vector<keel::bytes> hex_list(const boost::json::value& v) {
  std::vector<keel::bytes> out;
  for (const auto& e : v.as_array()) out.push_back(hex(e));
  return out;
}

bool want_err(const boost::json::object& o) {
  const auto* w = o.if_contains("wantErr");
  return w != nullptr && w->as_bool();
}

std::uint64_t u64(const boost::json::value& v) {
  return v.is_uint64() ? v.as_uint64() : static_cast<std::uint64_t>(v.as_int64());
}

keel::bytes to_bytes(const ledger::tree_hash& h) {
  return {h.begin(), h.end()};
}

std::vector<fs::path> probes(const char* kind) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(data_dir() / "transparency-dev" / "testdata" / kind))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

struct probe_counts {
  int valid = 0;
  int rejected = 0;
};

// Runs `verify` on every probe of one kind: valid ones must verify, wantErr ones must not.
template <class Verify>
probe_counts run_probes(const char* kind, Verify verify) {
  probe_counts counts;
  for (const auto& path : probes(kind)) {
    const auto o = load_json(path).as_object();
    const keel::result<void> r = verify(o);
    INFO(path.string());
    if (want_err(o)) {
      CHECK_FALSE(r.has_value());
      ++counts.rejected;
    } else {
      CHECK(r.has_value());
      ++counts.valid;
    }
  }
  return counts;
}

ledger::merkle_tree tree_of_bytes(std::uint64_t n) {
  ledger::merkle_tree tree;
  for (std::uint64_t i = 0; i < n; ++i) {
    const auto byte = static_cast<std::uint8_t>(i);
    tree.append(ledger::leaf_hash(keel::bytes_view(&byte, 1)));
  }
  return tree;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("transparency-dev inclusion probes: valid accepted, every wantErr rejected") {
    const auto counts = run_probes("inclusion", [](const boost::json::object& o) {
      return ledger::verify_inclusion(u64(o.at("leafIdx")), u64(o.at("treeSize")), b64(o.at("leafHash")),
                                      b64_list(o.at("proof")), b64(o.at("root")));
    });
    CHECK(counts.valid == 6);
    CHECK(counts.rejected == 92);
  }

  TEST_CASE("transparency-dev consistency probes: valid accepted, every wantErr rejected") {
    const auto counts = run_probes("consistency", [](const boost::json::object& o) {
      return ledger::verify_consistency(u64(o.at("size1")), u64(o.at("size2")), b64(o.at("root1")),
                                        b64(o.at("root2")), b64_list(o.at("proof")));
    });
    CHECK(counts.valid == 6);
    CHECK(counts.rejected == 92);
  }

  TEST_CASE("transparency-dev subtree inclusion probes: valid accepted, every wantErr rejected") {
    const auto counts = run_probes("subtreeinclusion", [](const boost::json::object& o) {
      return ledger::verify_subtree_inclusion(u64(o.at("leafIdx")), u64(o.at("start")), u64(o.at("end")),
                                              b64(o.at("leafHash")), b64_list(o.at("proof")),
                                              b64(o.at("root")));
    });
    CHECK(counts.valid == 12);
    CHECK(counts.rejected == 192);
  }

  TEST_CASE("transparency-dev subtree consistency probes: valid accepted, every wantErr rejected") {
    const auto counts = run_probes("subtreeconsistency", [](const boost::json::object& o) {
      return ledger::verify_subtree_consistency(u64(o.at("start")), u64(o.at("end")), u64(o.at("size")),
                                                b64(o.at("root1")), b64(o.at("root2")),
                                                b64_list(o.at("proof")));
    });
    CHECK(counts.valid == 12);
    CHECK(counts.rejected == 106);
  }

  TEST_CASE("draft-ietf-plants-merkle-tree-certs accumulated vectors for trees up to 130 leaves") {
    // The draft folds every subtree hash, subtree inclusion proof and subtree consistency proof
    // of the tree d[i] = byte i into one SHA-256 over text lines, and publishes the digests.
    const auto tree = tree_of_bytes(130);
    const auto hex_of = [](const ledger::tree_hash& h) { return keel::to_hex(h); };
    const auto proof_line = [&](std::string line, const std::vector<ledger::tree_hash>& proof) {
      for (const auto& h : proof) line += " " + hex_of(h);
      return line + "\n";
    };
    std::string hashes;
    std::string inclusion;
    std::string consistency;
    std::size_t verified = 0;
    for (std::uint64_t end = 1; end <= 130; ++end) {
      for (std::uint64_t start = 0; start < end; ++start) {
        if (!ledger::is_valid_subtree(start, end)) continue;
        // A valid subtree's hash is the RFC 9162 root of its own leaves.
        ledger::merkle_tree part;
        for (auto i = start; i < end; ++i) part.append(tree.leaf(i).value());
        const auto subtree_root = part.root();
        hashes += fmt::format("[{}, {}) {}\n", start, end, hex_of(subtree_root));
        for (auto index = start; index < end; ++index)
          inclusion += proof_line(fmt::format("{} [{}, {})", index, start, end),
                                  part.inclusion_proof(index - start, end - start).value());
        for (auto n = end; n <= 130; ++n) {
          const auto proof = ledger::to_bytes(tree.subtree_consistency_proof(start, end, n).value());
          const auto root = to_bytes(tree.root(n).value());
          REQUIRE(ledger::verify_subtree_consistency(start, end, n, to_bytes(subtree_root), root, proof));
          if (n > end)
            CHECK_FALSE(ledger::verify_subtree_consistency(start, end, n - 1, to_bytes(subtree_root),
                                                           to_bytes(tree.root(n - 1).value()), proof));
          ++verified;
        }
      }
    }
    // The consistency vector is ordered by tree size first.
    for (std::uint64_t n = 0; n <= 130; ++n)
      for (std::uint64_t end = 1; end <= n; ++end)
        for (std::uint64_t start = 0; start < end; ++start)
          if (ledger::is_valid_subtree(start, end))
            consistency += proof_line(fmt::format("[{}, {}) {}", start, end, n),
                                      tree.subtree_consistency_proof(start, end, n).value());
    CHECK(verified > 10'000);
    CHECK(hex_of(keel::sha256(keel::as_bytes(hashes))) ==
          "94a95384a8c69acea9b50d035a58285b3a777cb7a724005faa5e1f1e1190007f");
    CHECK(hex_of(keel::sha256(keel::as_bytes(inclusion))) ==
          "ac2a8f989e44d99e399db448050ff5f19757df53cfb716aa81015d3955d8163f");
    CHECK(hex_of(keel::sha256(keel::as_bytes(consistency))) ==
          "c586ebbb73a5621baf2140095d87dde934e3b6503a562a1a5215b8209edd083d");
  }

  TEST_CASE("RFC 6962 reference: hasher, the 8-leaf tree, its roots and proofs") {
    const auto ref = load_json(data_dir() / "rfc6962_reference.json").as_object();
    for (const auto& v : ref.at("hasher").as_array()) {
      const auto& o = v.as_object();
      const auto op = std::string_view(o.at("op").as_string());
      const auto want = hex(o.at("want_hex"));
      if (op == "empty_root") CHECK(to_bytes(ledger::empty_root()) == want);
      if (op == "leaf") CHECK(to_bytes(ledger::leaf_hash(hex(o.at("input_hex")))) == want);
      if (op == "node") {
        // Raw (non-32-byte) children: hash the framing directly.
        auto framed = keel::bytes{0x01};
        const auto l = hex(o.at("left_hex"));
        const auto r = hex(o.at("right_hex"));
        framed.insert(framed.end(), l.begin(), l.end());
        framed.insert(framed.end(), r.begin(), r.end());
        const auto digest = keel::sha256(framed);
        CHECK(to_bytes(digest) == want);
      }
    }
    const auto& tree8 = ref.at("tree8").as_object();
    ledger::merkle_tree tree;
    for (const auto& leaf : tree8.at("leaves_hex").as_array()) tree.append(ledger::leaf_hash(hex(leaf)));
    const auto& roots = tree8.at("roots_by_size_hex").as_array();
    for (std::size_t n = 0; n < roots.size(); ++n) CHECK(to_bytes(tree.root(n).value()) == hex(roots[n]));
    for (const auto& v : tree8.at("inclusion_proofs").as_array()) {
      const auto& o = v.as_object();
      const auto index = u64(o.at("leaf_index"));
      const auto size = u64(o.at("tree_size"));
      const auto want = hex_list(o.at("proof_hex"));
      const auto got = tree.inclusion_proof(index, size).value();
      CHECK(ledger::to_bytes(got) == want);
      CHECK(ledger::verify_inclusion(index, size, to_bytes(tree.leaf(index).value()), want,
                                     to_bytes(tree.root(size).value())));
    }
    for (const auto& v : tree8.at("consistency_proofs").as_array()) {
      const auto& o = v.as_object();
      const auto m = u64(o.at("size1"));
      const auto n = u64(o.at("size2"));
      const auto want = hex_list(o.at("proof_hex"));
      CHECK(ledger::to_bytes(tree.consistency_proof(m, n).value()) == want);
      CHECK(ledger::verify_consistency(m, n, to_bytes(tree.root(m).value()), to_bytes(tree.root(n).value()),
                                       want));
    }
  }

  TEST_CASE("generated vectors: roots 0..130, every inclusion and consistency proof up to 32 leaves") {
    const auto gen = load_json(data_dir() / "generated_d0_d130.json").as_object();
    const auto tree = tree_of_bytes(130);
    for (const auto& v : gen.at("roots").as_array()) {
      const auto& o = v.as_object();
      CHECK(to_bytes(tree.root(u64(o.at("tree_size"))).value()) == hex(o.at("root_hex")));
    }
    std::size_t checked = 0;
    for (const auto& v : gen.at("inclusion").as_array()) {
      const auto& o = v.as_object();
      const auto index = u64(o.at("leaf_index"));
      const auto size = u64(o.at("tree_size"));
      const auto want = hex_list(o.at("proof_hex"));
      const auto leaf = hex(o.at("leaf_hash_hex"));
      CHECK(to_bytes(tree.leaf(index).value()) == leaf);
      CHECK(ledger::to_bytes(tree.inclusion_proof(index, size).value()) == want);
      const auto root = to_bytes(tree.root(size).value());
      CHECK(ledger::verify_inclusion(index, size, leaf, want, root));
      // Strictness: one element too many or too few never verifies.
      auto longer = want;
      longer.push_back(leaf);
      CHECK_FALSE(ledger::verify_inclusion(index, size, leaf, longer, root));
      if (!want.empty()) {
        auto shorter = want;
        shorter.pop_back();
        CHECK_FALSE(ledger::verify_inclusion(index, size, leaf, shorter, root));
      }
      CHECK_FALSE(ledger::verify_inclusion(size, size, leaf, want, root));
      ++checked;
    }
    CHECK(checked == 528);
    checked = 0;
    for (const auto& v : gen.at("consistency").as_array()) {
      const auto& o = v.as_object();
      const auto m = u64(o.at("size1"));
      const auto n = u64(o.at("size2"));
      const auto want = hex_list(o.at("proof_hex"));
      CHECK(ledger::to_bytes(tree.consistency_proof(m, n).value()) == want);
      const auto r1 = to_bytes(tree.root(m).value());
      const auto r2 = to_bytes(tree.root(n).value());
      CHECK(ledger::verify_consistency(m, n, r1, r2, want));
      if (m != n) CHECK_FALSE(ledger::verify_consistency(m, n, r2, r1, want));
      ++checked;
    }
    CHECK(checked == 528);
  }

  TEST_CASE("random trees: every generated proof verifies, every flipped bit is rejected") {
    ledger::merkle_tree tree;
    const auto n = keel::test::uniform<std::uint64_t>(1, 300);
    for (std::uint64_t i = 0; i < n; ++i) {
      const auto word = keel::test::rng()();
      tree.append(
          ledger::leaf_hash(keel::bytes_view(reinterpret_cast<const std::uint8_t*>(&word), sizeof word)));
    }
    for (int round = 0; round < 50; ++round) {
      const auto size = keel::test::uniform<std::uint64_t>(1, n);
      const auto index = keel::test::uniform<std::uint64_t>(0, size - 1);
      auto proof = ledger::to_bytes(tree.inclusion_proof(index, size).value());
      const auto leaf = to_bytes(tree.leaf(index).value());
      const auto root = to_bytes(tree.root(size).value());
      REQUIRE(ledger::verify_inclusion(index, size, leaf, proof, root));
      if (!proof.empty()) {
        auto& victim = proof[keel::test::uniform<std::size_t>(0, proof.size() - 1)];
        victim[keel::test::uniform<std::size_t>(0, 31)] ^= 0x01;
        CHECK_FALSE(ledger::verify_inclusion(index, size, leaf, proof, root));
      }
      const auto old_size = keel::test::uniform<std::uint64_t>(1, size);
      auto cproof = ledger::to_bytes(tree.consistency_proof(old_size, size).value());
      const auto old_root = to_bytes(tree.root(old_size).value());
      REQUIRE(ledger::verify_consistency(old_size, size, old_root, root, cproof));
      if (!cproof.empty()) {
        cproof.back()[0] ^= 0x80;
        CHECK_FALSE(ledger::verify_consistency(old_size, size, old_root, root, cproof));
      }
      // A random valid subtree [start, end) of the tree of `size` leaves.
      const auto width = std::bit_floor(keel::test::uniform<std::uint64_t>(1, size));
      const auto start = width * keel::test::uniform<std::uint64_t>(0, (size - 1) / width);
      const auto end = std::min(size, start + keel::test::uniform<std::uint64_t>(1, width));
      REQUIRE(ledger::is_valid_subtree(start, end));
      ledger::merkle_tree part;
      for (auto i = start; i < end; ++i) part.append(tree.leaf(i).value());
      auto sproof = ledger::to_bytes(tree.subtree_consistency_proof(start, end, size).value());
      REQUIRE(ledger::verify_subtree_consistency(start, end, size, to_bytes(part.root()), root, sproof));
      if (!sproof.empty()) {
        sproof[keel::test::uniform<std::size_t>(0, sproof.size() - 1)][7] ^= 0x04;
        CHECK_FALSE(
            ledger::verify_subtree_consistency(start, end, size, to_bytes(part.root()), root, sproof));
      }
    }
  }

  // Found by clang-tidy's analyzer: an empty range split at bit_floor(0 - 1) = 2^63 and went
  // on to read nodes far outside the tree.
  TEST_CASE("subtree_hash: an empty or reversed range is an error, not a walk outside the tree") {
    ledger::merkle_tree tree;
    std::vector<ledger::tree_hash> leaves;
    for (std::uint8_t i = 0; i < 8; ++i) {
      leaves.push_back(ledger::leaf_hash(keel::bytes_view(&i, 1)));
      tree.append(leaves.back());
    }
    std::uint64_t reads_outside = 0;
    const ledger::node_reader read = [&](unsigned level,
                                         std::uint64_t index) -> keel::result<ledger::tree_hash> {
      if (level > 3 || (index << level) >= 8) {
        ++reads_outside;
        return ledger::errc::sequence_out_of_range;
      }
      ledger::merkle_tree complete;
      for (auto i = index << level; i < (index + 1) << level; ++i) complete.append(leaves[i]);
      return complete.root();
    };
    CHECK(ledger::subtree_hash(read, 0, 8).value() == tree.root(8).value());
    for (const auto& range : {std::pair<std::uint64_t, std::uint64_t>{5, 5}, {0, 0}, {6, 2}}) {
      const auto begin = range.first;
      const auto end = range.second;
      CAPTURE(begin);
      CAPTURE(end);
      const auto h = ledger::subtree_hash(read, begin, end);
      REQUIRE_FALSE(h);
      CHECK(h.error() == ledger::errc::sequence_out_of_range);
    }
    CHECK(reads_outside == 0);
  }

  TEST_CASE("frontier: appends give the tree's roots and complete nodes; it round trips") {
    ledger::merkle_tree tree;
    ledger::merkle_frontier frontier;
    std::map<std::pair<unsigned, std::uint64_t>, ledger::tree_hash> nodes;
    CHECK(frontier.root() == ledger::empty_root());
    for (std::uint64_t i = 0; i < 300; ++i) {
      const auto leaf =
          ledger::leaf_hash(keel::bytes_view(reinterpret_cast<const std::uint8_t*>(&i), sizeof i));
      tree.append(leaf);
      std::vector<ledger::completed_node> completed;
      frontier.append(leaf, completed);
      for (const auto& n : completed) nodes[{n.level, n.index}] = n.hash;
      CHECK(frontier.root() == tree.root());
      auto copy = ledger::merkle_frontier::parse(frontier.size(), frontier.serialize());
      REQUIRE(copy);
      CHECK(copy->root() == tree.root());
    }
    CHECK_FALSE(ledger::merkle_frontier::parse(3, keel::bytes(32)));
    // The stored nodes are all a proof needs.
    const ledger::node_reader read = [&](unsigned level,
                                         std::uint64_t index) -> keel::result<ledger::tree_hash> {
      return nodes.at({level, index});
    };
    for (std::uint64_t size = 1; size <= 300; size += 37)
      for (std::uint64_t index = 0; index < size; index += 11)
        CHECK(ledger::inclusion_proof(read, index, size).value() ==
              tree.inclusion_proof(index, size).value());
    CHECK(ledger::consistency_proof(read, 77, 300).value() == tree.consistency_proof(77, 300).value());
  }

  TEST_CASE("checkpoints: signed, verified with the public key only, JSON round trip") {
    const auto key = keel::ed25519_private_key::generate();
    const auto tree = tree_of_bytes(10);
    const auto c = ledger::checkpoint::sign(10, tree.root(), 1'700'000'000'000'000'000ULL, key);
    CHECK(c.verify(key.public_key()));
    const auto parsed = ledger::checkpoint::from_json(c.to_json());
    REQUIRE(parsed);
    CHECK(parsed->verify(key.public_key()));
    CHECK(parsed->root == c.root);
    auto forged = c;
    forged.tree_size = 11;
    CHECK_FALSE(forged.verify(key.public_key()));
    forged = c;
    forged.root[0] ^= 1;
    CHECK_FALSE(forged.verify(key.public_key()));
    const auto other = keel::ed25519_private_key::generate();
    CHECK_FALSE(c.verify(other.public_key()));
    CHECK_FALSE(ledger::checkpoint::from_json("{\"tree_size\":-1}"));
    CHECK_FALSE(ledger::checkpoint::from_json("not json"));
  }
}
