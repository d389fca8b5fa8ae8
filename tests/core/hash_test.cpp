#include <keel/core/ed25519.hpp>
#include <keel/core/hash.hpp>
#include <keel/core/xxhash.hpp>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <support/random.hpp>

using namespace keel;

namespace {
bytes hex(std::string_view text) {
  return from_hex(text).value();
}

boost::json::value load_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot open " << path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return boost::json::parse(buffer.str());
}

std::string_view str(const boost::json::value& v) {
  const auto& s = v.as_string();
  return {s.data(), s.size()};
}
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("sha256 matches FIPS 180-2 vectors") {
    CHECK(to_hex(sha256(as_bytes(""))) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(to_hex(sha256(as_bytes("abc"))) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(to_hex(sha256(as_bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))) ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    sha256_hasher hasher;
    const std::string thousand(1000, 'a');
    for (int i = 0; i < 1000; ++i) hasher.update(as_bytes(thousand));
    CHECK(to_hex(hasher.finish()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    // finish() resets, so the hasher is reusable.
    CHECK(to_hex(hasher.update(as_bytes("abc")).finish()) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  }

  TEST_CASE("incremental sha256 equals one-shot for random splits") {
    for (int round = 0; round < 200; ++round) {
      bytes data(test::uniform<std::size_t>(0, 300));
      for (auto& b : data) b = test::uniform<std::uint8_t>(0, 255);
      sha256_hasher hasher;
      std::size_t at = 0;
      while (at < data.size()) {
        const auto n = test::uniform<std::size_t>(0, data.size() - at);
        hasher.update(bytes_view(data).subspan(at, n));
        at += n;
      }
      REQUIRE(hasher.finish() == sha256(data));
    }
  }

  TEST_CASE("sha256 is consistent across threads") {
    const auto expected = sha256(as_bytes("keel"));
    std::vector<std::thread> threads;
    std::atomic<int> mismatches{0};
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 1000; ++i) {
          if (sha256(as_bytes("keel")) != expected) ++mismatches;
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(mismatches == 0);
  }

  TEST_CASE("hmac_sha256 matches RFC 4231") {
    CHECK(to_hex(hmac_sha256(as_bytes("Jefe"), as_bytes("what do ya want for nothing?"))) ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    const bytes key(131, 0xaa);  // test case 6: a key longer than the block size
    CHECK(to_hex(hmac_sha256(key, as_bytes("Test Using Larger Than Block-Size Key - Hash Key First"))) ==
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    CHECK(to_hex(hmac_sha256({}, {})) == "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
  }

  TEST_CASE("hmac_sha256 passes every Wycheproof vector") {
    const auto suite = load_json(KEEL_TEST_DATA_DIR "/wycheproof/hmac_sha256_test.json");
    int valid = 0, invalid = 0;
    for (const auto& group : suite.at("testGroups").as_array()) {
      const auto tag_bytes = static_cast<std::size_t>(group.at("tagSize").as_int64() / 8);
      for (const auto& vector : group.at("tests").as_array()) {
        CAPTURE(vector.at("tcId").as_int64());
        const auto key = hex(str(vector.at("key")));
        const auto message = hex(str(vector.at("msg")));
        const auto tag = hex(str(vector.at("tag")));
        const bool expect_valid = str(vector.at("result")) == "valid";
        CHECK(hmac_sha256_verify(key, message, tag) == expect_valid);
        if (expect_valid) {
          CHECK(to_hex(bytes_view(hmac_sha256(key, message)).first(tag_bytes)) == to_hex(tag));
          ++valid;
        } else {
          ++invalid;
        }
      }
    }
    CHECK(valid == 66);
    CHECK(invalid == 108);
  }

  TEST_CASE("hmac_sha256_verify refuses tags that are too short or too long") {
    const auto tag = hmac_sha256(as_bytes("k"), as_bytes("m"));
    CHECK(hmac_sha256_verify(as_bytes("k"), as_bytes("m"), tag));
    CHECK(hmac_sha256_verify(as_bytes("k"), as_bytes("m"), bytes_view(tag).first(16)));
    CHECK_FALSE(hmac_sha256_verify(as_bytes("k"), as_bytes("m"), bytes_view(tag).first(15)));
    CHECK_FALSE(hmac_sha256_verify(as_bytes("k"), as_bytes("m"), {}));
    bytes longer(tag.begin(), tag.end());
    longer.push_back(0);
    CHECK_FALSE(hmac_sha256_verify(as_bytes("k"), as_bytes("m"), longer));
  }

  TEST_CASE("ed25519 matches RFC 8032 section 7.1") {
    struct vector {
      std::string_view seed, public_key, message, signature;
    };
    const vector vectors[] = {
        {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
         "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
         "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25"
         "bf5f0595bbe24655141438e7a100b"},
        {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
         "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
         "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387"
         "b2eaeb4302aeeb00d291612bb0c00"},
        {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
         "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
         "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7"
         "c15e9716ed28dc027beceea1ec40a"},
    };
    for (const auto& v : vectors) {
      CAPTURE(v.public_key);
      const auto key = ed25519_private_key::from_seed(hex(v.seed)).value();
      CHECK(to_hex(key.public_key().bytes) == v.public_key);
      CHECK(to_hex(key.seed()) == v.seed);
      const auto message = hex(v.message);
      CHECK(to_hex(key.sign(message)) == v.signature);
      const auto public_key = ed25519_public_key::from_bytes(hex(v.public_key)).value();
      CHECK(public_key.verify(message, hex(v.signature)));
    }
  }

  TEST_CASE("ed25519 rejects tampered messages, signatures and keys") {
    const auto key = ed25519_private_key::generate();
    const auto public_key = key.public_key();
    const auto message = as_bytes("transfer 100 from A to B");
    const auto signature = key.sign(message);
    CHECK(public_key.verify(message, signature));

    CHECK_FALSE(public_key.verify(as_bytes("transfer 900 from A to B"), signature));
    for (std::size_t i = 0; i < signature.size(); i += 7) {
      auto bad = signature;
      bad[i] ^= 0x01;
      CHECK_FALSE(public_key.verify(message, bad));
    }
    CHECK_FALSE(public_key.verify(message, bytes_view(signature).first(63)));
    CHECK_FALSE(ed25519_private_key::generate().public_key().verify(message, signature));
    CHECK(ed25519_public_key::from_bytes(bytes(31)).error() == errc::invalid_key_size);
    CHECK(ed25519_private_key::from_seed(bytes(33)).error() == errc::invalid_key_size);
    // A round trip through the seed gives back the same key.
    CHECK(ed25519_private_key::from_seed(key.seed()).value().public_key() == public_key);
  }

  TEST_CASE("xxh3 matches the reference values and streams") {
    CHECK(xxh3_64(as_bytes("")) == 0x2D06800538D394C2ULL);
    CHECK(xxh3_128(as_bytes("")) == xxh128_hash{0x6001C324468D497FULL, 0x99AA06D3014798D8ULL});
    CHECK(xxh3_64(as_bytes("keel"), 1) != xxh3_64(as_bytes("keel"), 2));
    for (int round = 0; round < 100; ++round) {
      bytes data(test::uniform<std::size_t>(0, 2000));
      for (auto& b : data) b = test::uniform<std::uint8_t>(0, 255);
      const auto seed = test::uniform<std::uint64_t>(0, ~std::uint64_t{0});
      xxh3_64_hasher hasher(seed);
      const auto half = data.size() / 2;
      hasher.update(bytes_view(data).first(half)).update(bytes_view(data).subspan(half));
      REQUIRE(hasher.digest() == xxh3_64(data, seed));
    }
  }
}
