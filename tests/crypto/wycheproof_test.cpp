// keel::crypto against every Wycheproof vector of the algorithms it offers (tests/data/wycheproof):
// valid vectors must give exactly the expected bytes both ways, invalid ones must be refused, and
// "acceptable" ones may go either way. keel's one policy departure is counted, not hidden: AES-GCM
// takes 96-bit nonces only, so valid vectors with other nonce sizes must be refused with
// errc::invalid_nonce_size.
#include <keel/core/bytes.hpp>
#include <keel/crypto.hpp>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>

#include <support/result.hpp>

namespace {

namespace crypto = keel::crypto;

boost::json::value load(const std::string& name) {
  std::ifstream in(std::string(KEEL_TEST_DATA_DIR) + "/wycheproof/" + name);
  REQUIRE_MESSAGE(in, "missing test vectors: tests/data/wycheproof/" << name);
  std::stringstream text;
  text << in.rdbuf();
  return boost::json::parse(text.str());
}

keel::bytes hex(const boost::json::value& test, std::string_view field) {
  return keel::from_hex(std::string_view(test.at(field).as_string())).value();
}

std::string result_of(const boost::json::value& test) {
  return std::string(test.at("result").as_string());
}

// Every test of every group of a file, with the group.
template <class Fn>
std::size_t each_test(const boost::json::value& file, Fn fn) {
  std::size_t n = 0;
  for (const auto& group : file.at("testGroups").as_array()) {
    for (const auto& test : group.at("tests").as_array()) {
      CAPTURE(test.at("tcId").as_int64());
      fn(group, test);
      ++n;
    }
  }
  return n;
}

void check_aead(const std::string& file, crypto::aead_algorithm algorithm, std::size_t expected_tests) {
  const auto vectors = load(file);
  std::size_t policy_refusals = 0;
  const auto count = each_test(vectors, [&](const boost::json::value&, const boost::json::value& t) {
    const auto key = hex(t, "key"), iv = hex(t, "iv"), aad = hex(t, "aad"), msg = hex(t, "msg");
    auto sealed = hex(t, "ct");
    const auto tag = hex(t, "tag");
    sealed.insert(sealed.end(), tag.begin(), tag.end());
    const auto opened = crypto::open(algorithm, key, iv, sealed, aad);
    const auto expected = result_of(t);
    if (iv.size() != crypto::aead_nonce_bytes) {
      // keel's policy: 96-bit nonces only, whatever the vector says.
      CHECK(opened.error() == crypto::errc::invalid_nonce_size);
      CHECK(crypto::seal(algorithm, key, iv, msg, aad).error() == crypto::errc::invalid_nonce_size);
      if (expected == "valid") ++policy_refusals;
      return;
    }
    if (expected == "valid") {
      REQUIRE(opened);
      CHECK(*opened == msg);
      CHECK(crypto::seal(algorithm, key, iv, msg, aad).value() == sealed);
    } else {
      CHECK(expected == "invalid");
      CHECK(!opened);
    }
  });
  CHECK(count == expected_tests);
  MESSAGE(file << ": " << count << " vectors, " << policy_refusals
               << " valid ones refused for a nonce other than 96 bits");
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("Wycheproof AES-GCM: every vector (valid ones with non-96-bit nonces refused by policy)") {
    check_aead("aes_gcm_test.json", crypto::aead_algorithm::aes_gcm, 316);
  }

  TEST_CASE("Wycheproof ChaCha20-Poly1305: every vector") {
    check_aead("chacha20_poly1305_test.json", crypto::aead_algorithm::chacha20_poly1305, 325);
  }

  TEST_CASE("Wycheproof AES key wrap (RFC 3394) and with padding (RFC 5649): every vector") {
    for (const bool pad : {false, true}) {
      const auto vectors = load(pad ? "aes_kwp_test.json" : "aes_wrap_test.json");
      std::size_t acceptable = 0;
      const auto count = each_test(vectors, [&](const boost::json::value&, const boost::json::value& t) {
        const auto kek = hex(t, "key"), msg = hex(t, "msg"), ct = hex(t, "ct");
        const auto unwrapped = pad ? crypto::aes_key_unwrap_pad(kek, ct) : crypto::aes_key_unwrap(kek, ct);
        const auto expected = result_of(t);
        if (expected == "valid") {
          REQUIRE(unwrapped);
          CHECK(keel::bytes(unwrapped->view().begin(), unwrapped->view().end()) == msg);
          CHECK((pad ? crypto::aes_key_wrap_pad(kek, msg) : crypto::aes_key_wrap(kek, msg)).value() == ct);
        } else if (expected == "invalid") {
          CHECK(!unwrapped);
        } else {
          // "acceptable": either outcome is right; whichever keel gives must be consistent.
          CHECK(expected == "acceptable");
          ++acceptable;
          if (unwrapped) CHECK(keel::bytes(unwrapped->view().begin(), unwrapped->view().end()) == msg);
        }
      });
      CHECK(count == (pad ? 254U : 165U));
      MESSAGE(std::string(pad ? "aes_kwp" : "aes_wrap")
              << ": " << count << " vectors, " << acceptable << " acceptable");
    }
  }

  TEST_CASE("Wycheproof HKDF-SHA-256 and HKDF-SHA-512: every vector") {
    for (const auto h : {crypto::hash_algorithm::sha256, crypto::hash_algorithm::sha512}) {
      const auto vectors =
          load(h == crypto::hash_algorithm::sha256 ? "hkdf_sha256_test.json" : "hkdf_sha512_test.json");
      const auto count = each_test(vectors, [&](const boost::json::value&, const boost::json::value& t) {
        const auto size = static_cast<std::size_t>(t.at("size").as_int64());
        auto derived = crypto::hkdf(h, hex(t, "ikm"), hex(t, "salt"), hex(t, "info"), size);
        if (result_of(t) == "valid") {
          REQUIRE(derived);
          CHECK(keel::bytes(derived->view().begin(), derived->view().end()) == hex(t, "okm"));
        } else {
          CHECK(derived.error() == crypto::errc::output_too_large);
        }
      });
      CHECK(count == (h == crypto::hash_algorithm::sha256 ? 86U : 83U));
    }
  }

  TEST_CASE("Wycheproof HMAC-SHA-256 and HMAC-SHA-512: every vector, full and truncated tags") {
    for (const auto h : {crypto::hash_algorithm::sha256, crypto::hash_algorithm::sha512}) {
      const auto vectors =
          load(h == crypto::hash_algorithm::sha256 ? "hmac_sha256_test.json" : "hmac_sha512_test.json");
      const auto count = each_test(vectors, [&](const boost::json::value&, const boost::json::value& t) {
        const auto key = hex(t, "key"), msg = hex(t, "msg"), tag = hex(t, "tag");
        const auto verified = crypto::hmac_verify(h, key, msg, tag);
        if (result_of(t) == "valid") {
          CHECK(verified);
          const auto full = crypto::hmac(h, key, msg).value();
          CHECK(keel::bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(tag.size())) == tag);
        } else {
          CHECK(!verified);
        }
      });
      CHECK(count == 174U);
    }
  }
}
