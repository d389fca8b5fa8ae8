// The envelope: round trips single and framed; every single-byte change, truncation, frame
// reordering or removal refused; the encryption context enforced; data keys counted before any
// unwrap; several providers; rotation and rewrap keeping old envelopes readable until their
// version is destroyed; the key commitment refusing a data key swapped in.
#include <keel/core/endian.hpp>
#include <keel/crypto.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <support/result.hpp>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace crypto = keel::crypto;

keel::bytes text(std::string_view s) {
  return {s.begin(), s.end()};
}

keel::bytes pattern(std::size_t size, std::uint32_t seed) {
  std::mt19937 random(seed);
  keel::bytes out(size);
  for (auto& b : out) b = static_cast<std::uint8_t>(random());
  return out;
}

// A provider that counts what it is asked, around a keyring.
struct counting_kms final : crypto::kms {
  crypto::keyring inner;
  std::atomic<int> unwraps{0};
  std::atomic<int> wraps{0};
  explicit counting_kms(std::string name) : inner(std::move(name)) { inner.rotate(); }
  [[nodiscard]] std::string_view provider() const noexcept override { return inner.provider(); }
  keel::result<crypto::encrypted_data_key> wrap(keel::bytes_view key, keel::bytes_view aad) override {
    ++wraps;
    return inner.wrap(key, aad);
  }
  keel::result<crypto::secret_bytes> unwrap(const crypto::encrypted_data_key& edk,
                                            keel::bytes_view aad) override {
    ++unwraps;
    return inner.unwrap(edk, aad);
  }
};

}  // namespace

// Every suite keel writes: each test of the format runs in both.
constexpr std::array<std::uint16_t, 2> all_suites = {crypto::suite_aes256_gcm_hkdf_sha512_commit,
                                                     crypto::suite_aes256_gcm_aes_kdf_commit};

TEST_SUITE("unit") {
  TEST_CASE("envelopes round trip, single and framed, at every interesting size") {
    crypto::keyring ring("orders");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    const crypto::encryption_context context{{"tenant", "acme"}, {"table", "cards"}};
    for (const auto suite : all_suites)
      for (const std::uint32_t frame : {0U, 1U, 16U, 4096U}) {
        for (const std::size_t size : {0UL, 1UL, 15UL, 16UL, 17UL, 48UL, 1000UL, 10'000UL}) {
          CAPTURE(suite);
          CAPTURE(frame);
          CAPTURE(size);
          if (frame == 1 && size > 1000) continue;
          const auto plaintext = pattern(size, static_cast<std::uint32_t>(size + frame));
          const auto sealed =
              crypto::encrypt(keys, plaintext, context, {.frame_size = frame, .suite = suite}).value();
          const auto opened =
              crypto::decrypt(keys, sealed, {.expected_context = {{"tenant", "acme"}}}).value();
          CHECK(opened.plaintext == plaintext);
          CHECK(opened.context == context);
          CHECK(opened.used.key_id == "orders/1");
          const auto header = crypto::read_header(sealed).value();
          CHECK(header.frame_size == frame);
          CHECK(header.context == context);
          CHECK(header.data_keys.size() == 1);
          CHECK(header.suite == suite);
          CHECK(header.message_id.size() ==
                (suite == crypto::suite_aes256_gcm_hkdf_sha512_commit ? 32U : 12U));
        }
      }
    // Two envelopes of the same plaintext share nothing but their layout.
    const auto a = crypto::encrypt(keys, text("same"), context).value();
    const auto b = crypto::encrypt(keys, text("same"), context).value();
    CHECK(a != b);
  }

  TEST_CASE("every single-byte change of an envelope is refused, and nothing is returned") {
    crypto::keyring ring("orders");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    for (const auto suite : all_suites)
      for (const std::uint32_t frame : {0U, 24U}) {
        CAPTURE(suite);
        CAPTURE(frame);
        const auto sealed =
            crypto::encrypt(keys, pattern(70, 7), {{"tenant", "acme"}}, {.frame_size = frame, .suite = suite})
                .value();
        const auto header_size = crypto::read_header(sealed).value().header_size;
        std::size_t refused = 0;
        for (std::size_t at = 0; at < sealed.size(); ++at) {
          for (const std::uint8_t flip : {std::uint8_t{0x01}, std::uint8_t{0x80}}) {
            auto changed = sealed;
            changed[at] ^= flip;
            const auto opened = crypto::decrypt(keys, changed);
            CAPTURE(at);
            CHECK_FALSE(opened.has_value());
            if (!opened) {
              CHECK(opened.error().category() == crypto::crypto_category());
              ++refused;
            }
          }
        }
        CHECK(refused == 2 * sealed.size());
        CHECK(header_size < sealed.size());
      }
  }

  TEST_CASE("framed bodies: truncation at any length, a missing, repeated or reordered frame, extra bytes") {
    crypto::keyring ring("orders");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    const std::uint32_t frame = 32;
    const auto plaintext = pattern(100, 3);  // frames 1-3 of 32, a final frame of 4
    const auto sealed = crypto::encrypt(keys, plaintext, {}, {.frame_size = frame}).value();
    const auto body = crypto::read_header(sealed).value().header_size;
    const std::size_t framed = 4 + frame + crypto::aead_tag_bytes;
    REQUIRE(sealed.size() == body + 3 * framed + (12 + 4 + crypto::aead_tag_bytes));
    for (std::size_t length = 0; length < sealed.size(); ++length) {
      CAPTURE(length);
      CHECK_FALSE(crypto::decrypt(keys, keel::bytes_view(sealed).first(length)).has_value());
    }
    const auto frame_at = [&](std::size_t k) {
      return keel::bytes(sealed.begin() + static_cast<std::ptrdiff_t>(body + k * framed),
                         sealed.begin() + static_cast<std::ptrdiff_t>(body + (k + 1) * framed));
    };
    const keel::bytes head(sealed.begin(), sealed.begin() + static_cast<std::ptrdiff_t>(body));
    const keel::bytes tail(sealed.begin() + static_cast<std::ptrdiff_t>(body + 3 * framed), sealed.end());
    const auto assemble = [&](std::initializer_list<std::size_t> order) {
      keel::bytes out = head;
      for (const auto k : order) {
        const auto f = frame_at(k);
        out.insert(out.end(), f.begin(), f.end());
      }
      out.insert(out.end(), tail.begin(), tail.end());
      return out;
    };
    CHECK(crypto::decrypt(keys, assemble({0, 1, 2})).value().plaintext == plaintext);
    CHECK(crypto::decrypt(keys, assemble({1, 0, 2})).error() ==
          crypto::errc::malformed_envelope);                                                     // reordered
    CHECK(crypto::decrypt(keys, assemble({0, 2})).error() == crypto::errc::malformed_envelope);  // missing
    CHECK(crypto::decrypt(keys, assemble({0, 1, 1, 2})).error() ==
          crypto::errc::malformed_envelope);  // repeated
    auto longer = sealed;
    longer.push_back(0);
    CHECK(crypto::decrypt(keys, longer).error() == crypto::errc::malformed_envelope);
    // A frame's sequence number rewritten to fit another place still fails its tag.
    auto moved = assemble({1, 0, 2});
    keel::store_be<std::uint32_t>(moved.data() + body, 1);
    keel::store_be<std::uint32_t>(moved.data() + body + framed, 2);
    CHECK(crypto::decrypt(keys, moved).error() == crypto::errc::authentication_failed);
  }

  TEST_CASE("the encryption context: expected pairs enforced; changing the stored one fails") {
    crypto::keyring ring("secrets");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    const auto sealed = crypto::encrypt(keys, text("4242"), {{"secret", "card"}, {"tenant", "acme"}}).value();
    CHECK(crypto::decrypt(keys, sealed, {.expected_context = {{"tenant", "acme"}}}));
    CHECK(crypto::decrypt(keys, sealed, {.expected_context = {{"tenant", "evil"}}}).error() ==
          crypto::errc::context_mismatch);
    CHECK(crypto::decrypt(keys, sealed, {.expected_context = {{"region", "eu"}}}).error() ==
          crypto::errc::context_mismatch);
    // The stored "acme" rewritten as "acmf": the data key was wrapped under the old context.
    auto changed = sealed;
    const std::string needle = "acme";
    const auto at = std::search(changed.begin(), changed.end(), needle.begin(), needle.end());
    REQUIRE(at != changed.end());
    at[3] = 'f';
    CHECK(!crypto::decrypt(keys, changed));
    CHECK(crypto::encrypt(keys, text("x"), {{"", "empty key"}}).error() == crypto::errc::invalid_context);
  }

  TEST_CASE("data keys: counted before any unwrap; several providers; the first that unwraps is used") {
    std::vector<std::unique_ptr<counting_kms>> rings;
    std::vector<crypto::kms*> all;
    for (int k = 0; k < 9; ++k) {
      rings.push_back(std::make_unique<counting_kms>("ring-" + std::to_string(k)));
      all.push_back(rings.back().get());
    }
    const auto nine = crypto::encrypt(all, text("many"), {}).value();
    CHECK(crypto::read_header(nine).value().data_keys.size() == 9);
    CHECK(crypto::decrypt(all, nine, {.max_data_keys = 8}).error() == crypto::errc::too_many_data_keys);
    for (const auto& r : rings) CHECK(r->unwraps.load() == 0);  // refused before asking anyone
    CHECK(crypto::decrypt(all, nine, {.max_data_keys = 9}).value().plaintext == text("many"));

    // Wrapped by two; either one alone decrypts (break-glass, another region).
    crypto::kms* both[] = {rings[0].get(), rings[1].get()};
    const auto two = crypto::encrypt(both, text("two"), {}).value();
    crypto::kms* second_only[] = {rings[1].get()};
    const auto opened = crypto::decrypt(second_only, two).value();
    CHECK(opened.used.key_id == "ring-1/1");
    crypto::keyring stranger("stranger");
    stranger.rotate();
    crypto::kms* nobody[] = {&stranger};
    CHECK(crypto::decrypt(nobody, two).error() == crypto::errc::no_usable_data_key);
  }

  TEST_CASE(
      "rotation and rewrap: old envelopes readable until their version is destroyed, then a clear error") {
    crypto::keyring ring("orders");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    const auto old_envelope =
        crypto::encrypt(keys, text("from version 1"), {{"t", "a"}}, {.frame_size = 8}).value();
    const auto kept = crypto::encrypt(keys, text("also version 1"), {{"t", "a"}}).value();
    CHECK(ring.rotate() == 2);
    const auto new_envelope = crypto::encrypt(keys, text("from version 2"), {{"t", "a"}}).value();
    CHECK(crypto::read_header(new_envelope).value().data_keys[0].key_id == "orders/2");
    CHECK(crypto::decrypt(keys, old_envelope).value().plaintext == text("from version 1"));

    // Rewrap: the data key moves to version 2; the body is byte for byte the same.
    const auto rewrapped = crypto::rewrap(keys, keys, old_envelope).value();
    const auto old_header = crypto::read_header(old_envelope).value();
    const auto new_header = crypto::read_header(rewrapped).value();
    CHECK(new_header.data_keys[0].key_id == "orders/2");
    CHECK(new_header.message_id == old_header.message_id);
    CHECK(keel::bytes(old_envelope.begin() + static_cast<std::ptrdiff_t>(old_header.header_size),
                      old_envelope.end()) ==
          keel::bytes(rewrapped.begin() + static_cast<std::ptrdiff_t>(new_header.header_size),
                      rewrapped.end()));

    // Version 1 below the minimum: disabled, not destroyed; then destroyed for good.
    REQUIRE(ring.set_min_decryption_version(2));
    CHECK(crypto::decrypt(keys, kept).error() == crypto::errc::key_disabled);
    REQUIRE(ring.set_min_decryption_version(1));
    CHECK(crypto::decrypt(keys, kept));
    REQUIRE(ring.set_state(1, crypto::key_state::destroyed));
    CHECK(crypto::decrypt(keys, kept).error() == crypto::errc::key_destroyed);
    CHECK(crypto::decrypt(keys, rewrapped).value().plaintext == text("from version 1"));
    CHECK(crypto::decrypt(keys, new_envelope));
    CHECK(ring.set_state(1, crypto::key_state::enabled).error() == crypto::errc::key_destroyed);
    // A decrypt-only primary wraps nothing until the next rotation.
    REQUIRE(ring.set_state(2, crypto::key_state::decrypt_only));
    CHECK(crypto::encrypt(keys, text("x"), {}).error() == crypto::errc::key_disabled);
    CHECK(crypto::decrypt(keys, new_envelope));
    ring.rotate();
    CHECK(crypto::encrypt(keys, text("x"), {}));
    // A tampered header is not rewrapped.
    auto tampered = new_envelope;
    tampered[new_header.header_size - 1] ^= 1U;
    CHECK(!crypto::rewrap(keys, keys, tampered));
  }

  TEST_CASE("the key commitment: a data key swapped in (by someone holding both keys) is refused") {
    crypto::keyring ring("orders");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    const auto sealed = crypto::encrypt(keys, text("pay 10"), {}).value();
    const auto header = crypto::read_header(sealed).value();
    // Another message's data key, wrapped by the same keyring under the same (empty) context,
    // put in this envelope's place: it unwraps, but it is not the key this message committed to.
    const auto other = crypto::encrypt(keys, text("pay 10000"), {}).value();
    const auto other_key = crypto::read_header(other).value().data_keys[0];
    const auto& mine = header.data_keys[0];
    REQUIRE(other_key.wrapped.size() == mine.wrapped.size());
    auto swapped = sealed;
    const auto at = std::search(swapped.begin(), swapped.end(), mine.wrapped.begin(), mine.wrapped.end());
    REQUIRE(at != swapped.end());
    std::copy(other_key.wrapped.begin(), other_key.wrapped.end(), at);
    CHECK(crypto::decrypt(keys, swapped).error() == crypto::errc::commitment_mismatch);
  }

  TEST_CASE("not an envelope: clear errors, never a crash") {
    crypto::keyring ring("orders");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    CHECK(crypto::decrypt(keys, {}).error() == crypto::errc::malformed_envelope);
    CHECK(crypto::decrypt(keys, text("KENV")).error() == crypto::errc::malformed_envelope);
    auto sealed = crypto::encrypt(keys, text("x"), {}).value();
    sealed[4] = 2;  // a version from the future
    CHECK(crypto::decrypt(keys, sealed).error() == crypto::errc::unsupported_version);
    CHECK(crypto::read_header(text("not an envelope at all")).error() == crypto::errc::malformed_envelope);
  }
}

TEST_SUITE("unit") {
  TEST_CASE(
      "keyring files: saved 0600 under a passphrase, loaded back whole; others' access, a wrong passphrase "
      "or a "
      "changed byte refused") {
    std::string dir_template = (std::filesystem::temp_directory_path() / "keel-keyring-XXXXXX").string();
    REQUIRE(::mkdtemp(dir_template.data()) != nullptr);
    const std::string dir = dir_template;
    const std::string path = dir + "/orders.keyring";
    crypto::keyring ring("orders");
    ring.rotate();
    ring.rotate();
    ring.rotate();
    REQUIRE(ring.set_state(1, crypto::key_state::destroyed));
    REQUIRE(ring.set_state(2, crypto::key_state::decrypt_only));
    REQUIRE(ring.set_min_decryption_version(2));
    crypto::kms* keys[] = {&ring};
    const auto sealed = crypto::encrypt(keys, text("kept across restarts"), {{"t", "a"}}).value();
    REQUIRE(ring.save(path, "correct horse battery staple"));
    struct stat info {};
    REQUIRE(::stat(path.c_str(), &info) == 0);
    CHECK((info.st_mode & 0777) == 0600);

    auto loaded = crypto::keyring::load(path, "correct horse battery staple").value();
    CHECK(loaded->name() == "orders");
    CHECK(loaded->primary() == 3);
    CHECK(loaded->min_decryption_version() == 2);
    const auto versions = loaded->versions();
    REQUIRE(versions.size() == 3);
    CHECK(versions[0].state == crypto::key_state::destroyed);
    CHECK(versions[1].state == crypto::key_state::decrypt_only);
    CHECK(versions[2].primary);
    crypto::kms* reloaded[] = {loaded.get()};
    CHECK(crypto::decrypt(reloaded, sealed).value().plaintext == text("kept across restarts"));

    CHECK(crypto::keyring::load(path, "wrong").error() == crypto::errc::authentication_failed);
    // Readable by the group: refused before it is read.
    REQUIRE(::chmod(path.c_str(), 0640) == 0);
    CHECK(crypto::keyring::load(path, "correct horse battery staple").error() ==
          crypto::errc::insecure_key_file);
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
    // One byte changed anywhere (the scrypt parameters, the salt, the sealed contents): refused.
    std::vector<std::uint8_t> file;
    {
      std::FILE* f = std::fopen(path.c_str(), "rb");
      REQUIRE(f != nullptr);
      std::uint8_t buffer[4096];
      for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, f)) > 0;)
        file.insert(file.end(), buffer, buffer + n);
      std::fclose(f);
    }
    for (const std::size_t at :
         {std::size_t{4}, std::size_t{7}, std::size_t{20}, file.size() / 2, file.size() - 1}) {
      CAPTURE(at);
      auto changed = file;
      changed[at] ^= 1U;
      const std::string other = dir + "/changed.keyring";
      const int fd = ::open(other.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      REQUIRE(fd >= 0);
      REQUIRE(::write(fd, changed.data(), changed.size()) == static_cast<ssize_t>(changed.size()));
      ::close(fd);
      CHECK(!crypto::keyring::load(other, "correct horse battery staple"));
      ::unlink(other.c_str());
    }
    CHECK(ring.save(path, "").error() == crypto::errc::invalid_input_size);
    CHECK(crypto::keyring::load(dir + "/missing", "x").error() == std::errc::no_such_file_or_directory);
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
  }
}

TEST_SUITE("unit") {
  TEST_CASE("streaming: encrypt and decrypt in chunks of any size; only verified whole frames come out") {
    crypto::keyring ring("stream");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    std::mt19937 random(20261203);
    for (const std::size_t size : {0UL, 1UL, 63UL, 64UL, 65UL, 1000UL, 64UL * 40}) {
      CAPTURE(size);
      const std::uint32_t frame = 64;
      const auto plaintext = pattern(size, static_cast<std::uint32_t>(size));
      auto encryptor = crypto::envelope_encryptor::start(keys, {{"file", "backup"}}, frame).value();
      keel::bytes sealed = encryptor.header();
      for (std::size_t at = 0; at < plaintext.size();) {
        const auto n = std::min<std::size_t>(plaintext.size() - at, random() % 150);
        REQUIRE(encryptor.update(keel::bytes_view(plaintext).subspan(at, n), sealed));
        at += n;
      }
      REQUIRE(encryptor.finish(sealed));
      CHECK(encryptor.update(keel::as_bytes("late"), sealed).error() == crypto::errc::invalid_input_size);
      // The one-shot decrypt reads what the stream wrote.
      CHECK(crypto::decrypt(keys, sealed, {.expected_context = {{"file", "backup"}}}).value().plaintext ==
            plaintext);

      // And the streaming decryptor, fed in random pieces: the output grows by whole frames.
      crypto::envelope_decryptor decryptor(keys, {.expected_context = {{"file", "backup"}}});
      keel::bytes out;
      for (std::size_t at = 0; at < sealed.size();) {
        const auto n = std::min<std::size_t>(sealed.size() - at, 1 + random() % 90);
        REQUIRE(decryptor.update(keel::bytes_view(sealed).subspan(at, n), out));
        at += n;
        CHECK((out.size() % frame == 0 || out.size() == plaintext.size()));
      }
      REQUIRE(decryptor.finish());
      CHECK(out == plaintext);
      REQUIRE(decryptor.header() != nullptr);
      CHECK(decryptor.header()->frame_size == frame);
    }
  }

  TEST_CASE(
      "streaming decryption: a truncated stream fails at finish; a changed frame stops it; nothing "
      "unverified "
      "comes out") {
    crypto::keyring ring("stream");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    const std::uint32_t frame = 32;
    const auto plaintext = pattern(200, 9);
    const auto sealed = crypto::encrypt(keys, plaintext, {}, {.frame_size = frame}).value();
    const auto body = crypto::read_header(sealed).value().header_size;
    const std::size_t framed = 4 + frame + crypto::aead_tag_bytes;

    // Cut inside the third frame: two frames come out, finish says the end is missing.
    {
      crypto::envelope_decryptor decryptor(keys);
      keel::bytes out;
      REQUIRE(decryptor.update(keel::bytes_view(sealed).first(body + 2 * framed + 10), out));
      CHECK(out == keel::bytes(plaintext.begin(), plaintext.begin() + 2 * frame));
      CHECK(decryptor.finish().error() == crypto::errc::malformed_envelope);
    }
    // A byte changed in the second frame: the first frame comes out, then an error, then nothing.
    {
      auto changed = sealed;
      changed[body + framed + 10] ^= 1U;
      crypto::envelope_decryptor decryptor(keys);
      keel::bytes out;
      CHECK(decryptor.update(changed, out).error() == crypto::errc::authentication_failed);
      CHECK(out == keel::bytes(plaintext.begin(), plaintext.begin() + frame));
      CHECK(!decryptor.update(keel::bytes_view(changed).subspan(body), out));
      CHECK(!decryptor.finish());
    }
    // Bytes after the final frame.
    {
      auto longer = sealed;
      longer.push_back(7);
      crypto::envelope_decryptor decryptor(keys);
      keel::bytes out;
      CHECK(decryptor.update(longer, out).error() == crypto::errc::malformed_envelope);
    }
    // The wrong context is refused before anything is unwrapped.
    {
      crypto::envelope_decryptor decryptor(keys, {.expected_context = {{"tenant", "acme"}}});
      keel::bytes out;
      CHECK(decryptor.update(sealed, out).error() == crypto::errc::context_mismatch);
      CHECK(out.empty());
    }
    CHECK(crypto::envelope_encryptor::start(keys, {}, 0).error() == crypto::errc::invalid_input_size);
    // Not an envelope: refused on its first bytes, not after a megabyte of them.
    crypto::envelope_decryptor garbage(keys);
    keel::bytes out;
    CHECK(garbage.update(keel::as_bytes("GIF89a"), out).error() == crypto::errc::malformed_envelope);
  }
}

TEST_SUITE("unit") {
  TEST_CASE(
      "the data-key cache: one wrap for many messages within its limits, one unwrap for many decrypts") {
    counting_kms ring("cached");
    crypto::kms* keys[] = {&ring};
    keel::manual_clock clock;
    crypto::data_key_cache cache(
        {.max_age = std::chrono::seconds(60), .max_messages = 3, .max_bytes = 1000, .clock = &clock});
    const crypto::encryption_context acme{{"tenant", "acme"}};
    std::vector<keel::bytes> sealed;
    for (int k = 0; k < 3; ++k)
      sealed.push_back(crypto::encrypt(keys, text("message"), acme, {.cache = &cache}).value());
    CHECK(ring.wraps.load() == 1);
    const auto first = crypto::read_header(sealed[0]).value();
    const auto third = crypto::read_header(sealed[2]).value();
    CHECK(first.data_keys == third.data_keys);    // the same wrapped data key
    CHECK(first.message_id != third.message_id);  // each message its own content key
    // The fourth message is over max_messages: a new data key.
    (void)crypto::encrypt(keys, text("message"), acme, {.cache = &cache}).value();
    CHECK(ring.wraps.load() == 2);
    // Another context never shares a key.
    (void)crypto::encrypt(keys, text("message"), {{"tenant", "other"}}, {.cache = &cache}).value();
    CHECK(ring.wraps.load() == 3);
    // Too many bytes for what is left of the allowance, then too old.
    (void)crypto::encrypt(keys, keel::bytes(995), acme, {.cache = &cache}).value();
    CHECK(ring.wraps.load() == 4);
    (void)crypto::encrypt(keys, text("x"), {{"tenant", "other"}}, {.cache = &cache}).value();
    CHECK(ring.wraps.load() == 4);
    clock.advance(std::chrono::seconds(61));
    (void)crypto::encrypt(keys, text("x"), {{"tenant", "other"}}, {.cache = &cache}).value();
    CHECK(ring.wraps.load() == 5);

    // Decrypting: the provider is asked once per data key while it is cached.
    for (const auto& envelope : sealed)
      CHECK(crypto::decrypt(keys, envelope, {.cache = &cache}).value().plaintext == text("message"));
    CHECK(ring.unwraps.load() == 1);
    cache.clear();
    CHECK(cache.size() == 0);
    CHECK(crypto::decrypt(keys, sealed[0], {.cache = &cache}));
    CHECK(ring.unwraps.load() == 2);
    // A cached key is not a way around the envelope's checks.
    auto changed = sealed[1];
    changed.back() ^= 1U;
    CHECK(crypto::decrypt(keys, changed, {.cache = &cache}).error() == crypto::errc::authentication_failed);
    const auto stats = cache.stats();
    CHECK(stats.hits >= 4);
    CHECK(stats.evictions >= 3);
  }
}

TEST_SUITE("unit") {
  TEST_CASE("message ids after a fork: parent and child never draw the same one") {
    crypto::keyring ring("forked");
    ring.rotate();
    crypto::kms* keys[] = {&ring};
    auto id_of_a_new_envelope = [&] {
      return crypto::read_header(crypto::encrypt(keys, text("x"), {}).value()).value().message_id;
    };
    (void)id_of_a_new_envelope();  // ids are drawn from a pool: this one fills it
    int pipe_ends[2];
    REQUIRE(::pipe(pipe_ends) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      const auto id = id_of_a_new_envelope();
      const bool sent = ::write(pipe_ends[1], id.data(), id.size()) == static_cast<ssize_t>(id.size());
      ::_exit(sent ? 0 : 1);
    }
    ::close(pipe_ends[1]);
    const auto parents = id_of_a_new_envelope();
    keel::bytes childs(parents.size());
    const auto got = ::read(pipe_ends[0], childs.data(), childs.size());
    ::close(pipe_ends[0]);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    REQUIRE(got == static_cast<ssize_t>(childs.size()));
    CHECK(parents != childs);  // the same id would mean the same content key and nonces
  }

  TEST_CASE("envelopes written by earlier keel versions still open (tests/data/crypto)") {
    crypto::keyring ring("golden");
    REQUIRE(ring.import_version(1, keel::bytes(32, 0x11), crypto::key_state::enabled));
    // Importing a version again says it exists (it used to say unknown_key, which misled).
    CHECK(ring.import_version(1, keel::bytes(32, 0x22), crypto::key_state::enabled).error() ==
          crypto::errc::key_exists);
    CHECK(ring.import_version(0, keel::bytes(32, 0x22), crypto::key_state::enabled).error() ==
          crypto::errc::unknown_key);
    crypto::kms* keys[] = {&ring};
    const std::pair<const char*, std::uint16_t> files[] = {
        {KEEL_TEST_DATA_DIR "/crypto/envelopes-v1.hex", crypto::suite_aes256_gcm_hkdf_sha512_commit},
        {KEEL_TEST_DATA_DIR "/crypto/envelopes-suite2.hex", crypto::suite_aes256_gcm_aes_kdf_commit}};
    for (const auto& [path, suite] : files) {
      CAPTURE(path);
      std::FILE* f = std::fopen(path, "r");
      REQUIRE_MESSAGE(f != nullptr, "missing golden envelopes in tests/data/crypto");
      char line[8192];
      int opened = 0;
      while (std::fgets(line, sizeof line, f) != nullptr) {
        std::string hex(line);
        while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r')) hex.pop_back();
        const auto envelope = keel::from_hex(hex).value();
        CHECK(crypto::read_header(envelope).value().suite == suite);
        const auto result =
            crypto::decrypt(keys, envelope, {.expected_context = {{"purpose", "golden"}}}).value();
        CHECK(result.plaintext == text("keel envelope format v1: a known answer"));
        CHECK(result.context == crypto::encryption_context{{"purpose", "golden"}, {"tenant", "acme"}});
        ++opened;
      }
      std::fclose(f);
      CHECK(opened == 2);
    }
  }
}
