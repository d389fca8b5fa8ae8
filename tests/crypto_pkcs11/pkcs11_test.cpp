// keel::crypto_pkcs11 against a real SoftHSM2 token, a new one per test case in a temporary
// directory: both mechanisms, tampering and a changed context refused, the token's errors kept,
// rotation to a new key, envelopes wrapped by the token beside a local keyring, and concurrent
// callers sharing the session pool.
#include <keel/crypto.hpp>
#include <keel/crypto_pkcs11.hpp>

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <support/result.hpp>
#include <support/softhsm.hpp>

namespace crypto = keel::crypto;
using keel::test::softhsm_token;

namespace {

constexpr unsigned long ckr_pin_incorrect = 0xa0;  // CKR_PIN_INCORRECT, from the PKCS#11 standard

std::unique_ptr<crypto::pkcs11_kms> open_with_new_key(
    const softhsm_token& token, const std::string& label,
    std::optional<crypto::pkcs11_mechanism> mechanism = {}) {
  REQUIRE(crypto::pkcs11_kms::generate_key(token.options(), label));
  auto options = token.options(label);
  options.mechanism = mechanism;
  auto opened = crypto::pkcs11_kms::open(std::move(options));
  REQUIRE(opened);
  return std::move(*opened);
}

// Round trip, then every way the stored form or its context can be wrong.
void check_wrapping(crypto::pkcs11_kms& hsm) {
  const auto data_key = crypto::secret_bytes::random(32);
  const auto aad = keel::as_bytes("tenant=acme");
  auto wrapped = hsm.wrap(data_key.view(), aad);
  REQUIRE(wrapped);
  CHECK(wrapped->provider == "pkcs11");
  CHECK(wrapped->key_id == "kek-1");
  // The token's key never wraps to the data key's bytes in the clear.
  CHECK(std::search(wrapped->wrapped.begin(), wrapped->wrapped.end(), data_key.view().begin(),
                    data_key.view().end()) == wrapped->wrapped.end());
  auto unwrapped = hsm.unwrap(*wrapped, aad);
  REQUIRE(unwrapped);
  CHECK(*unwrapped == data_key);
  // Two wraps of one key differ (a fresh IV each time, or the fresh session object).
  if (hsm.mechanism() == crypto::pkcs11_mechanism::aes_gcm)
    CHECK(hsm.wrap(data_key.view(), aad)->wrapped != wrapped->wrapped);

  CHECK(hsm.unwrap(*wrapped, keel::as_bytes("tenant=globex")).error() == crypto::errc::authentication_failed);
  CHECK(hsm.unwrap(*wrapped, {}).error() == crypto::errc::authentication_failed);
  for (std::size_t i = 1; i < wrapped->wrapped.size(); ++i) {
    auto changed = *wrapped;
    changed.wrapped[i] ^= 0x01U;
    INFO("byte " << i);
    CHECK(hsm.unwrap(changed, aad).error() == crypto::errc::authentication_failed);
  }
  for (std::size_t size = 0; size < wrapped->wrapped.size(); size += 7) {
    auto truncated = *wrapped;
    truncated.wrapped.resize(size);
    CHECK(!hsm.unwrap(truncated, aad));
  }
  auto moved = *wrapped;
  moved.key_id = "kek-elsewhere";
  CHECK(hsm.unwrap(moved, aad).error() == crypto::errc::unknown_key);
}

}  // namespace

TEST_SUITE("pkcs11") {
  TEST_CASE("GCM: chosen by the probe; round trip; a changed byte, context or key id is refused") {
    const softhsm_token token;
    auto hsm = open_with_new_key(token, "kek-1");
    CHECK(hsm->mechanism() == crypto::pkcs11_mechanism::aes_gcm);
    check_wrapping(*hsm);
  }

  TEST_CASE("key wrap with padding: the context bound by the HMAC beside the wrapped key") {
    const softhsm_token token;
    auto hsm = open_with_new_key(token, "kek-1", crypto::pkcs11_mechanism::aes_key_wrap_pad);
    CHECK(hsm->mechanism() == crypto::pkcs11_mechanism::aes_key_wrap_pad);
    check_wrapping(*hsm);
    // A GCM provider on the same key reads what the key-wrap one wrote: the form says which.
    auto gcm = crypto::pkcs11_kms::open(token.options("kek-1"));
    REQUIRE(gcm);
    const auto data_key = crypto::secret_bytes::random(32);
    auto wrapped = hsm->wrap(data_key.view(), keel::as_bytes("x"));
    REQUIRE(wrapped);
    CHECK((*gcm)->unwrap(*wrapped, keel::as_bytes("x")).value() == data_key);
  }

  TEST_CASE("envelopes: wrapped by the token and a local keyring at once; either opens them alone") {
    const softhsm_token token;
    auto hsm = open_with_new_key(token, "kek-1");
    crypto::keyring ring("break-glass");
    ring.rotate();
    std::array<crypto::kms*, 2> both{hsm.get(), &ring};
    const crypto::encryption_context context{{"tenant", "acme"}, {"table", "orders"}};
    const auto plaintext = keel::as_bytes("card ending 4242");
    auto sealed = crypto::encrypt(both, plaintext, context);
    REQUIRE(sealed);
    for (crypto::kms* alone : both) {
      std::array<crypto::kms*, 1> one{alone};
      auto opened = crypto::decrypt(one, *sealed, {.expected_context = {{"tenant", "acme"}}});
      REQUIRE(opened);
      CHECK(keel::bytes(plaintext.begin(), plaintext.end()) == opened->plaintext);
      CHECK(opened->used.provider == alone->provider());
      CHECK(crypto::decrypt(one, *sealed, {.expected_context = {{"tenant", "globex"}}}).error() ==
            crypto::errc::context_mismatch);
    }
    // Framed, through the token alone.
    std::array<crypto::kms*, 1> token_only{hsm.get()};
    const keel::bytes large(200'000, 0x5a);
    auto framed = crypto::encrypt(token_only, large, context, {.frame_size = 65'536});
    REQUIRE(framed);
    CHECK(crypto::decrypt(token_only, *framed).value().plaintext == large);
  }

  TEST_CASE("rotation: a new key in the token wraps new envelopes; old ones open, and rewrap moves them") {
    const softhsm_token token;
    auto first = open_with_new_key(token, "kek-1");
    std::array<crypto::kms*, 1> with_first{first.get()};
    auto old_envelope = crypto::encrypt(with_first, keel::as_bytes("old"), {{"k", "v"}});
    REQUIRE(old_envelope);

    CHECK(crypto::pkcs11_kms::generate_key(token.options(), "kek-1").error() == crypto::errc::key_exists);
    auto second = open_with_new_key(token, "kek-2");
    std::array<crypto::kms*, 1> with_second{second.get()};
    // Unwrapping uses the key named in the envelope, so the new provider opens the old envelope.
    auto opened = crypto::decrypt(with_second, *old_envelope);
    REQUIRE(opened);
    CHECK(opened->used.key_id == "kek-1");
    auto rewrapped = crypto::rewrap(with_second, with_second, *old_envelope);
    REQUIRE(rewrapped);
    auto header = crypto::read_header(*rewrapped);
    REQUIRE(header);
    REQUIRE(header->data_keys.size() == 1);
    CHECK(header->data_keys[0].key_id == "kek-2");
    CHECK(crypto::decrypt(with_second, *rewrapped).value().plaintext == keel::bytes{'o', 'l', 'd'});
  }

  TEST_CASE("errors say what is wrong and keep the token's CKR value") {
    const softhsm_token token;
    REQUIRE(crypto::pkcs11_kms::generate_key(token.options(), "kek-1"));

    auto wrong_pin = token.options();
    wrong_pin.pin = crypto::secret_bytes::copy_of(keel::as_bytes("9999"));
    auto refused = crypto::pkcs11_kms::open(std::move(wrong_pin));
    REQUIRE(!refused);
    CHECK(refused.error().category() == crypto::pkcs11_category());
    CHECK(static_cast<unsigned long>(refused.error().value()) == ckr_pin_incorrect);
    CHECK(refused.error().message().find("CKR_PIN_INCORRECT") != std::string::npos);

    auto no_token = token.options();
    no_token.token_label = "no-such-token";
    CHECK(crypto::pkcs11_kms::open(std::move(no_token)).error() == crypto::errc::pkcs11_token_not_found);

    auto no_module = token.options();
    no_module.module = "/nonexistent/libpkcs11.so";
    CHECK(crypto::pkcs11_kms::open(std::move(no_module)).error() == crypto::errc::pkcs11_module_unavailable);

    CHECK(crypto::pkcs11_kms::open(token.options("no-such-key")).error() == crypto::errc::unknown_key);

    auto hsm = crypto::pkcs11_kms::open(token.options());
    REQUIRE(hsm);
    const crypto::encrypted_data_key from_keyring{"local", "kek-1", keel::bytes(60, 0)};
    CHECK((*hsm)->unwrap(from_keyring, {}).error() == crypto::errc::unknown_key);
  }

  TEST_CASE("concurrent callers share a pool of two sessions; every wrap unwraps") {
    const softhsm_token token;
    REQUIRE(crypto::pkcs11_kms::generate_key(token.options(), "kek-1"));
    auto options = token.options();
    options.max_sessions = 2;
    auto hsm = crypto::pkcs11_kms::open(std::move(options));
    REQUIRE(hsm);
    std::atomic<int> good{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        const std::string aad = "thread " + std::to_string(t);
        for (int i = 0; i < 50; ++i) {
          const auto key = crypto::secret_bytes::random(32);
          auto wrapped = (*hsm)->wrap(key.view(), keel::as_bytes(aad));
          if (!wrapped) continue;
          auto back = (*hsm)->unwrap(*wrapped, keel::as_bytes(aad));
          if (back && *back == key) good.fetch_add(1);
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(good.load() == 200);
  }
}
