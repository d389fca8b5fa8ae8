// libFuzzer target for keel::crypto's envelope parser and decryptor. The first input byte picks
// what to attack:
//   0: read_header and decrypt on the raw input: an error, never a crash, and no forgery
//   1: a real envelope of the input's plaintext (either suite, framed or not), one byte changed
//      where the input says: decrypt must refuse it
//   2: a real framed envelope cut to a length the input picks: refused unless whole
//   3: the streaming decryptor in chunks the input picks, on a real envelope maybe changed
#include <keel/crypto.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

namespace crypto = keel::crypto;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

crypto::keyring& fixed_keyring() {
  static crypto::keyring ring("fuzz");
  static const bool imported = [] {
    const std::vector<std::uint8_t> key(32, 0x42);
    return ring.import_version(1, key, crypto::key_state::enabled).has_value();
  }();
  require(imported);
  return ring;
}

// Either suite keel writes.
std::uint16_t pick_suite(FuzzedDataProvider& in) {
  return in.ConsumeBool() ? crypto::suite_aes256_gcm_hkdf_sha512_commit
                          : crypto::suite_aes256_gcm_aes_kdf_commit;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  crypto::kms* keys[] = {&fixed_keyring()};
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: {
      const auto rest = in.ConsumeRemainingBytes<std::uint8_t>();
      if (auto header = crypto::read_header(rest)) require(header->header_size <= rest.size());
      // Nobody without the key can make bytes that decrypt; random input never should.
      require(!crypto::decrypt(keys, rest).has_value());
      break;
    }
    case 1: {
      const auto suite = pick_suite(in);
      const auto frame = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::uint32_t>(1, 64) : 0U;
      const auto at = in.ConsumeIntegral<std::uint32_t>();
      const auto flip = static_cast<std::uint8_t>(in.ConsumeIntegralInRange<int>(1, 255));
      const auto plaintext = in.ConsumeRemainingBytes<std::uint8_t>();
      auto sealed = crypto::encrypt(keys, plaintext, {{"fuzz", "1"}}, {.frame_size = frame, .suite = suite});
      require(sealed.has_value());
      require(crypto::decrypt(keys, *sealed).value().plaintext == plaintext);
      (*sealed)[at % sealed->size()] ^= flip;
      require(!crypto::decrypt(keys, *sealed).has_value());
      break;
    }
    case 3: {
      // The streaming decryptor fed in chunks the input picks, the envelope maybe changed at one
      // byte: it gives the plaintext exactly when decrypt() does, and nothing of a bad frame.
      const auto suite = pick_suite(in);
      const auto frame = in.ConsumeIntegralInRange<std::uint32_t>(1, 64);
      const bool change = in.ConsumeBool();
      const auto at = in.ConsumeIntegral<std::uint32_t>();
      std::vector<std::size_t> chunks;
      for (int k = 0; k < 8; ++k) chunks.push_back(in.ConsumeIntegralInRange<std::size_t>(1, 200));
      const auto plaintext = in.ConsumeRemainingBytes<std::uint8_t>();
      auto sealed = crypto::encrypt(keys, plaintext, {}, {.frame_size = frame, .suite = suite}).value();
      if (change) sealed[at % sealed.size()] ^= 0x20;
      const bool whole = crypto::decrypt(keys, sealed).has_value();
      crypto::envelope_decryptor decryptor(keys);
      keel::bytes out;
      bool ok = true;
      std::size_t used = 0;
      for (std::size_t k = 0; used < sealed.size() && ok; ++k) {
        const auto take = std::min(chunks[k % chunks.size()], sealed.size() - used);
        ok = decryptor.update(keel::bytes_view(sealed).subspan(used, take), out).has_value();
        used += take;
      }
      ok = ok && decryptor.finish().has_value();
      require(ok == whole);
      if (ok) require(out == plaintext);
      require(out.size() <= plaintext.size());
      break;
    }
    default: {
      const auto suite = pick_suite(in);
      const auto frame = in.ConsumeIntegralInRange<std::uint32_t>(1, 64);
      const auto cut = in.ConsumeIntegral<std::uint32_t>();
      const auto plaintext = in.ConsumeRemainingBytes<std::uint8_t>();
      auto sealed = crypto::encrypt(keys, plaintext, {}, {.frame_size = frame, .suite = suite}).value();
      const auto length = cut % (sealed.size() + 1);
      const auto opened = crypto::decrypt(keys, keel::bytes_view(sealed).first(length));
      require(opened.has_value() == (length == sealed.size()));
      break;
    }
  }
  return 0;
}
