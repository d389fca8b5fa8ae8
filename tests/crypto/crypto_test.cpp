// keel::crypto beyond the vectors: secret memory, sizes refused with clear errors, tampering
// detected at every byte, and nothing decrypted left behind when a tag does not verify.
#include <keel/crypto.hpp>

#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <string>

#include <support/result.hpp>

namespace crypto = keel::crypto;

TEST_SUITE("unit") {
  TEST_CASE("secret_bytes: random, copied explicitly, compared in constant time, moved, truncated") {
    auto key = crypto::secret_bytes::random(32);
    CHECK(key.size() == 32);
    auto same = key.copy();
    CHECK(same == key);
    same.data()[0] ^= 1U;
    CHECK(!(same == key));
    auto moved = std::move(key);
    CHECK(moved.size() == 32);
    CHECK(key.empty());  // NOLINT(bugprone-use-after-move): a moved-from secret is empty
    moved.truncate(16);
    CHECK(moved.size() == 16);
    CHECK(crypto::secret_bytes::copy_of(keel::as_bytes("abc")).size() == 3);
    CHECK(crypto::secret_bytes().empty());
    // Distinct draws differ (a broken generator returning zeros would not).
    CHECK(!(crypto::secret_bytes::random(32) == crypto::secret_bytes::random(32)));
    CHECK(crypto::equal_constant_time(keel::as_bytes("abc"), keel::as_bytes("abc")));
    CHECK(!crypto::equal_constant_time(keel::as_bytes("abc"), keel::as_bytes("abd")));
    CHECK(!crypto::equal_constant_time(keel::as_bytes("abc"), keel::as_bytes("ab")));
  }

  TEST_CASE(
      "AEAD: round trips for every size up to 300 bytes; any changed byte, nonce, key or AAD is refused") {
    std::mt19937 random(20261203);
    for (const auto algorithm :
         {crypto::aead_algorithm::aes_gcm, crypto::aead_algorithm::chacha20_poly1305}) {
      CAPTURE(crypto::to_string(algorithm));
      const auto key = crypto::secret_bytes::random(32);
      for (std::size_t size = 0; size <= 300; size += size < 40 ? 1 : 37) {
        CAPTURE(size);
        keel::bytes plaintext(size);
        for (auto& b : plaintext) b = static_cast<std::uint8_t>(random());
        const auto nonce = crypto::random_bytes(crypto::aead_nonce_bytes);
        const auto aad = keel::as_bytes("tenant=acme");
        const auto sealed = crypto::seal(algorithm, key.view(), nonce, plaintext, aad).value();
        REQUIRE(sealed.size() == size + crypto::aead_tag_bytes);
        CHECK(crypto::open(algorithm, key.view(), nonce, sealed, aad).value() == plaintext);
        // One flipped bit anywhere.
        for (std::size_t at = 0; at < sealed.size(); at += 1 + sealed.size() / 16) {
          auto changed = sealed;
          changed[at] ^= 0x20U;
          CHECK(crypto::open(algorithm, key.view(), nonce, changed, aad).error() ==
                crypto::errc::authentication_failed);
        }
        CHECK(crypto::open(algorithm, key.view(), nonce, sealed, keel::as_bytes("tenant=other")).error() ==
              crypto::errc::authentication_failed);
        auto other_nonce = nonce;
        other_nonce[0] ^= 1U;
        CHECK(!crypto::open(algorithm, key.view(), other_nonce, sealed, aad));
        CHECK(!crypto::open(algorithm, crypto::secret_bytes::random(32).view(), nonce, sealed, aad));
      }
    }
  }

  TEST_CASE("AEAD: sizes refused before anything runs; a failed open leaves no plaintext in the buffer") {
    const auto key = crypto::secret_bytes::random(32);
    const auto nonce = crypto::random_bytes(12);
    CHECK(crypto::seal(crypto::aead_algorithm::aes_gcm, key.view().first(15), nonce, {}).error() ==
          crypto::errc::invalid_key_size);
    CHECK(crypto::seal(crypto::aead_algorithm::chacha20_poly1305, key.view().first(16), nonce, {}).error() ==
          crypto::errc::invalid_key_size);
    CHECK(crypto::seal(crypto::aead_algorithm::aes_gcm, key.view(), crypto::random_bytes(16), {}).error() ==
          crypto::errc::invalid_nonce_size);
    CHECK(crypto::open(crypto::aead_algorithm::aes_gcm, key.view(), nonce, keel::bytes(15)).error() ==
          crypto::errc::authentication_failed);
    keel::bytes small(10);
    CHECK(crypto::seal_into(crypto::aead_algorithm::aes_gcm, key.view(), nonce, keel::bytes(8), {}, small)
              .error() == crypto::errc::buffer_too_small);

    const std::string secret = "the plaintext must not be left behind";
    auto sealed =
        crypto::seal(crypto::aead_algorithm::aes_gcm, key.view(), nonce, keel::as_bytes(secret)).value();
    sealed.back() ^= 1U;  // the tag
    keel::bytes out(secret.size(), 0xAA);
    CHECK(crypto::open_into(crypto::aead_algorithm::aes_gcm, key.view(), nonce, sealed, {}, out).error() ==
          crypto::errc::authentication_failed);
    CHECK(std::string(out.begin(), out.end()).find("plaintext") == std::string::npos);
    CHECK(out == keel::bytes(secret.size(), 0));
  }

  TEST_CASE("key wrap: round trips, sizes, wrong KEK; HKDF and HMAC limits") {
    const auto kek = crypto::secret_bytes::random(32);
    const auto dek = crypto::secret_bytes::random(32);
    const auto wrapped = crypto::aes_key_wrap(kek.view(), dek.view()).value();
    CHECK(wrapped.size() == 40);
    CHECK(crypto::aes_key_unwrap(kek.view(), wrapped).value() == dek);
    CHECK(crypto::aes_key_unwrap(crypto::secret_bytes::random(32).view(), wrapped).error() ==
          crypto::errc::authentication_failed);
    CHECK(crypto::aes_key_wrap(kek.view(), keel::bytes(12)).error() == crypto::errc::invalid_input_size);
    CHECK(crypto::aes_key_wrap(kek.view().first(20), dek.view()).error() == crypto::errc::invalid_key_size);
    const auto odd = crypto::secret_bytes::random(13);
    const auto padded = crypto::aes_key_wrap_pad(kek.view(), odd.view()).value();
    CHECK(padded.size() == 24);
    CHECK(crypto::aes_key_unwrap_pad(kek.view(), padded).value() == odd);
    CHECK(crypto::aes_key_wrap_pad(kek.view(), {}).error() == crypto::errc::invalid_input_size);

    CHECK(crypto::hkdf(crypto::hash_algorithm::sha256, dek.view(), {}, {}, 255 * 32).value().size() ==
          255 * 32);
    CHECK(crypto::hkdf(crypto::hash_algorithm::sha256, dek.view(), {}, {}, 255 * 32 + 1).error() ==
          crypto::errc::output_too_large);
    const auto tag = crypto::hmac(crypto::hash_algorithm::sha512, kek.view(), keel::as_bytes("data")).value();
    CHECK(tag.size() == 64);
    CHECK(crypto::hmac_verify(crypto::hash_algorithm::sha512, kek.view(), keel::as_bytes("data"),
                              keel::bytes_view(tag).first(16)));
    CHECK(crypto::hmac_verify(crypto::hash_algorithm::sha512, kek.view(), keel::as_bytes("data"),
                              keel::bytes_view(tag).first(15))
              .error() == crypto::errc::invalid_tag_size);
    CHECK(crypto::hmac_verify(crypto::hash_algorithm::sha512, kek.view(), keel::as_bytes("datA"), tag)
              .error() == crypto::errc::authentication_failed);
    for (const auto e : {crypto::errc::invalid_nonce_size, crypto::errc::authentication_failed}) {
      CHECK(keel::error_code(e).message().find("nonce") != std::string::npos);
    }
  }
}

TEST_SUITE("unit") {
  TEST_CASE(
      "HKDF's halves: extract then expand gives what hkdf gives, for several infos from one extraction") {
    for (const auto h : {crypto::hash_algorithm::sha256, crypto::hash_algorithm::sha512}) {
      const auto ikm = crypto::secret_bytes::random(32);
      const auto salt = crypto::random_bytes(32);
      const auto prk = crypto::hkdf_extract(h, ikm.view(), salt).value();
      CHECK(prk.size() == crypto::digest_size(h));
      for (const std::string info : {"", "a", "keel envelope v1 derive key"}) {
        for (const std::size_t length : {std::size_t{16}, std::size_t{32}, std::size_t{100}}) {
          CHECK(crypto::hkdf_expand(h, prk.view(), keel::as_bytes(info), length).value() ==
                crypto::hkdf(h, ikm.view(), salt, keel::as_bytes(info), length).value());
        }
      }
      CHECK(crypto::hkdf_expand(h, prk.view().first(8), {}, 32).error() == crypto::errc::invalid_key_size);
      CHECK(crypto::hkdf_expand(h, prk.view(), {}, 255 * crypto::digest_size(h) + 1).error() ==
            crypto::errc::output_too_large);
    }
  }
}
