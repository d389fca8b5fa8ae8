// The local keyring: versioned AES-256 KEKs wrapping data keys with AES-256-GCM. The key id and
// the caller's aad are authenticated, so a wrapped key moved to another id or context fails.
#include <keel/crypto/aead.hpp>
#include <keel/crypto/kms.hpp>

#include <charconv>
#include <string>
#include <utility>

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
  if (version == 0 || versions_.contains(version)) return errc::unknown_key;
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
  const std::lock_guard lock(mutex_);
  const auto it = versions_.find(primary_);
  if (it == versions_.end()) return errc::unknown_key;  // never rotated
  if (it->second.state != key_state::enabled) return errc::key_disabled;
  const auto id = key_id(primary_);
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
