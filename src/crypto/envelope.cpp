// The keel envelope, version 1, suites 1 and 2 (docs/crypto.md has the layout). Parsing reads
// through keel::byte_reader, so every length is checked against what is left; the data key
// count is checked before any provider is asked to unwrap.
#include <keel/core/byte_io.hpp>
#include <keel/crypto/aead.hpp>
#include <keel/crypto/cache.hpp>
#include <keel/crypto/envelope.hpp>

#include "data_key.hpp"
#include "evp.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <pthread.h>

namespace keel::crypto {
namespace {

using detail::commitment_bytes;
using detail::known_suite;
using detail::message_id_bytes;
using detail::message_keys;
using detail::prepared_data_key;

constexpr std::array<std::uint8_t, 4> magic = {'K', 'E', 'N', 'V'};
constexpr std::size_t max_message_id_bytes = 32;
constexpr std::uint8_t content_single = 1;
constexpr std::uint8_t content_framed = 2;
constexpr std::uint32_t final_frame_marker = 0xFFFFFFFF;
constexpr std::size_t max_data_keys_stored = 255;

// Message ids come from a per-thread pool filled by OpenSSL's generator a kilobyte at a time:
// one RAND_bytes call per message cost as much as AES-GCM of a KiB. Ids are public (they are
// in the header), so a pool holds nothing secret; what it must never do is hand the same bytes
// out twice, so a fork (after which parent and child hold the same pool) empties every pool.
std::atomic<std::uint64_t> fork_generation{0};

class message_id_pool {
 public:
  void draw(std::span<std::uint8_t> out) {
    static std::once_flag registered;
    std::call_once(registered, [] {
      (void)pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1, std::memory_order_relaxed); });
    });
    const auto generation = fork_generation.load(std::memory_order_relaxed);
    if (generation != generation_ || used_ + out.size() > pool_.size()) {
      if (RAND_bytes(pool_.data(), static_cast<int>(pool_.size())) != 1)
        throw std::runtime_error("keel::crypto: OpenSSL's random generator failed");
      used_ = 0;
      generation_ = generation;
    }
    std::memcpy(out.data(), pool_.data() + used_, out.size());
    used_ += out.size();
  }

 private:
  std::array<std::uint8_t, 1024> pool_{};
  std::size_t used_ = pool_.size();
  std::uint64_t generation_ = 0;
};

void draw_message_id(std::span<std::uint8_t> out) {
  thread_local message_id_pool pool;
  pool.draw(out);
}

// A nonce: eight zero bytes, then the part's sequence number (the header's tag is part 0).
std::array<std::uint8_t, aead_nonce_bytes> nonce_for(std::uint32_t sequence) {
  std::array<std::uint8_t, aead_nonce_bytes> n{};
  store_be<std::uint32_t>(n.data() + 8, sequence);
  return n;
}

// AES-256-GCM under one message's content key, for the parts of that message (header tag, body
// or frames), on an EVP context kept per thread: a context per part cost an allocation and a
// key schedule each. The context keeps the last message's key schedule until the next message
// on the thread replaces it (the data key it came from is in the cache anyway); it is wiped
// when the thread ends.
class content_cipher {
 public:
  explicit content_cipher(bool sealing) : sealing_(sealing), ctx_(thread_context(sealing)) {}

  result<void> key(const secret_bytes& content_key) {
    static const EVP_CIPHER* const gcm = detail::fetch_cipher("AES-256-GCM");
    if (gcm == nullptr || ctx_ == nullptr) return errc::openssl_failure;
    // The cipher is given once per context: giving it again resets the context, freeing and
    // allocating what the provider keeps, a fifth of a small message's cost.
    const EVP_CIPHER* set = EVP_CIPHER_CTX_get0_cipher(ctx_) == nullptr ? gcm : nullptr;
    if (EVP_CipherInit_ex2(ctx_, set, content_key.data(), nullptr, sealing_ ? 1 : 0, nullptr) != 1)
      return errc::openssl_failure;
    return {};
  }

  // Seals `plaintext` as part `sequence` into `out` (its size plus the tag).
  result<void> seal(std::uint32_t sequence, bytes_view aad, bytes_view plaintext, std::uint8_t* out) {
    if (plaintext.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
      return errc::invalid_input_size;
    const auto nonce = nonce_for(sequence);
    int written = 0;
    int last = 0;
    if (EVP_EncryptInit_ex2(ctx_, nullptr, nullptr, nonce.data(), nullptr) != 1 || !add_aad(aad) ||
        (!plaintext.empty() &&
         EVP_EncryptUpdate(ctx_, out, &written, plaintext.data(), static_cast<int>(plaintext.size())) != 1) ||
        EVP_EncryptFinal_ex(ctx_, out + written, &last) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(aead_tag_bytes),
                            out + plaintext.size()) != 1)
      return errc::openssl_failure;
    return {};
  }

  // Opens part `sequence` (`sealed`: bytes then tag) into `out` (its size less the tag); nothing
  // is left in `out` unless the tag verified.
  result<void> open(std::uint32_t sequence, bytes_view aad, bytes_view sealed, std::uint8_t* out) {
    if (sealed.size() < aead_tag_bytes) return errc::authentication_failed;
    const auto length = sealed.size() - aead_tag_bytes;
    if (length > static_cast<std::size_t>(std::numeric_limits<int>::max())) return errc::invalid_input_size;
    const auto nonce = nonce_for(sequence);
    std::uint8_t tag[aead_tag_bytes];  // SET_TAG takes a non-const pointer
    std::memcpy(tag, sealed.data() + length, aead_tag_bytes);
    int written = 0;
    int last = 0;
    if (EVP_DecryptInit_ex2(ctx_, nullptr, nullptr, nonce.data(), nullptr) != 1 || !add_aad(aad) ||
        (length > 0 &&
         EVP_DecryptUpdate(ctx_, out, &written, sealed.data(), static_cast<int>(length)) != 1) ||
        EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(aead_tag_bytes), tag) != 1) {
      OPENSSL_cleanse(out, length);
      return errc::openssl_failure;
    }
    if (EVP_DecryptFinal_ex(ctx_, out + written, &last) != 1) {
      OPENSSL_cleanse(out, length);  // written before the tag was checked: must not be seen
      return errc::authentication_failed;
    }
    return {};
  }

 private:
  static EVP_CIPHER_CTX* thread_context(bool sealing) {
    thread_local detail::cipher_ctx sealing_ctx(EVP_CIPHER_CTX_new());
    thread_local detail::cipher_ctx opening_ctx(EVP_CIPHER_CTX_new());
    return sealing ? sealing_ctx.get() : opening_ctx.get();
  }

  bool add_aad(bytes_view aad) {
    if (aad.empty()) return true;
    if (aad.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) return false;
    int unused = 0;
    return sealing_
               ? EVP_EncryptUpdate(ctx_, nullptr, &unused, aad.data(), static_cast<int>(aad.size())) == 1
               : EVP_DecryptUpdate(ctx_, nullptr, &unused, aad.data(), static_cast<int>(aad.size())) == 1;
  }

  bool sealing_;
  EVP_CIPHER_CTX* ctx_;
};

// What each body part authenticates besides its bytes: the message, the part's kind, its
// sequence number and length, so no part can move to another message or place.
class part_aad {
 public:
  part_aad(bytes_view message_id, std::string_view kind, std::uint32_t sequence, std::uint64_t length) {
    std::uint8_t* at = std::copy(message_id.begin(), message_id.end(), bytes_.begin());
    at = std::copy(kind.begin(), kind.end(), at);
    store_be<std::uint32_t>(at, sequence);
    store_be<std::uint64_t>(at + 4, length);
    size_ = static_cast<std::size_t>(at + 12 - bytes_.data());
  }
  [[nodiscard]] bytes_view view() const noexcept { return {bytes_.data(), size_}; }

 private:
  std::array<std::uint8_t, max_message_id_bytes + 6 + 12> bytes_{};  // "single", "frame", "final"
  std::size_t size_ = 0;
};

result<void> check_context(const encryption_context& context) {
  if (context.size() > std::numeric_limits<std::uint16_t>::max()) return errc::invalid_context;
  for (const auto& [key, value] : context) {
    if (key.empty() || key.size() > 0xFFFF || value.size() > 0xFFFF) return errc::invalid_context;
  }
  return {};
}

// The context as stored (and as providers authenticate it): count, then each pair, key order.
bytes serialize_context(const encryption_context& context) {
  bytes out;
  byte_writer w(out);
  w.be<std::uint16_t>(static_cast<std::uint16_t>(context.size()));
  for (const auto& [key, value] : context) {
    w.be<std::uint16_t>(static_cast<std::uint16_t>(key.size()));
    w.append(as_bytes(key));
    w.be<std::uint16_t>(static_cast<std::uint16_t>(value.size()));
    w.append(as_bytes(value));
  }
  return out;
}

result<void> check_data_key_sizes(const encrypted_data_key& k) {
  if (k.provider.empty() || k.provider.size() > 0xFF || k.key_id.size() > 0xFFFF || k.wrapped.size() > 0xFFFF)
    return errc::malformed_envelope;
  return {};
}

// What a header says, as written: the fields the header's bytes are made of.
struct header_fields {
  std::uint16_t suite = suite_aes256_gcm_aes_kdf_commit;
  bytes_view message_id;
  bytes_view context_bytes;
  std::span<const encrypted_data_key> data_keys;
  std::uint32_t frame_size = 0;
};

std::size_t header_size(const header_fields& h) {
  std::size_t n = magic.size() + 1 + 2 + h.message_id.size() + h.context_bytes.size() + 1;
  for (const auto& k : h.data_keys) n += 1 + k.provider.size() + 2 + k.key_id.size() + 2 + k.wrapped.size();
  return n + 1 + 4 + commitment_bytes + aead_tag_bytes;
}

// Appends the header to `out`: its fields, the commitment, then the header tag (AES-GCM of
// nothing under the content key, part 0, every header byte before the tag as AAD).
result<void> append_header(bytes& out, const header_fields& h, const message_keys& keys,
                           content_cipher& cipher) {
  for (const auto& k : h.data_keys) {
    if (auto sized = check_data_key_sizes(k); !sized) return sized.error();
  }
  const auto start = out.size();
  byte_writer w(out);
  w.append(bytes_view(magic));
  w.u8(envelope_version);
  w.be<std::uint16_t>(h.suite);
  w.append(h.message_id);
  w.append(h.context_bytes);
  w.u8(static_cast<std::uint8_t>(h.data_keys.size()));
  for (const auto& k : h.data_keys) {
    w.u8(static_cast<std::uint8_t>(k.provider.size()));
    w.append(as_bytes(k.provider));
    w.be<std::uint16_t>(static_cast<std::uint16_t>(k.key_id.size()));
    w.append(as_bytes(k.key_id));
    w.be<std::uint16_t>(static_cast<std::uint16_t>(k.wrapped.size()));
    w.append(k.wrapped);
  }
  w.u8(h.frame_size == 0 ? content_single : content_framed);
  w.be<std::uint32_t>(h.frame_size);
  w.append(bytes_view(keys.commitment));
  const auto tag_at = out.size();
  out.resize(tag_at + aead_tag_bytes);
  return cipher.seal(0, bytes_view(out).subspan(start, tag_at - start), {}, out.data() + tag_at);
}

result<std::string> take_string(byte_reader& in, std::size_t length) {
  auto raw = in.take(length);
  if (!raw) return errc::malformed_envelope;
  return std::string(as_chars(*raw));
}

struct parsed {
  envelope_header header;
  bytes_view context_bytes;
  bytes_view commitment;
  bytes_view header_tag;
  bytes_view authenticated;  // every header byte before the tag
  bytes_view body;
};

result<parsed> parse(bytes_view envelope, std::size_t max_data_keys) {
  byte_reader in(envelope);
  parsed p;
  auto start = in.take(magic.size());
  if (!start || !std::equal(start->begin(), start->end(), magic.begin())) return errc::malformed_envelope;
  auto version = in.u8();
  auto suite = in.be<std::uint16_t>();
  if (!version || !suite) return errc::malformed_envelope;
  if (*version != envelope_version || !known_suite(*suite)) return errc::unsupported_version;
  p.header.version = *version;
  p.header.suite = *suite;
  auto id = in.take(message_id_bytes(*suite));
  if (!id) return errc::malformed_envelope;
  p.header.message_id.assign(id->begin(), id->end());
  const auto context_start = in.position();
  auto pairs = in.be<std::uint16_t>();
  if (!pairs) return errc::malformed_envelope;
  for (std::uint16_t k = 0; k < *pairs; ++k) {
    auto key_length = in.be<std::uint16_t>();
    if (!key_length) return errc::malformed_envelope;
    auto key = take_string(in, *key_length);
    if (!key) return key.error();
    auto value_length = in.be<std::uint16_t>();
    if (!value_length) return errc::malformed_envelope;
    auto value = take_string(in, *value_length);
    if (!value) return value.error();
    // Stored in key order, each key once: one context has one encoding.
    if (key->empty() || (!p.header.context.empty() && p.header.context.rbegin()->first >= *key))
      return errc::malformed_envelope;
    p.header.context.emplace_hint(p.header.context.end(), std::move(*key), std::move(*value));
  }
  p.context_bytes = envelope.subspan(context_start, in.position() - context_start);
  auto count = in.u8();
  if (!count || *count == 0) return errc::malformed_envelope;
  if (*count > max_data_keys) return errc::too_many_data_keys;
  for (std::uint8_t k = 0; k < *count; ++k) {
    encrypted_data_key edk;
    auto provider_length = in.u8();
    if (!provider_length || *provider_length == 0) return errc::malformed_envelope;
    auto provider = take_string(in, *provider_length);
    auto id_length = in.be<std::uint16_t>();
    if (!provider || !id_length) return errc::malformed_envelope;
    auto key_id = take_string(in, *id_length);
    auto wrapped_length = in.be<std::uint16_t>();
    if (!key_id || !wrapped_length) return errc::malformed_envelope;
    auto wrapped = in.take(*wrapped_length);
    if (!wrapped) return errc::malformed_envelope;
    p.header.data_keys.push_back({.provider = std::move(*provider),
                                  .key_id = std::move(*key_id),
                                  .wrapped = bytes(wrapped->begin(), wrapped->end())});
  }
  auto content = in.u8();
  auto frame_size = in.be<std::uint32_t>();
  if (!content || !frame_size) return errc::malformed_envelope;
  if ((*content == content_single && *frame_size != 0) || (*content == content_framed && *frame_size == 0) ||
      (*content != content_single && *content != content_framed))
    return errc::malformed_envelope;
  p.header.frame_size = *frame_size;
  auto commitment = in.take(commitment_bytes);
  if (!commitment) return errc::malformed_envelope;
  p.commitment = *commitment;
  p.authenticated = envelope.first(in.position());
  auto tag = in.take(aead_tag_bytes);
  if (!tag) return errc::malformed_envelope;
  p.header_tag = *tag;
  p.header.header_size = in.position();
  p.body = envelope.subspan(in.position());
  return p;
}

// The data key, the message's keys checked against the commitment, and the header's tag; the
// content cipher is left keyed for the body.
struct opened_header {
  std::shared_ptr<const prepared_data_key> data_key;
  std::size_t used = 0;  // the index of the data key that unwrapped it
};

// A message's keys for one call on this thread, in locked memory allocated once per thread
// rather than once per message, and wiped when the call is done with them.
class scratch_keys {
 public:
  scratch_keys() : keys_(storage()) {}
  ~scratch_keys() {
    OPENSSL_cleanse(keys_.content.data(), keys_.content.size());
    keys_.commitment.fill(0);
  }
  scratch_keys(const scratch_keys&) = delete;
  scratch_keys& operator=(const scratch_keys&) = delete;
  [[nodiscard]] message_keys& get() noexcept { return keys_; }

 private:
  static message_keys& storage() {
    thread_local message_keys keys;
    return keys;
  }
  message_keys& keys_;
};

void append_length_prefixed(std::string& out, std::string_view part) {
  const auto length = static_cast<std::uint32_t>(part.size());
  out.append(reinterpret_cast<const char*>(&length), sizeof length);
  out.append(part);
}

// The decrypt cache's key for a wrapped data key under a context, in a suite.
std::string decrypt_cache_key(std::uint16_t suite, const encrypted_data_key& edk, bytes_view context_bytes) {
  std::string key(1, 'd');
  key.reserve(1 + 2 + 4 * 4 + edk.provider.size() + edk.key_id.size() + edk.wrapped.size() +
              context_bytes.size());
  key.append(reinterpret_cast<const char*>(&suite), sizeof suite);
  append_length_prefixed(key, edk.provider);
  append_length_prefixed(key, edk.key_id);
  append_length_prefixed(key, as_chars(edk.wrapped));
  append_length_prefixed(key, as_chars(context_bytes));
  return key;
}

result<opened_header> open_header(std::span<kms* const> unwrappers, const parsed& p, data_key_cache* cache,
                                  message_keys& keys, content_cipher& cipher) {
  error_code last = errc::no_usable_data_key;
  for (std::size_t index = 0; index < p.header.data_keys.size(); ++index) {
    const auto& edk = p.header.data_keys[index];
    for (kms* provider : unwrappers) {
      if (provider == nullptr || provider->provider() != edk.provider) continue;
      const auto cache_key =
          cache != nullptr ? decrypt_cache_key(p.header.suite, edk, p.context_bytes) : std::string();
      std::shared_ptr<const prepared_data_key> data_key =
          cache != nullptr ? cache->take_for_decrypt(cache_key) : nullptr;
      if (data_key == nullptr) {
        auto unwrapped = provider->unwrap(edk, p.context_bytes);
        if (!unwrapped) {
          last = unwrapped.error();
          continue;
        }
        auto prepared = prepared_data_key::make(std::move(*unwrapped), p.header.suite);
        if (!prepared) return prepared.error();
        data_key = std::move(*prepared);
        if (cache != nullptr) cache->put_for_decrypt(cache_key, data_key);
      }
      if (auto derived = data_key->derive(p.header.message_id, keys); !derived) return derived.error();
      if (!equal_constant_time(keys.commitment, p.commitment)) return errc::commitment_mismatch;
      if (auto keyed = cipher.key(keys.content); !keyed) return keyed.error();
      if (!cipher.open(0, p.authenticated, p.header_tag, nullptr)) return errc::authentication_failed;
      return opened_header{.data_key = std::move(data_key), .used = index};
    }
  }
  // Say why the last candidate failed when one was tried (a destroyed version, say), or that none could be.
  return last == errc::unknown_key ? error_code(errc::no_usable_data_key) : last;
}

// decrypt_options::expected_context: every pair present with the same value.
result<void> check_expected(const envelope_header& h, const encryption_context& expected) {
  for (const auto& [key, value] : expected) {
    const auto found = h.context.find(key);
    if (found == h.context.end() || found->second != value) return errc::context_mismatch;
  }
  return {};
}

// Appends frame `sequence` (the final one when `last`) of `part` to `out`.
result<void> seal_frame(const message_keys& keys, bytes_view id, std::uint32_t sequence, bytes_view part,
                        bool last, bytes& out) {
  if (sequence == final_frame_marker) return errc::invalid_input_size;
  byte_writer w(out);
  if (last) {
    w.be<std::uint32_t>(final_frame_marker);
    w.be<std::uint32_t>(sequence);
    w.be<std::uint32_t>(static_cast<std::uint32_t>(part.size()));
  } else {
    w.be<std::uint32_t>(sequence);
  }
  const auto at = out.size();
  out.resize(at + part.size() + aead_tag_bytes);
  // Keyed per frame: between two frames of a stream, other messages may use this thread's context.
  content_cipher cipher(true);
  if (auto keyed = cipher.key(keys.content); !keyed) return keyed;
  return cipher.seal(sequence, part_aad(id, last ? "final" : "frame", sequence, part.size()).view(), part,
                     out.data() + at);
}

// Where reading frames stands: the next sequence number, and whether the final frame was read.
struct frame_cursor {
  std::uint32_t sequence = 1;
  bool done = false;
};

// Opens every whole frame at the start of `input` into `out`, from `cursor` on; a partial frame
// at the end is left. @returns the bytes used. Nothing of a frame that fails is left in `out`.
result<std::size_t> open_frames(bytes_view input, const message_keys& keys, bytes_view id, std::size_t frame,
                                frame_cursor& cursor, bytes& out) {
  std::size_t used = 0;
  content_cipher cipher(false);
  bool keyed = false;
  while (!cursor.done) {
    if (cursor.sequence == final_frame_marker) return errc::malformed_envelope;
    byte_reader in(input.subspan(used));
    auto marker = in.be<std::uint32_t>();
    if (!marker) break;
    const bool last = *marker == final_frame_marker;
    std::uint64_t length = frame;
    if (last) {
      auto stored_sequence = in.be<std::uint32_t>();
      auto content_length = in.be<std::uint32_t>();
      if (!stored_sequence || !content_length) break;
      if (*stored_sequence != cursor.sequence || *content_length > frame) return errc::malformed_envelope;
      length = *content_length;
    } else if (*marker != cursor.sequence) {
      return errc::malformed_envelope;  // a frame missing, repeated or out of order
    }
    auto sealed = in.take(static_cast<std::size_t>(length) + aead_tag_bytes);
    if (!sealed) break;  // the rest of the frame is not there (yet)
    if (!keyed) {
      if (auto k = cipher.key(keys.content); !k) return k.error();
      keyed = true;
    }
    const auto at = out.size();
    out.resize(at + static_cast<std::size_t>(length));
    auto opened =
        cipher.open(cursor.sequence, part_aad(id, last ? "final" : "frame", cursor.sequence, length).view(),
                    *sealed, out.data() + at);
    if (!opened) {
      out.resize(at);
      return opened.error();
    }
    used += in.position();
    ++cursor.sequence;
    cursor.done = last;
  }
  return used;
}

// The body of a parsed envelope, with the header opened (`cipher` keyed with its content key).
result<bytes> open_body(const parsed& p, const message_keys& keys, content_cipher& cipher) {
  const bytes_view id = p.header.message_id;
  if (p.header.frame_size == 0) {
    byte_reader in(p.body);
    auto length = in.be<std::uint64_t>();
    if (!length || *length > in.remaining() || in.remaining() - *length != aead_tag_bytes)
      return errc::malformed_envelope;
    auto sealed = in.take(static_cast<std::size_t>(*length) + aead_tag_bytes);
    if (!sealed) return errc::malformed_envelope;
    bytes plaintext(static_cast<std::size_t>(*length));
    if (auto opened = cipher.open(1, part_aad(id, "single", 1, *length).view(), *sealed, plaintext.data());
        !opened)
      return opened.error();
    return plaintext;
  }
  bytes plaintext;
  plaintext.reserve(p.body.size());  // more than the plaintext: no growth while frames are opened
  frame_cursor cursor;
  auto used = open_frames(p.body, keys, id, p.header.frame_size, cursor, plaintext);
  if (!used) return used.error();
  // Truncated (no final frame), or bytes after it.
  if (!cursor.done || *used != p.body.size()) return errc::malformed_envelope;
  return plaintext;
}

// A new message: its data key (from the cache, or new and wrapped by every provider), its id
// and keys, and its header appended to `out` (with `cipher` keyed for the body).
struct started_message {
  std::array<std::uint8_t, max_message_id_bytes> id_bytes{};
  std::size_t id_size = 0;
  std::uint32_t frame_size = 0;

  [[nodiscard]] bytes_view id() const noexcept { return {id_bytes.data(), id_size}; }
};

// The encrypt cache's key: the suite, the context, and the providers by identity.
std::string encrypt_cache_key(std::uint16_t suite, bytes_view context_bytes, std::span<kms* const> wrappers) {
  std::string key(1, 'e');
  key.reserve(1 + 2 + 4 + context_bytes.size() + wrappers.size() * (sizeof(std::uintptr_t) + 4 + 16));
  key.append(reinterpret_cast<const char*>(&suite), sizeof suite);
  append_length_prefixed(key, as_chars(context_bytes));
  for (kms* provider : wrappers) {
    const auto identity = reinterpret_cast<std::uintptr_t>(provider);
    key.append(reinterpret_cast<const char*>(&identity), sizeof identity);
    append_length_prefixed(key, provider != nullptr ? provider->provider() : std::string_view());
  }
  return key;
}

result<started_message> start_message(std::span<kms* const> wrappers, const encryption_context& context,
                                      std::uint32_t frame_size, data_key_cache* cache,
                                      std::size_t plaintext_bytes, std::uint16_t suite, bytes& out,
                                      std::size_t body_bytes, message_keys& keys, content_cipher& cipher) {
  if (wrappers.empty() || wrappers.size() > max_data_keys_stored) return errc::no_usable_data_key;
  if (!known_suite(suite)) return errc::unsupported_version;
  if (auto checked = check_context(context); !checked) return checked.error();
  const auto context_bytes = serialize_context(context);
  started_message m;
  m.frame_size = frame_size;
  m.id_size = message_id_bytes(suite);
  draw_message_id(std::span<std::uint8_t>(m.id_bytes.data(), m.id_size));
  cached_encryption_key key;
  std::string cache_key;
  if (cache != nullptr) {
    cache_key = encrypt_cache_key(suite, context_bytes, wrappers);
    if (auto hit = cache->take_for_encrypt(cache_key, plaintext_bytes)) key = std::move(*hit);
  }
  if (key.key == nullptr) {
    auto data_key = secret_bytes::random(detail::content_key_bytes);
    auto wrapped = std::make_shared<std::vector<encrypted_data_key>>();
    for (kms* provider : wrappers) {
      if (provider == nullptr) return errc::no_usable_data_key;
      auto edk = provider->wrap(data_key.view(), context_bytes);
      if (!edk) return edk.error();
      wrapped->push_back(std::move(*edk));
    }
    auto prepared = prepared_data_key::make(std::move(data_key), suite);
    if (!prepared) return prepared.error();
    key = {std::move(*prepared), std::move(wrapped)};
    if (cache != nullptr) cache->put_for_encrypt(cache_key, key, plaintext_bytes);
  }
  if (auto derived = key.key->derive(m.id(), keys); !derived) return derived.error();
  if (auto keyed = cipher.key(keys.content); !keyed) return keyed.error();
  const header_fields fields{.suite = suite,
                             .message_id = m.id(),
                             .context_bytes = context_bytes,
                             .data_keys = *key.wrapped,
                             .frame_size = frame_size};
  out.reserve(out.size() + header_size(fields) + body_bytes);
  if (auto written = append_header(out, fields, keys, cipher); !written) return written.error();
  return m;
}

}  // namespace

result<envelope_header> read_header(bytes_view envelope, std::size_t max_data_keys) {
  auto p = parse(envelope, std::min(max_data_keys, max_data_keys_stored));
  if (!p) return p.error();
  return std::move(p->header);
}

result<bytes> encrypt(std::span<kms* const> wrappers, bytes_view plaintext, const encryption_context& context,
                      const encrypt_options& options) {
  if (options.frame_size != 0 && plaintext.size() / options.frame_size >= final_frame_marker - 1)
    return errc::invalid_input_size;
  const std::size_t frame = options.frame_size;
  // The whole envelope in one allocation: the body adds its length and tag, or each frame its
  // number and tag (the final one a marker and its length too).
  const std::size_t body_bytes =
      frame == 0 ? 8 + plaintext.size() + aead_tag_bytes
                 : plaintext.size() + (plaintext.size() / frame + 1) * (12 + aead_tag_bytes);
  bytes out;
  content_cipher cipher(true);
  scratch_keys keys;
  auto m = start_message(wrappers, context, options.frame_size, options.cache, plaintext.size(),
                         options.suite, out, body_bytes, keys.get(), cipher);
  if (!m) return m.error();
  const bytes_view id = m->id();
  if (frame == 0) {
    byte_writer(out).be<std::uint64_t>(plaintext.size());
    const auto at = out.size();
    out.resize(at + plaintext.size() + aead_tag_bytes);
    if (auto sealed =
            cipher.seal(1, part_aad(id, "single", 1, plaintext.size()).view(), plaintext, out.data() + at);
        !sealed)
      return sealed.error();
    return out;
  }
  std::uint32_t sequence = 1;
  std::size_t offset = 0;
  // Full frames while more than a frame is left; the final frame holds the rest (maybe nothing).
  for (; plaintext.size() - offset > frame; offset += frame, ++sequence) {
    if (auto sealed = seal_frame(keys.get(), id, sequence, plaintext.subspan(offset, frame), false, out);
        !sealed)
      return sealed.error();
  }
  if (auto sealed = seal_frame(keys.get(), id, sequence, plaintext.subspan(offset), true, out); !sealed)
    return sealed.error();
  return out;
}

result<decrypted> decrypt(std::span<kms* const> unwrappers, bytes_view envelope,
                          const decrypt_options& options) {
  auto p = parse(envelope, std::min(options.max_data_keys, max_data_keys_stored));
  if (!p) return p.error();
  if (auto expected = check_expected(p->header, options.expected_context); !expected) return expected.error();
  content_cipher cipher(false);
  scratch_keys keys;
  auto opened = open_header(unwrappers, *p, options.cache, keys.get(), cipher);
  if (!opened) return opened.error();
  auto plaintext = open_body(*p, keys.get(), cipher);
  if (!plaintext) return plaintext.error();
  return decrypted{std::move(*plaintext), std::move(p->header.context),
                   std::move(p->header.data_keys[opened->used])};
}

result<bytes> rewrap(std::span<kms* const> unwrappers, std::span<kms* const> wrappers, bytes_view envelope,
                     const decrypt_options& options) {
  if (wrappers.empty() || wrappers.size() > max_data_keys_stored) return errc::no_usable_data_key;
  auto p = parse(envelope, std::min(options.max_data_keys, max_data_keys_stored));
  if (!p) return p.error();
  if (auto expected = check_expected(p->header, options.expected_context); !expected) return expected.error();
  content_cipher verifier(false);
  scratch_keys keys;
  // Rewrap asks the provider, not the cache: the version it was wrapped under may be retired.
  auto opened = open_header(unwrappers, *p, nullptr, keys.get(), verifier);
  if (!opened) return opened.error();
  std::vector<encrypted_data_key> data_keys;
  for (kms* provider : wrappers) {
    if (provider == nullptr) return errc::no_usable_data_key;
    auto edk = provider->wrap(opened->data_key->key().view(), p->context_bytes);
    if (!edk) return edk.error();
    data_keys.push_back(std::move(*edk));
  }
  const header_fields fields{.suite = p->header.suite,
                             .message_id = p->header.message_id,
                             .context_bytes = p->context_bytes,
                             .data_keys = data_keys,
                             .frame_size = p->header.frame_size};
  bytes out;
  out.reserve(header_size(fields) + p->body.size());
  content_cipher sealer(true);
  if (auto keyed = sealer.key(keys.get().content); !keyed) return keyed.error();
  if (auto written = append_header(out, fields, keys.get(), sealer); !written) return written.error();
  out.insert(out.end(), p->body.begin(), p->body.end());  // the body as it was
  return out;
}

// ---------------------------------------------------------------------------------------------
// Streaming: the same frames as encrypt() and decrypt() write and read, a frame at a time.

struct envelope_encryptor::state {
  started_message message;
  message_keys keys;  // the stream's own, in locked memory
  bytes header;
  bytes pending;  // plaintext not yet in a frame (less than a frame, or exactly one awaiting more)
  std::uint32_t sequence = 1;
  bool finished = false;

  result<void> seal(bool last, bytes& out) {
    auto sealed = seal_frame(keys, message.id(), sequence, pending, last, out);
    if (!sealed) return sealed;
    ++sequence;
    OPENSSL_cleanse(pending.data(), pending.size());
    pending.clear();
    return {};
  }
};

envelope_encryptor::envelope_encryptor(std::unique_ptr<state> s) noexcept : state_(std::move(s)) {}
envelope_encryptor::envelope_encryptor(envelope_encryptor&&) noexcept = default;
envelope_encryptor& envelope_encryptor::operator=(envelope_encryptor&&) noexcept = default;
envelope_encryptor::~envelope_encryptor() = default;

result<envelope_encryptor> envelope_encryptor::start(std::span<kms* const> wrappers,
                                                     const encryption_context& context,
                                                     std::uint32_t frame_size, std::uint16_t suite) {
  if (frame_size == 0) return errc::invalid_input_size;
  auto s = std::make_unique<state>();
  content_cipher cipher(true);
  auto m = start_message(wrappers, context, frame_size, nullptr, 0, suite, s->header, 0, s->keys, cipher);
  if (!m) return m.error();
  s->message = *m;
  s->pending.reserve(frame_size);
  return envelope_encryptor(std::move(s));
}

const bytes& envelope_encryptor::header() const noexcept {
  return state_->header;
}

result<void> envelope_encryptor::update(bytes_view chunk, bytes& out) {
  auto& s = *state_;
  if (s.finished) return errc::invalid_input_size;
  const std::size_t frame = s.message.frame_size;
  while (!chunk.empty()) {
    // A full frame is sealed only once more bytes follow it: the last frame must be the final one.
    if (s.pending.size() == frame) {
      if (auto sealed = s.seal(false, out); !sealed) return sealed;
    }
    const auto take = std::min(chunk.size(), frame - s.pending.size());
    s.pending.insert(s.pending.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(take));
    chunk = chunk.subspan(take);
  }
  return {};
}

result<void> envelope_encryptor::finish(bytes& out) {
  auto& s = *state_;
  if (s.finished) return errc::invalid_input_size;
  s.finished = true;
  return s.seal(true, out);
}

struct envelope_decryptor::state {
  std::vector<kms*> unwrappers;
  decrypt_options options;
  std::size_t max_header_bytes;
  bytes buffer;  // bytes received and not yet used
  std::optional<parsed> header;
  bytes header_copy;  // what `header`'s views point into
  std::optional<message_keys> keys;
  frame_cursor cursor;
  error_code failed;

  enum class progress : std::uint8_t { waiting, ready };

  // Tries to read and authenticate the header from the buffer: waiting until it is whole.
  result<progress> take_header() {
    // Not an envelope at all: said at once, not after max_header_bytes of it.
    if (!std::equal(buffer.begin(),
                    buffer.begin() + static_cast<std::ptrdiff_t>(std::min(buffer.size(), magic.size())),
                    magic.begin()))
      return errc::malformed_envelope;
    auto p = parse(buffer, std::min(options.max_data_keys, max_data_keys_stored));
    if (!p) {
      // Not whole yet, unless it already is as long as a header may be.
      if (p.error() == errc::malformed_envelope && buffer.size() < max_header_bytes) return progress::waiting;
      return p.error();
    }
    if (auto expected = check_expected(p->header, options.expected_context); !expected)
      return expected.error();
    if (p->header.frame_size == 0) return errc::invalid_input_size;  // a single body: use decrypt()
    header_copy.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(p->header.header_size));
    auto reparsed = parse(header_copy, std::min(options.max_data_keys, max_data_keys_stored));
    // The copy holds the header and no body: the parse above saw one in the same bytes.
    if (!reparsed) return reparsed.error();
    content_cipher cipher(false);
    keys.emplace();
    auto opened = open_header(unwrappers, *reparsed, options.cache, *keys, cipher);
    if (!opened) {
      keys.reset();
      return opened.error();
    }
    buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(p->header.header_size));
    header = std::move(*reparsed);
    return progress::ready;
  }

  // Opens every whole frame in the buffer into `out`.
  result<void> take_frames(bytes& out) {
    auto used = open_frames(buffer, *keys, header->header.message_id, header->header.frame_size, cursor, out);
    if (!used) return used.error();
    buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(*used));
    if (cursor.done && !buffer.empty()) return errc::malformed_envelope;  // bytes after the final frame
    return {};
  }

  // How many more bytes the frame begun in the buffer needs before it can be opened (at least
  // one): its marker first, then a final frame's length, then the rest.
  [[nodiscard]] std::size_t bytes_to_complete_frame() const {
    if (buffer.size() < 4) return 4 - buffer.size();
    std::size_t whole = 4 + header->header.frame_size + aead_tag_bytes;
    if (load_be<std::uint32_t>(buffer.data()) == final_frame_marker) {
      if (buffer.size() < 12) return 12 - buffer.size();
      whole = 12 + static_cast<std::size_t>(load_be<std::uint32_t>(buffer.data() + 8)) + aead_tag_bytes;
    }
    return whole > buffer.size() ? whole - buffer.size() : 1;
  }

  // Opens the frames of `chunk` without copying it into the buffer where it can: a frame begun
  // earlier is completed with only the bytes it lacks, whole frames are opened where they lie,
  // and only an unfinished one is kept (copying every chunk in and moving the rest down after
  // each frame cost as much as the frames' AES-GCM).
  result<void> take_chunk(bytes_view chunk, bytes& out) {
    while (!buffer.empty() && !chunk.empty() && !cursor.done) {
      const auto take = std::min(bytes_to_complete_frame(), chunk.size());
      buffer.insert(buffer.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(take));
      chunk = chunk.subspan(take);
      if (auto frames = take_frames(out); !frames) return frames;
    }
    if (chunk.empty()) return {};
    if (cursor.done) return errc::malformed_envelope;  // bytes after the final frame
    auto used = open_frames(chunk, *keys, header->header.message_id, header->header.frame_size, cursor, out);
    if (!used) return used.error();
    if (cursor.done && *used != chunk.size()) return errc::malformed_envelope;
    buffer.assign(chunk.begin() + static_cast<std::ptrdiff_t>(*used), chunk.end());
    return {};
  }
};

envelope_decryptor::envelope_decryptor(std::span<kms* const> unwrappers, decrypt_options options,
                                       std::size_t max_header_bytes)
    : state_(std::make_unique<state>()) {
  state_->unwrappers.assign(unwrappers.begin(), unwrappers.end());
  state_->options = std::move(options);
  state_->max_header_bytes = max_header_bytes;
}
envelope_decryptor::envelope_decryptor(envelope_decryptor&&) noexcept = default;
envelope_decryptor& envelope_decryptor::operator=(envelope_decryptor&&) noexcept = default;
envelope_decryptor::~envelope_decryptor() = default;

result<void> envelope_decryptor::update(bytes_view chunk, bytes& out) {
  auto& s = *state_;
  if (s.failed) return s.failed;
  if (s.cursor.done && !chunk.empty()) return s.failed = errc::malformed_envelope;
  if (s.header) {
    if (auto frames = s.take_chunk(chunk, out); !frames) return s.failed = frames.error();
    return {};
  }
  s.buffer.insert(s.buffer.end(), chunk.begin(), chunk.end());
  auto ready = s.take_header();
  if (!ready) return s.failed = ready.error();
  if (*ready == state::progress::waiting) return {};
  if (auto frames = s.take_frames(out); !frames)
    return s.failed = frames.error();  // what came with the header
  return {};
}

result<void> envelope_decryptor::finish() {
  auto& s = *state_;
  if (s.failed) return s.failed;
  if (!s.cursor.done) return s.failed = errc::malformed_envelope;  // truncated: no final frame
  return {};
}

const envelope_header* envelope_decryptor::header() const noexcept {
  return state_->header ? &state_->header->header : nullptr;
}

}  // namespace keel::crypto
