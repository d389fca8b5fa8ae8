// Why the envelope carries a key commitment: AES-GCM is not committing, so one ciphertext can
// be made to verify under two keys. This test does it — solving GHASH's linear equation for one
// free block — first for a bare AES-GCM ciphertext (keel::crypto::open accepts it under both
// keys, with different plaintexts), then for a whole envelope holding data keys for two
// recipients whose header tag and body both verify under either recipient's derived key. The
// first recipient reads it; the second is stopped by the commitment, and only by it.
#include <keel/core/byte_io.hpp>
#include <keel/crypto.hpp>

#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <support/result.hpp>

namespace crypto = keel::crypto;

namespace {

// An element of GF(2^128) in GCM's bit order: bytes 0..7 in hi, 8..15 in lo, big-endian.
struct gf {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend gf operator^(gf a, gf b) { return {a.hi ^ b.hi, a.lo ^ b.lo}; }
  friend bool operator==(gf, gf) = default;
};

gf gf_of(const std::uint8_t* block) {
  return {keel::load_be<std::uint64_t>(block), keel::load_be<std::uint64_t>(block + 8)};
}

void store(gf x, std::uint8_t* block) {
  keel::store_be<std::uint64_t>(block, x.hi);
  keel::store_be<std::uint64_t>(block + 8, x.lo);
}

// The multiplication of NIST SP 800-38D, 6.3.
gf mul(gf x, gf y) {
  gf z{};
  gf v = y;
  for (int i = 0; i < 128; ++i) {
    const bool bit = i < 64 ? ((x.hi >> (63 - i)) & 1U) != 0 : ((x.lo >> (127 - i)) & 1U) != 0;
    if (bit) z = z ^ v;
    const bool carry = (v.lo & 1U) != 0;
    v.lo = (v.lo >> 1) | (v.hi << 63);
    v.hi >>= 1;
    if (carry) v.hi ^= 0xE100000000000000ULL;
  }
  return z;
}

gf power(gf x, unsigned n) {
  gf result{0x8000000000000000ULL, 0};  // the field's one
  for (unsigned i = 0; i < n; ++i) result = mul(result, x);
  return result;
}

// x^(2^128 - 2) = x^-1: square and multiply over the exponent's 127 ones and final zero.
gf inverse(gf x) {
  gf result{0x8000000000000000ULL, 0};
  gf base = x;
  for (int bit = 1; bit < 128; ++bit) {  // exponent bits 1..127 are one, bit 0 is zero
    base = mul(base, base);
    result = mul(result, base);
  }
  return result;
}

std::array<std::uint8_t, 16> aes_block(keel::bytes_view key, const std::array<std::uint8_t, 16>& in) {
  std::array<std::uint8_t, 16> out{};
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int n = 0;
  REQUIRE(EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), nullptr, key.data(), nullptr) == 1);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  REQUIRE(EVP_EncryptUpdate(ctx, out.data(), &n, in.data(), 16) == 1);
  EVP_CIPHER_CTX_free(ctx);
  return out;
}

gf hash_key(keel::bytes_view key) {
  return gf_of(aes_block(key, {}).data());
}

// E_K(J0) for a 96-bit nonce: the mask GCM puts on the tag.
gf tag_mask(keel::bytes_view key, keel::bytes_view nonce) {
  std::array<std::uint8_t, 16> j0{};
  std::memcpy(j0.data(), nonce.data(), 12);
  j0[15] = 1;
  return gf_of(aes_block(key, j0).data());
}

// GHASH's input blocks: the AAD zero-padded, the ciphertext zero-padded, the lengths.
std::vector<gf> ghash_blocks(keel::bytes_view aad, keel::bytes_view ciphertext) {
  std::vector<gf> out;
  for (const keel::bytes_view part : {aad, ciphertext}) {
    for (std::size_t at = 0; at < part.size(); at += 16) {
      std::array<std::uint8_t, 16> block{};
      std::memcpy(block.data(), part.data() + at, std::min<std::size_t>(16, part.size() - at));
      out.push_back(gf_of(block.data()));
    }
  }
  out.push_back(
      {static_cast<std::uint64_t>(aad.size()) * 8, static_cast<std::uint64_t>(ciphertext.size()) * 8});
  return out;
}

// Rewrites the 16 bytes at `free_at` of aad ‖ ciphertext (16-aligned in its part) so that the
// GCM tag is the same under both keys, and returns that tag.
std::array<std::uint8_t, 16> collide(keel::bytes_view k1, keel::bytes_view k2, keel::bytes_view nonce,
                                     keel::bytes& aad, keel::bytes& ciphertext, bool free_in_aad,
                                     std::size_t free_at) {
  REQUIRE(free_at % 16 == 0);
  const gf h1 = hash_key(k1), h2 = hash_key(k2);
  const auto free_index = free_in_aad ? free_at / 16 : (aad.size() + 15) / 16 + free_at / 16;
  auto* free_bytes = (free_in_aad ? aad.data() : ciphertext.data()) + free_at;
  std::memset(free_bytes, 0, 16);
  const auto blocks = ghash_blocks(aad, ciphertext);
  const auto m = static_cast<unsigned>(blocks.size());
  // tag_i = sum_j X_j * H_i^(m - j) ^ mask_i; equal tags: sum_j X_j * D_j = mask1 ^ mask2.
  gf rest = tag_mask(k1, nonce) ^ tag_mask(k2, nonce);
  for (unsigned j = 0; j < m; ++j) {
    if (j == free_index) continue;
    rest = rest ^ mul(blocks[j], power(h1, m - j) ^ power(h2, m - j));
  }
  const auto exponent = m - static_cast<unsigned>(free_index);
  const gf x = mul(rest, inverse(power(h1, exponent) ^ power(h2, exponent)));
  store(x, free_bytes);
  gf tag = tag_mask(k1, nonce);
  const auto final_blocks = ghash_blocks(aad, ciphertext);
  for (unsigned j = 0; j < m; ++j) tag = tag ^ mul(final_blocks[j], power(h1, m - j));
  std::array<std::uint8_t, 16> out{};
  store(tag, out.data());
  return out;
}

keel::bytes sealed_of(const keel::bytes& ciphertext, const std::array<std::uint8_t, 16>& tag) {
  keel::bytes out = ciphertext;
  out.insert(out.end(), tag.begin(), tag.end());
  return out;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("GF(2^128) arithmetic agrees with AES-GCM, and inverses invert") {
    const auto key = crypto::secret_bytes::random(32);
    const auto nonce = crypto::random_bytes(12);
    const keel::bytes aad = crypto::random_bytes(37);
    keel::bytes plaintext = crypto::random_bytes(50);
    auto sealed = crypto::seal(crypto::aead_algorithm::aes_gcm, key.view(), nonce, plaintext, aad).value();
    const keel::bytes ciphertext(sealed.begin(), sealed.end() - 16);
    const gf h = hash_key(key.view());
    gf tag = tag_mask(key.view(), nonce);
    const auto blocks = ghash_blocks(aad, ciphertext);
    for (unsigned j = 0; j < blocks.size(); ++j)
      tag = tag ^ mul(blocks[j], power(h, static_cast<unsigned>(blocks.size()) - j));
    CHECK(tag == gf_of(sealed.data() + ciphertext.size()));
    CHECK(mul(h, inverse(h)) == gf{0x8000000000000000ULL, 0});
  }

  TEST_CASE("one AES-GCM ciphertext crafted to verify under two keys: plain GCM accepts it twice") {
    const auto k1 = crypto::secret_bytes::random(32);
    const auto k2 = crypto::secret_bytes::random(32);
    const auto nonce = crypto::random_bytes(12);
    keel::bytes aad = keel::bytes(keel::as_bytes("header").begin(), keel::as_bytes("header").end());
    keel::bytes ciphertext = crypto::random_bytes(64);
    const auto tag = collide(k1.view(), k2.view(), nonce, aad, ciphertext, false, 16);
    const auto sealed = sealed_of(ciphertext, tag);
    auto under_1 = crypto::open(crypto::aead_algorithm::aes_gcm, k1.view(), nonce, sealed, aad);
    auto under_2 = crypto::open(crypto::aead_algorithm::aes_gcm, k2.view(), nonce, sealed, aad);
    REQUIRE(under_1);
    REQUIRE(under_2);
    CHECK(*under_1 != *under_2);  // two readers, two different messages, both "authentic"
  }

  TEST_CASE("an envelope crafted to open for two recipients: the key commitment stops the second") {
    for (const std::uint16_t suite :
         {crypto::suite_aes256_gcm_hkdf_sha512_commit, crypto::suite_aes256_gcm_aes_kdf_commit}) {
      CAPTURE(suite);
      const bool suite1 = suite == crypto::suite_aes256_gcm_hkdf_sha512_commit;
      // The recipients' keyrings, and a data key for each, wrapped by its own keyring.
      crypto::keyring alice("alice");
      crypto::keyring bob("bob");
      alice.rotate();
      bob.rotate();
      const auto message_id = crypto::random_bytes(suite1 ? 32 : 12);
      const auto key_a = crypto::secret_bytes::random(32);
      const auto key_b = crypto::secret_bytes::random(32);
      // The derivations docs/crypto.md gives. Suite 1: HKDF-SHA-512 with the message id as salt.
      auto derive = [&](const crypto::secret_bytes& data_key, std::string_view label) {
        auto prk = crypto::hkdf_extract(crypto::hash_algorithm::sha512, data_key.view(), message_id).value();
        return crypto::hkdf_expand(crypto::hash_algorithm::sha512, prk.view(), keel::as_bytes(label), 32)
            .value();
      };
      // Suite 2: the first halves of AES-256 under the data key of id || i (32-bit little-endian),
      // i = 0..3; the commitment HMAC-SHA-256 of the data key over a label.
      auto derive_suite2 = [&](const crypto::secret_bytes& data_key) {
        auto out = crypto::secret_bytes(32);
        for (std::uint8_t i = 0; i < 4; ++i) {
          std::array<std::uint8_t, 16> block{};
          std::memcpy(block.data(), message_id.data(), 12);
          block[12] = i;
          const auto encrypted = aes_block(data_key.view(), block);
          std::memcpy(out.data() + 8 * i, encrypted.data(), 8);
        }
        return out;
      };
      const auto content_a = suite1 ? derive(key_a, "keel envelope v1 derive key") : derive_suite2(key_a);
      const auto content_b = suite1 ? derive(key_b, "keel envelope v1 derive key") : derive_suite2(key_b);
      const auto commit_a = suite1 ? derive(key_a, "keel envelope v1 commit key")
                                   : crypto::secret_bytes::copy_of(
                                         crypto::hmac(crypto::hash_algorithm::sha256, key_a.view(),
                                                      keel::as_bytes("keel envelope suite 2 key commitment"))
                                             .value());

      // The context, serialised as the envelope stores it (and as providers authenticate it).
      const crypto::encryption_context context{{"tenant", "acme"}};
      keel::bytes context_bytes;
      keel::byte_writer cw(context_bytes);
      cw.be<std::uint16_t>(1);
      cw.be<std::uint16_t>(6);
      cw.append(keel::as_bytes("tenant"));
      cw.be<std::uint16_t>(4);
      cw.append(keel::as_bytes("acme"));
      auto wrapped_a = alice.wrap(key_a.view(), context_bytes).value();
      auto wrapped_b = bob.wrap(key_b.view(), context_bytes).value();

      // The header, by the documented layout, with a third data key of a provider nobody has: its
      // wrapped bytes hold the free block, 16-aligned in the header.
      keel::bytes header(keel::as_bytes("KENV").begin(), keel::as_bytes("KENV").end());
      keel::byte_writer w(header);
      w.u8(1);
      w.be<std::uint16_t>(suite);
      w.append(message_id);
      w.append(context_bytes);
      w.u8(3);
      for (const auto* k : {&wrapped_a, &wrapped_b}) {
        w.u8(static_cast<std::uint8_t>(k->provider.size()));
        w.append(keel::as_bytes(k->provider));
        w.be<std::uint16_t>(static_cast<std::uint16_t>(k->key_id.size()));
        w.append(keel::as_bytes(k->key_id));
        w.be<std::uint16_t>(static_cast<std::uint16_t>(k->wrapped.size()));
        w.append(k->wrapped);
      }
      w.u8(3);
      w.append(keel::as_bytes("pad"));
      const std::size_t key_id_at = header.size() + 2;
      const std::size_t wrapped_at_unpadded = key_id_at + 2;  // after a key id of length 0
      const std::size_t key_id_length = (16 - wrapped_at_unpadded % 16) % 16;
      w.be<std::uint16_t>(static_cast<std::uint16_t>(key_id_length));
      w.append(keel::bytes(key_id_length, 'x'));
      w.be<std::uint16_t>(32);
      const std::size_t free_at = header.size();
      REQUIRE(free_at % 16 == 0);
      w.append(keel::bytes(32, 0));
      w.u8(1);                    // a single body
      w.be<std::uint32_t>(0);     // no frames
      w.append(commit_a.view());  // Alice's commitment: the only one a header can hold
      keel::bytes no_ciphertext;
      const std::array<std::uint8_t, 12> nonce0{};
      const auto header_tag =
          collide(content_a.view(), content_b.view(), nonce0, header, no_ciphertext, true, free_at);

      // The body: one sealed part, its tag colliding too.
      keel::bytes body_aad(message_id.begin(), message_id.end());
      keel::byte_writer bw(body_aad);
      bw.append(keel::as_bytes("single"));
      bw.be<std::uint32_t>(1);
      bw.be<std::uint64_t>(48);
      keel::bytes body = crypto::random_bytes(48);
      std::array<std::uint8_t, 12> nonce1{};
      nonce1[11] = 1;
      const auto body_tag = collide(content_a.view(), content_b.view(), nonce1, body_aad, body, false, 0);

      keel::bytes envelope = header;
      envelope.insert(envelope.end(), header_tag.begin(), header_tag.end());
      keel::byte_writer ew(envelope);
      ew.be<std::uint64_t>(48);
      ew.append(body);
      ew.append(body_tag);

      // Without the commitment, both tags would pass for Bob's key: they do, checked directly.
      CHECK(crypto::open(crypto::aead_algorithm::aes_gcm, content_b.view(), nonce0,
                         keel::bytes(header_tag.begin(), header_tag.end()), header));
      auto bob_would_read = crypto::open(crypto::aead_algorithm::aes_gcm, content_b.view(), nonce1,
                                         sealed_of(body, body_tag), body_aad);
      REQUIRE(bob_would_read);

      // Alice reads it; Bob is refused by the commitment.
      crypto::kms* for_alice[] = {&alice};
      crypto::kms* for_bob[] = {&bob};
      auto alice_reads = crypto::decrypt(for_alice, envelope, {.expected_context = context});
      REQUIRE(alice_reads);
      CHECK(alice_reads->plaintext != *bob_would_read);
      CHECK(crypto::decrypt(for_bob, envelope, {.expected_context = context}).error() ==
            crypto::errc::commitment_mismatch);
    }
  }
}
