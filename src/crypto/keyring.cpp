// The local keyring: versioned AES-256 KEKs wrapping data keys with AES-256-GCM. The key id and
// the caller's aad are authenticated, so a wrapped key moved to another id or context fails.
#include <keel/core/byte_io.hpp>
#include <keel/crypto/aead.hpp>
#include <keel/crypto/kms.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace keel::crypto {
namespace {

constexpr std::string_view wrap_label = "keel keyring v1";

bytes wrap_aad(std::string_view key_id, bytes_view aad) {
  bytes out(wrap_label.begin(), wrap_label.end());
  out.push_back(0);
  out.insert(out.end(), key_id.begin(), key_id.end());
  out.push_back(0);
  out.insert(out.end(), aad.begin(), aad.end());
  return out;
}

}  // namespace

std::string_view to_string(key_state s) noexcept {
  switch (s) {
    case key_state::enabled:
      return "enabled";
    case key_state::decrypt_only:
      return "decrypt_only";
    case key_state::destroyed:
      return "destroyed";
  }
  return "?";
}

keyring::keyring(std::string name) : name_(std::move(name)) {}

std::string keyring::key_id(std::uint32_t version) const {
  return name_ + "/" + std::to_string(version);
}

std::uint32_t keyring::rotate() {
  const std::lock_guard lock(mutex_);
  const std::uint32_t next = versions_.empty() ? 1 : versions_.rbegin()->first + 1;
  versions_.emplace(next, version_entry{secret_bytes::random(32), key_state::enabled});
  primary_ = next;
  return next;
}

result<void> keyring::import_version(std::uint32_t version, bytes_view key, key_state state) {
  if (key.size() != 32) return errc::invalid_key_size;
  const std::lock_guard lock(mutex_);
  if (version == 0) return errc::unknown_key;
  if (versions_.contains(version)) return errc::key_exists;
  versions_.emplace(version, version_entry{secret_bytes::copy_of(key), state});
  if (version > primary_) primary_ = version;
  if (state == key_state::destroyed) versions_[version].key = secret_bytes();
  return {};
}

result<void> keyring::set_state(std::uint32_t version, key_state state) {
  const std::lock_guard lock(mutex_);
  auto it = versions_.find(version);
  if (it == versions_.end()) return errc::unknown_key;
  if (it->second.state == key_state::destroyed && state != key_state::destroyed) return errc::key_destroyed;
  it->second.state = state;
  if (state == key_state::destroyed) it->second.key = secret_bytes();  // wiped now
  return {};
}

result<void> keyring::set_min_decryption_version(std::uint32_t version) {
  const std::lock_guard lock(mutex_);
  if (!versions_.contains(version)) return errc::unknown_key;
  min_decryption_version_ = version;
  return {};
}

std::uint32_t keyring::primary() const {
  const std::lock_guard lock(mutex_);
  return primary_;
}

std::uint32_t keyring::min_decryption_version() const {
  const std::lock_guard lock(mutex_);
  return min_decryption_version_;
}

std::vector<key_version_info> keyring::versions() const {
  const std::lock_guard lock(mutex_);
  std::vector<key_version_info> out;
  for (const auto& [version, entry] : versions_) out.push_back({version, entry.state, version == primary_});
  return out;
}

result<encrypted_data_key> keyring::wrap(bytes_view data_key, bytes_view aad) {
  return wrap_with(0, data_key, aad);
}

result<encrypted_data_key> keyring::wrap_with(std::uint32_t version, bytes_view data_key, bytes_view aad) {
  const std::lock_guard lock(mutex_);
  if (version == 0) version = primary_;
  const auto it = versions_.find(version);
  if (it == versions_.end()) return errc::unknown_key;  // never rotated, or no such version
  if (it->second.state != key_state::enabled) return errc::key_disabled;
  const auto id = key_id(version);
  bytes wrapped = random_bytes(aead_nonce_bytes);
  auto sealed = seal(aead_algorithm::aes_gcm, it->second.key.view(), wrapped, data_key, wrap_aad(id, aad));
  if (!sealed) return sealed.error();
  wrapped.insert(wrapped.end(), sealed->begin(), sealed->end());
  return encrypted_data_key{.provider = std::string(provider()), .key_id = id, .wrapped = std::move(wrapped)};
}

result<secret_bytes> keyring::unwrap(const encrypted_data_key& edk, bytes_view aad) {
  // "name/version", the name this keyring's.
  const auto slash = edk.key_id.rfind('/');
  if (edk.provider != provider() || slash == std::string::npos ||
      std::string_view(edk.key_id).substr(0, slash) != name_)
    return errc::unknown_key;
  std::uint32_t version = 0;
  const auto* first = edk.key_id.data() + slash + 1;
  const auto* last = edk.key_id.data() + edk.key_id.size();
  if (const auto [end, ec] = std::from_chars(first, last, version); ec != std::errc() || end != last)
    return errc::unknown_key;
  if (edk.wrapped.size() < aead_nonce_bytes + aead_tag_bytes) return errc::authentication_failed;
  const std::lock_guard lock(mutex_);
  const auto it = versions_.find(version);
  if (it == versions_.end()) return errc::unknown_key;
  if (it->second.state == key_state::destroyed) return errc::key_destroyed;
  if (version < min_decryption_version_) return errc::key_disabled;
  const bytes_view wrapped(edk.wrapped);
  secret_bytes out(wrapped.size() - aead_nonce_bytes - aead_tag_bytes);
  auto opened = open_into(aead_algorithm::aes_gcm, it->second.key.view(), wrapped.first(aead_nonce_bytes),
                          wrapped.subspan(aead_nonce_bytes), wrap_aad(edk.key_id, aad),
                          std::span<std::uint8_t>(out.data(), out.size()));
  if (!opened) return opened.error();
  return out;
}

}  // namespace keel::crypto

// ---------------------------------------------------------------------------------------------
// The keyring file: magic "KRNG", version 1, log2(N), r, p, a 16-byte salt, a 12-byte nonce,
// then AES-256-GCM (key: scrypt of the passphrase) of the contents, everything before it as AAD.
// Contents: name (2-byte length), primary, min decryption version, version count (4 bytes
// each), then per version: number (4), state (1), key (32; zeros once destroyed).
namespace keel::crypto {
namespace {

constexpr std::array<std::uint8_t, 4> file_magic = {'K', 'R', 'N', 'G'};
constexpr std::uint8_t file_version = 1;
constexpr std::uint8_t scrypt_log2_n = 15;
constexpr std::uint32_t scrypt_r = 8, scrypt_p = 1;

result<secret_bytes> passphrase_key(std::string_view passphrase, bytes_view salt, std::uint8_t log2_n,
                                    std::uint32_t r, std::uint32_t p) {
  if (log2_n < 10 || log2_n > 22 || r == 0 || r > 32 || p == 0 || p > 16) return errc::malformed_key_file;
  secret_bytes key(32);
  const std::uint64_t n = std::uint64_t{1} << log2_n;
  const std::uint64_t max_memory = 128 * n * r * p + (std::uint64_t{1} << 24U);
  if (EVP_PBE_scrypt(passphrase.data(), passphrase.size(), salt.data(), salt.size(), n, r, p, max_memory,
                     key.data(), key.size()) != 1) {
    return errc::openssl_failure;
  }
  return key;
}

error_code last_errno() {
  return {errno, boost::system::system_category()};
}

}  // namespace

secret_bytes keyring::serialize() const {
  bytes buffer;
  {
    const std::lock_guard lock(mutex_);
    byte_writer w(buffer);
    w.be<std::uint16_t>(static_cast<std::uint16_t>(name_.size()));
    w.append(as_bytes(name_));
    w.be<std::uint32_t>(primary_);
    w.be<std::uint32_t>(min_decryption_version_);
    w.be<std::uint32_t>(static_cast<std::uint32_t>(versions_.size()));
    for (const auto& [version, entry] : versions_) {
      w.be<std::uint32_t>(version);
      w.u8(static_cast<std::uint8_t>(entry.state));
      if (entry.state == key_state::destroyed) {
        w.append(bytes(32, 0));
      } else {
        w.append(entry.key.view());
      }
    }
  }
  auto out = secret_bytes::copy_of(buffer);
  OPENSSL_cleanse(buffer.data(), buffer.size());
  return out;
}

result<std::unique_ptr<keyring>> keyring::deserialize(bytes_view serialized) {
  byte_reader contents(serialized);
  auto name_length = contents.be<std::uint16_t>();
  if (!name_length) return errc::malformed_key_file;
  auto name = contents.take(*name_length);
  auto primary = contents.be<std::uint32_t>();
  auto min_version = contents.be<std::uint32_t>();
  auto count = contents.be<std::uint32_t>();
  if (!name || !primary || !min_version || !count) return errc::malformed_key_file;
  auto ring = std::make_unique<keyring>(std::string(as_chars(*name)));
  for (std::uint32_t k = 0; k < *count; ++k) {
    auto number = contents.be<std::uint32_t>();
    auto state = contents.u8();
    auto bytes_of_key = contents.take(32);
    if (!number || !state || *state > static_cast<std::uint8_t>(key_state::destroyed) || !bytes_of_key)
      return errc::malformed_key_file;
    if (auto added = ring->import_version(*number, *bytes_of_key, static_cast<key_state>(*state)); !added)
      return errc::malformed_key_file;
  }
  if (auto end = contents.expect_end(); !end) return errc::malformed_key_file;
  if (*primary != 0 && !ring->versions_.contains(*primary)) return errc::malformed_key_file;
  ring->primary_ = *primary;
  ring->min_decryption_version_ = *min_version;
  return ring;
}

result<void> keyring::save(const std::string& path, std::string_view passphrase) const {
  if (passphrase.empty()) return errc::invalid_input_size;
  // The contents, in locked memory: they hold every key.
  const secret_bytes plain = serialize();

  bytes out(file_magic.begin(), file_magic.end());
  byte_writer w(out);
  w.u8(file_version);
  w.u8(scrypt_log2_n);
  w.be<std::uint32_t>(scrypt_r);
  w.be<std::uint32_t>(scrypt_p);
  const auto salt = random_bytes(16);
  const auto nonce = random_bytes(aead_nonce_bytes);
  w.append(salt);
  w.append(nonce);
  auto key = passphrase_key(passphrase, salt, scrypt_log2_n, scrypt_r, scrypt_p);
  if (!key) return key.error();
  auto sealed = seal(aead_algorithm::aes_gcm, key->view(), nonce, plain.view(), out);
  if (!sealed) return sealed.error();
  out.insert(out.end(), sealed->begin(), sealed->end());

  // Written beside the target with mode 0600 from the start, then renamed over it.
  // A name of its own, so that two processes saving at once never write into one temporary.
  const std::string temporary = path + ".tmp-" + std::to_string(::getpid()) + "-" + to_hex(random_bytes(6));
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return last_errno();
  const bool written =
      ::write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(temporary.c_str(), path.c_str()) != 0) {
    const auto failure = last_errno();
    (void)::unlink(temporary.c_str());
    return failure;
  }
  return {};
}

result<std::unique_ptr<keyring>> keyring::load(const std::string& path, std::string_view passphrase) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return last_errno();
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const auto failure = last_errno();
    ::close(fd);
    return failure;
  }
  // Checked on the open file, so the answer is about the bytes read.
  if ((info.st_mode & 077) != 0 || info.st_uid != ::geteuid() || !S_ISREG(info.st_mode)) {
    ::close(fd);
    return errc::insecure_key_file;
  }
  bytes file(static_cast<std::size_t>(info.st_size));
  const bool read_all = ::read(fd, file.data(), file.size()) == static_cast<ssize_t>(file.size());
  ::close(fd);
  if (!read_all) return errc::malformed_key_file;

  byte_reader in(file);
  auto magic = in.take(file_magic.size());
  auto version = in.u8();
  auto log2_n = in.u8();
  auto r = in.be<std::uint32_t>();
  auto p = in.be<std::uint32_t>();
  auto salt = in.take(16);
  auto nonce = in.take(aead_nonce_bytes);
  if (!magic || !std::equal(magic->begin(), magic->end(), file_magic.begin()) || !version ||
      *version != file_version || !log2_n || !r || !p || !salt || !nonce) {
    return errc::malformed_key_file;
  }
  const auto header = bytes_view(file).first(in.position());
  auto sealed = in.take(in.remaining());
  if (!sealed || sealed->size() < aead_tag_bytes) return errc::malformed_key_file;
  auto key = passphrase_key(passphrase, *salt, *log2_n, *r, *p);
  if (!key) return key.error();
  secret_bytes plain(sealed->size() - aead_tag_bytes);
  auto opened = open_into(aead_algorithm::aes_gcm, key->view(), *nonce, *sealed, header,
                          std::span<std::uint8_t>(plain.data(), plain.size()));
  if (!opened) return opened.error();

  return deserialize(plain.view());
}

}  // namespace keel::crypto
