// The keel envelope, version 1 (docs/crypto.md has the layout). Parsing reads through
// keel::byte_reader, so every length is checked against what is left; the data key count is
// checked before any provider is asked to unwrap.
#include <keel/core/byte_io.hpp>
#include <keel/crypto/aead.hpp>
#include <keel/crypto/cache.hpp>
#include <keel/crypto/envelope.hpp>
#include <keel/crypto/kdf.hpp>

#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace keel::crypto {
namespace {

constexpr std::array<std::uint8_t, 4> magic = {'K', 'E', 'N', 'V'};
constexpr std::size_t message_id_bytes = 32;
constexpr std::size_t commitment_bytes = 32;
constexpr std::uint8_t content_single = 1;
constexpr std::uint8_t content_framed = 2;
constexpr std::uint32_t final_frame_marker = 0xFFFFFFFF;
constexpr std::size_t max_data_keys_stored = 255;

// Keys derived from the data key for this message: the body/header key and the commitment.
struct message_keys {
  secret_bytes content;
  secret_bytes commitment;
};

result<message_keys> derive(bytes_view data_key, bytes_view message_id) {
  constexpr std::string_view derive_label = "keel envelope v1 derive key";
  constexpr std::string_view commit_label = "keel envelope v1 commit key";
  // One extraction, two expansions: the same keys as two HKDF calls, at three HMACs instead of four.
  auto prk = hkdf_extract(hash_algorithm::sha512, data_key, message_id);
  if (!prk) return prk.error();
  auto content = hkdf_expand(hash_algorithm::sha512, prk->view(), as_bytes(derive_label), 32);
  if (!content) return content.error();
  auto commitment =
      hkdf_expand(hash_algorithm::sha512, prk->view(), as_bytes(commit_label), commitment_bytes);
  if (!commitment) return commitment.error();
  return message_keys{std::move(*content), std::move(*commitment)};
}

// A body nonce: eight zero bytes, then the sequence number (the header's tag uses sequence 0).
std::array<std::uint8_t, aead_nonce_bytes> nonce_for(std::uint32_t sequence) {
  std::array<std::uint8_t, aead_nonce_bytes> n{};
  store_be<std::uint32_t>(n.data() + 8, sequence);
  return n;
}

// What each body part authenticates besides its bytes: the message, the part's kind, its
// sequence number and length, so no part can move to another message or place.
bytes body_aad(bytes_view message_id, std::string_view kind, std::uint32_t sequence, std::uint64_t length) {
  bytes out(message_id.begin(), message_id.end());
  out.insert(out.end(), kind.begin(), kind.end());
  byte_writer w(out);
  w.be<std::uint32_t>(sequence);
  w.be<std::uint64_t>(length);
  return out;
}

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

// The header up to (not including) the commitment and its tag.
bytes header_prefix(const envelope_header& h, bytes_view context_bytes) {
  bytes out(magic.begin(), magic.end());
  byte_writer w(out);
  w.u8(h.version);
  w.be<std::uint16_t>(h.suite);
  w.append(h.message_id);
  w.append(context_bytes);
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
  return out;
}

result<void> check_data_key_sizes(const encrypted_data_key& k) {
  if (k.provider.empty() || k.provider.size() > 0xFF || k.key_id.size() > 0xFFFF || k.wrapped.size() > 0xFFFF)
    return errc::malformed_envelope;
  return {};
}

// Commitment, then the header tag: AES-GCM of nothing under the content key, nonce 0, the
// header bytes as AAD.
result<bytes> seal_header(const envelope_header& h, bytes_view context_bytes, const message_keys& keys) {
  for (const auto& k : h.data_keys) {
    if (auto sized = check_data_key_sizes(k); !sized) return sized.error();
  }
  bytes out = header_prefix(h, context_bytes);
  out.insert(out.end(), keys.commitment.view().begin(), keys.commitment.view().end());
  auto tag = seal(aead_algorithm::aes_gcm, keys.content.view(), nonce_for(0), {}, out);
  if (!tag) return tag.error();
  out.insert(out.end(), tag->begin(), tag->end());
  return out;
}

result<std::string> take_string(byte_reader& in, std::size_t length) {
  auto raw = in.take(length);
  if (!raw) return errc::malformed_envelope;
  return std::string(as_chars(*raw));
}

struct parsed {
  envelope_header header;
  bytes context_bytes;
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
  if (*version != envelope_version || *suite != suite_aes256_gcm_hkdf_sha512_commit)
    return errc::unsupported_version;
  p.header.version = *version;
  p.header.suite = *suite;
  auto id = in.take(message_id_bytes);
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
    p.header.context.emplace(std::move(*key), std::move(*value));
  }
  p.context_bytes.assign(envelope.begin() + static_cast<std::ptrdiff_t>(context_start),
                         envelope.begin() + static_cast<std::ptrdiff_t>(in.position()));
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

// The data key, the derived keys checked against the commitment, and the header's tag.
struct opened_header {
  secret_bytes data_key;
  message_keys keys;
  encrypted_data_key used;
};

// The decrypt cache's key for a wrapped data key under a context.
std::string decrypt_cache_key(const encrypted_data_key& edk, bytes_view context_bytes) {
  return edk.provider + '\0' + edk.key_id + '\0' + to_hex(edk.wrapped) + '\0' + to_hex(context_bytes);
}

result<opened_header> open_header(std::span<kms* const> unwrappers, const parsed& p, data_key_cache* cache) {
  error_code last = errc::no_usable_data_key;
  for (const auto& edk : p.header.data_keys) {
    for (kms* provider : unwrappers) {
      if (provider == nullptr || provider->provider() != edk.provider) continue;
      const auto cache_key = cache != nullptr ? decrypt_cache_key(edk, p.context_bytes) : std::string();
      std::optional<secret_bytes> cached =
          cache != nullptr ? cache->take_for_decrypt(cache_key) : std::nullopt;
      auto data_key =
          cached ? result<secret_bytes>(std::move(*cached)) : provider->unwrap(edk, p.context_bytes);
      if (!data_key) {
        last = data_key.error();
        continue;
      }
      if (cache != nullptr && !cached) cache->put_for_decrypt(cache_key, *data_key);
      auto keys = derive(data_key->view(), p.header.message_id);
      if (!keys) return keys.error();
      if (!equal_constant_time(keys->commitment.view(), p.commitment)) return errc::commitment_mismatch;
      bytes tag_and_nothing(p.header_tag.begin(), p.header_tag.end());
      auto verified =
          open(aead_algorithm::aes_gcm, keys->content.view(), nonce_for(0), tag_and_nothing, p.authenticated);
      if (!verified) return errc::authentication_failed;
      return opened_header{std::move(*data_key), std::move(*keys), edk};
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
  auto sealed = seal_into(aead_algorithm::aes_gcm, keys.content.view(), nonce_for(sequence), part,
                          body_aad(id, last ? "final" : "frame", sequence, part.size()),
                          std::span<std::uint8_t>(out.data() + at, part.size() + aead_tag_bytes));
  if (!sealed) return sealed.error();
  return {};
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
    const auto at = out.size();
    out.resize(at + static_cast<std::size_t>(length));
    auto opened = open_into(aead_algorithm::aes_gcm, keys.content.view(), nonce_for(cursor.sequence), *sealed,
                            body_aad(id, last ? "final" : "frame", cursor.sequence, length),
                            std::span<std::uint8_t>(out.data() + at, static_cast<std::size_t>(length)));
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

result<bytes> open_body(const parsed& p, const message_keys& keys) {
  const bytes_view id = p.header.message_id;
  if (p.header.frame_size == 0) {
    byte_reader in(p.body);
    auto length = in.be<std::uint64_t>();
    if (!length || *length > in.remaining() || in.remaining() - *length != aead_tag_bytes)
      return errc::malformed_envelope;
    auto sealed = in.take(static_cast<std::size_t>(*length) + aead_tag_bytes);
    if (!sealed) return errc::malformed_envelope;
    auto opened = open(aead_algorithm::aes_gcm, keys.content.view(), nonce_for(1), *sealed,
                       body_aad(id, "single", 1, *length));
    if (!opened) return opened.error();
    return std::move(*opened);
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

// A new message's header: a data key (from the cache, or new and wrapped by every provider),
// the keys derived for this message, the header bytes sealed.
struct started_message {
  envelope_header header;
  bytes header_bytes;
  message_keys keys;
};

result<started_message> start_message(std::span<kms* const> wrappers, const encryption_context& context,
                                      std::uint32_t frame_size, data_key_cache* cache,
                                      std::size_t plaintext_bytes) {
  if (wrappers.empty() || wrappers.size() > max_data_keys_stored) return errc::no_usable_data_key;
  if (auto checked = check_context(context); !checked) return checked.error();
  const auto context_bytes = serialize_context(context);
  started_message m;
  m.header = envelope_header{
      .message_id = random_bytes(message_id_bytes), .context = context, .frame_size = frame_size};
  secret_bytes data_key;
  std::string cache_key;
  if (cache != nullptr) {
    // The same context and the same providers (by identity) share a cached data key.
    cache_key = to_hex(context_bytes);
    for (kms* provider : wrappers) {
      cache_key += '\0';
      cache_key += std::string(provider != nullptr ? provider->provider() : "") + '@' +
                   std::to_string(reinterpret_cast<std::uintptr_t>(provider));
    }
    if (auto hit = cache->take_for_encrypt(cache_key, plaintext_bytes)) {
      data_key = std::move(hit->first);
      m.header.data_keys = std::move(hit->second);
    }
  }
  if (data_key.empty()) {
    data_key = secret_bytes::random(32);
    for (kms* provider : wrappers) {
      if (provider == nullptr) return errc::no_usable_data_key;
      auto edk = provider->wrap(data_key.view(), context_bytes);
      if (!edk) return edk.error();
      m.header.data_keys.push_back(std::move(*edk));
    }
    if (cache != nullptr) cache->put_for_encrypt(cache_key, data_key, m.header.data_keys, plaintext_bytes);
  }
  auto keys = derive(data_key.view(), m.header.message_id);
  if (!keys) return keys.error();
  m.keys = std::move(*keys);
  auto sealed = seal_header(m.header, context_bytes, m.keys);
  if (!sealed) return sealed.error();
  m.header_bytes = std::move(*sealed);
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
  auto m = start_message(wrappers, context, options.frame_size, options.cache, plaintext.size());
  if (!m) return m.error();
  bytes out = std::move(m->header_bytes);
  const bytes_view id = m->header.message_id;
  if (options.frame_size == 0) {
    byte_writer(out).be<std::uint64_t>(plaintext.size());
    const auto at = out.size();
    out.resize(at + plaintext.size() + aead_tag_bytes);
    auto sealed = seal_into(aead_algorithm::aes_gcm, m->keys.content.view(), nonce_for(1), plaintext,
                            body_aad(id, "single", 1, plaintext.size()),
                            std::span<std::uint8_t>(out.data() + at, plaintext.size() + aead_tag_bytes));
    if (!sealed) return sealed.error();
    return out;
  }
  const std::size_t frame = options.frame_size;
  // The whole envelope in one allocation: each frame adds its number and tag (the final one a
  // marker and its length too), so the buffer never grows and copies what it holds.
  out.reserve(out.size() + plaintext.size() + (plaintext.size() / frame + 1) * (12 + aead_tag_bytes));
  std::uint32_t sequence = 1;
  std::size_t offset = 0;
  // Full frames while more than a frame is left; the final frame holds the rest (maybe nothing).
  for (; plaintext.size() - offset > frame; offset += frame, ++sequence) {
    if (auto sealed = seal_frame(m->keys, id, sequence, plaintext.subspan(offset, frame), false, out);
        !sealed)
      return sealed.error();
  }
  if (auto sealed = seal_frame(m->keys, id, sequence, plaintext.subspan(offset), true, out); !sealed)
    return sealed.error();
  return out;
}

result<decrypted> decrypt(std::span<kms* const> unwrappers, bytes_view envelope,
                          const decrypt_options& options) {
  auto p = parse(envelope, std::min(options.max_data_keys, max_data_keys_stored));
  if (!p) return p.error();
  if (auto expected = check_expected(p->header, options.expected_context); !expected) return expected.error();
  auto opened = open_header(unwrappers, *p, options.cache);
  if (!opened) return opened.error();
  auto plaintext = open_body(*p, opened->keys);
  if (!plaintext) return plaintext.error();
  return decrypted{std::move(*plaintext), std::move(p->header.context), std::move(opened->used)};
}

result<bytes> rewrap(std::span<kms* const> unwrappers, std::span<kms* const> wrappers, bytes_view envelope,
                     const decrypt_options& options) {
  if (wrappers.empty() || wrappers.size() > max_data_keys_stored) return errc::no_usable_data_key;
  auto p = parse(envelope, std::min(options.max_data_keys, max_data_keys_stored));
  if (!p) return p.error();
  if (auto expected = check_expected(p->header, options.expected_context); !expected) return expected.error();
  auto opened = open_header(unwrappers, *p, nullptr);  // rewrap asks the provider: the version may be retired
  if (!opened) return opened.error();
  envelope_header h = p->header;
  h.data_keys.clear();
  for (kms* provider : wrappers) {
    if (provider == nullptr) return errc::no_usable_data_key;
    auto edk = provider->wrap(opened->data_key.view(), p->context_bytes);
    if (!edk) return edk.error();
    h.data_keys.push_back(std::move(*edk));
  }
  auto out = seal_header(h, p->context_bytes, opened->keys);
  if (!out) return out.error();
  out->insert(out->end(), p->body.begin(), p->body.end());  // the body as it was
  return std::move(*out);
}

// ---------------------------------------------------------------------------------------------
// Streaming: the same frames as encrypt() and decrypt() write and read, a frame at a time.

struct envelope_encryptor::state {
  started_message message;
  bytes pending;  // plaintext not yet in a frame (less than a frame, or exactly one awaiting more)
  std::uint32_t sequence = 1;
  bool finished = false;

  result<void> seal(bool last, bytes& out) {
    auto sealed = seal_frame(message.keys, message.header.message_id, sequence, pending, last, out);
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
                                                     std::uint32_t frame_size) {
  if (frame_size == 0) return errc::invalid_input_size;
  auto m = start_message(wrappers, context, frame_size, nullptr, 0);
  if (!m) return m.error();
  auto s = std::make_unique<state>();
  s->message = std::move(*m);
  s->pending.reserve(frame_size);
  return envelope_encryptor(std::move(s));
}

const bytes& envelope_encryptor::header() const noexcept {
  return state_->message.header_bytes;
}

result<void> envelope_encryptor::update(bytes_view chunk, bytes& out) {
  auto& s = *state_;
  if (s.finished) return errc::invalid_input_size;
  const std::size_t frame = s.message.header.frame_size;
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
    auto opened = open_header(unwrappers, *reparsed, options.cache);
    if (!opened) return opened.error();
    keys = std::move(opened->keys);
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
  s.buffer.insert(s.buffer.end(), chunk.begin(), chunk.end());
  if (!s.header) {
    auto ready = s.take_header();
    if (!ready) return s.failed = ready.error();
    if (*ready == state::progress::waiting) return {};
  }
  if (auto frames = s.take_frames(out); !frames) return s.failed = frames.error();
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
