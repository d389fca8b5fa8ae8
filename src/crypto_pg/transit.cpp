// The transit engine: each key a keyring (versions, states, min_decryption_version) plus its
// transit settings, stored as one secret in the secret store and cached here. A ciphertext is
// the keyring's wrapped form of the plaintext — AES-256-GCM under the version's key with the key
// name, version and context as associated data — in Vault's "vault:v<version>:<base64>" text.
#include <keel/core/byte_io.hpp>
#include <keel/crypto/kms.hpp>
#include <keel/crypto_pg/transit.hpp>
#include <keel/pg/advisory_lock.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <utility>

namespace keel::crypto {

struct transit_engine::key_entry {
  transit_key_info info;
  std::unique_ptr<keyring> ring;
  std::chrono::steady_clock::time_point loaded;
};

namespace {

constexpr std::array<std::uint8_t, 4> entry_magic = {'K', 'T', 'K', '1'};
constexpr std::string_view name_prefix = "transit/";
constexpr std::string_view engine_actor = "keel.transit";
// One lock for every change to any transit key, across processes: changes are rare, and a
// rotation lost to a concurrent one would strand what the lost version encrypted.
constexpr auto change_lock = pg::advisory_key::named("keel.crypto.transit");

bool valid_key_name(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '_' || ch == '.';
  });
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

secret_bytes serialize(const transit_engine::key_entry& entry) {
  bytes head(entry_magic.begin(), entry_magic.end());
  byte_writer w(head);
  w.u8(static_cast<std::uint8_t>((entry.info.derived ? 1U : 0U) | (entry.info.deletion_allowed ? 2U : 0U)));
  w.be<std::uint32_t>(entry.info.min_encryption_version);
  w.be<std::uint32_t>(static_cast<std::uint32_t>(entry.info.versions.size()));
  for (const auto& [version, created] : entry.info.versions) {
    w.be<std::uint32_t>(version);
    w.be<std::uint64_t>(static_cast<std::uint64_t>(created));
  }
  const secret_bytes ring = entry.ring->serialize();
  secret_bytes out(head.size() + ring.size());
  std::copy(head.begin(), head.end(), out.data());
  std::copy(ring.view().begin(), ring.view().end(), out.data() + head.size());
  return out;
}

result<std::shared_ptr<transit_engine::key_entry>> deserialize(std::string_view name, bytes_view stored) {
  byte_reader in(stored);
  auto magic = in.take(entry_magic.size());
  auto flags = in.u8();
  auto min_encryption = in.be<std::uint32_t>();
  auto count = in.be<std::uint32_t>();
  if (!magic || !std::equal(magic->begin(), magic->end(), entry_magic.begin()) || !flags || !min_encryption ||
      !count)
    return errc::malformed_key_file;
  auto entry = std::make_shared<transit_engine::key_entry>();
  entry->info.name = std::string(name);
  entry->info.derived = (*flags & 1U) != 0;
  entry->info.deletion_allowed = (*flags & 2U) != 0;
  entry->info.min_encryption_version = *min_encryption;
  for (std::uint32_t i = 0; i < *count; ++i) {
    auto version = in.be<std::uint32_t>();
    auto created = in.be<std::uint64_t>();
    if (!version || !created) return errc::malformed_key_file;
    entry->info.versions.emplace(*version, static_cast<std::int64_t>(*created));
  }
  auto ring = keyring::deserialize(stored.subspan(in.position()));
  if (!ring) return ring.error();
  if ((*ring)->name() != name) return errc::malformed_key_file;
  entry->ring = std::move(*ring);
  entry->info.latest_version = entry->ring->primary();
  entry->info.min_decryption_version = entry->ring->min_decryption_version();
  entry->loaded = std::chrono::steady_clock::now();
  return entry;
}

// A copy that can be changed and published in place of the cached one.
result<std::shared_ptr<transit_engine::key_entry>> clone(const transit_engine::key_entry& entry) {
  return deserialize(entry.info.name, serialize(entry).view());
}

struct parsed_ciphertext {
  std::uint32_t version = 0;
  bytes wrapped;
};

result<parsed_ciphertext> parse_ciphertext(std::string_view text) {
  constexpr std::string_view prefix = "vault:v";
  if (!text.starts_with(prefix)) return errc::malformed_ciphertext;
  text.remove_prefix(prefix.size());
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return errc::malformed_ciphertext;
  parsed_ciphertext out;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + colon, out.version);
  if (ec != std::errc() || end != text.data() + colon || out.version == 0) return errc::malformed_ciphertext;
  auto wrapped = from_base64(text.substr(colon + 1));
  if (!wrapped) return errc::malformed_ciphertext;
  out.wrapped = std::move(*wrapped);
  return out;
}

// The version an encryption uses: the latest, or the one asked for if it is allowed.
result<std::uint32_t> encryption_version(const transit_key_info& info, std::uint32_t asked) {
  const std::uint32_t version = asked == 0 ? info.latest_version : asked;
  if (version > info.latest_version || !info.versions.contains(version)) return errc::unknown_key;
  const std::uint32_t floor = std::max(info.min_encryption_version, info.min_decryption_version);
  if (version < floor) return errc::key_disabled;
  return version;
}

}  // namespace

transit_engine::transit_engine(secret_store& store, std::string tenant, std::chrono::milliseconds cache_ttl,
                               bool audit_data_calls)
    : store_(store), tenant_(std::move(tenant)), cache_ttl_(cache_ttl), audit_data_calls_(audit_data_calls) {}

result<std::shared_ptr<transit_engine::key_entry>> transit_engine::fetch(pg::connection& c,
                                                                         std::string_view name) {
  if (!valid_key_name(name)) return errc::invalid_secret_name;
  auto stored = store_.get(c, {tenant_, std::string(name_prefix) + std::string(name)}, engine_actor);
  if (!stored) {
    if (stored.error() == errc::secret_deleted) return errc::secret_not_found;
    return stored.error();
  }
  auto entry = deserialize(name, stored->value.view());
  if (!entry) return entry.error();
  const std::lock_guard lock(mutex_);
  cache_.insert_or_assign(std::string(name), *entry);
  return entry;
}

result<std::shared_ptr<transit_engine::key_entry>> transit_engine::load(pg::connection& c,
                                                                        std::string_view name,
                                                                        std::uint32_t at_least_version) {
  {
    const std::lock_guard lock(mutex_);
    if (auto it = cache_.find(name); it != cache_.end()) {
      const auto& entry = it->second;
      const bool fresh = std::chrono::steady_clock::now() - entry->loaded < cache_ttl_;
      if (fresh && entry->info.latest_version >= at_least_version) return entry;
    }
  }
  return fetch(c, name);
}

template <class Change>
result<transit_key_info> transit_engine::change(pg::connection& c, std::string_view name,
                                                std::string_view actor, Change&& apply) {
  auto held = pg::advisory_lock::acquire(c, change_lock);
  if (!held) return held.error();
  auto current = fetch(c, name);  // the stored key, not the cache: another process may have changed it
  if (!current) return current.error();
  auto next = clone(**current);
  if (!next) return next.error();
  if (auto applied = apply(**next); !applied) return applied.error();
  (*next)->info.latest_version = (*next)->ring->primary();
  (*next)->info.min_decryption_version = (*next)->ring->min_decryption_version();
  auto stored =
      store_.put(c, {tenant_, std::string(name_prefix) + std::string(name)}, serialize(**next).view(), actor);
  if (!stored) return stored.error();
  (*next)->loaded = std::chrono::steady_clock::now();
  const std::lock_guard lock(mutex_);
  cache_.insert_or_assign(std::string(name), *next);
  return (*next)->info;
}

result<transit_key_info> transit_engine::create_key(pg::connection& c, std::string_view name,
                                                    std::string_view actor,
                                                    const transit_key_options& options) {
  if (!valid_key_name(name)) return errc::invalid_secret_name;
  if (options.type != "aes256-gcm96") return errc::unsupported_key_type;
  auto held = pg::advisory_lock::acquire(c, change_lock);
  if (!held) return held.error();
  auto existing = fetch(c, name);
  if (existing) return errc::key_exists;
  if (existing.error() != errc::secret_not_found) return existing.error();
  auto entry = std::make_shared<key_entry>();
  entry->ring = std::make_unique<keyring>(std::string(name));
  entry->ring->rotate();
  entry->info.name = std::string(name);
  entry->info.derived = options.derived;
  entry->info.versions.emplace(1, unix_now());
  entry->info.latest_version = 1;
  entry->info.min_decryption_version = 1;
  auto stored = store_.put(c, {tenant_, std::string(name_prefix) + std::string(name)},
                           serialize(*entry).view(), actor, R"({"kind": "transit key"})");
  if (!stored) return stored.error();
  entry->loaded = std::chrono::steady_clock::now();
  const std::lock_guard lock(mutex_);
  cache_.insert_or_assign(std::string(name), entry);
  return entry->info;
}

result<transit_key_info> transit_engine::read_key(pg::connection& c, std::string_view name) {
  auto entry = load(c, name);
  if (!entry) return entry.error();
  return (*entry)->info;
}

result<std::vector<std::string>> transit_engine::list_keys(pg::connection& c, std::string_view actor) {
  auto listed = store_.list(c, tenant_, actor, name_prefix);
  if (!listed) return listed.error();
  std::vector<std::string> names;
  for (const auto& secret : *listed) {
    if (!secret.deleted_at) names.push_back(secret.name.substr(name_prefix.size()));
  }
  return names;
}

result<transit_key_info> transit_engine::rotate(pg::connection& c, std::string_view name,
                                                std::string_view actor) {
  return change(c, name, actor, [](key_entry& entry) -> result<void> {
    const std::uint32_t version = entry.ring->rotate();
    entry.info.versions.emplace(version, unix_now());
    return {};
  });
}

result<transit_key_info> transit_engine::configure(pg::connection& c, std::string_view name,
                                                   const transit_key_config& config, std::string_view actor) {
  return change(c, name, actor, [&](key_entry& entry) -> result<void> {
    const std::uint32_t latest = entry.ring->primary();
    const std::uint32_t min_decryption =
        config.min_decryption_version.value_or(entry.ring->min_decryption_version());
    const std::uint32_t min_encryption =
        config.min_encryption_version.value_or(entry.info.min_encryption_version);
    if (min_decryption == 0 || min_decryption > latest) return errc::invalid_key_config;
    if (min_encryption != 0 && (min_encryption < min_decryption || min_encryption > latest))
      return errc::invalid_key_config;
    if (auto set = entry.ring->set_min_decryption_version(min_decryption); !set) return set.error();
    entry.info.min_encryption_version = min_encryption;
    if (config.deletion_allowed) entry.info.deletion_allowed = *config.deletion_allowed;
    return {};
  });
}

result<void> transit_engine::delete_key(pg::connection& c, std::string_view name, std::string_view actor) {
  auto held = pg::advisory_lock::acquire(c, change_lock);
  if (!held) return held.error();
  auto current = fetch(c, name);
  if (!current) return current.error();
  if (!(*current)->info.deletion_allowed) return errc::deletion_not_allowed;
  const secret_ref ref{tenant_, std::string(name_prefix) + std::string(name)};
  // Every stored version of the key's material goes, then the secret itself.
  auto versions = store_.history(c, ref, actor);
  if (!versions) return versions.error();
  for (const auto& v : *versions) {
    if (!v.destroyed_at) {
      if (auto destroyed = store_.destroy(c, ref, v.version, actor); !destroyed) return destroyed.error();
    }
  }
  if (auto removed = store_.remove(c, ref, actor); !removed) return removed.error();
  const std::lock_guard lock(mutex_);
  if (auto it = cache_.find(name); it != cache_.end()) cache_.erase(it);
  return {};
}

template <class T>
result<T> transit_engine::audited(pg::connection& c, std::string_view action, std::string_view actor,
                                  std::string_view name, std::uint32_t version, result<T> outcome) {
  if (!audit_data_calls_) return outcome;
  // A failed call is audited too, with its reason; a call whose audit row cannot be written
  // fails, so nothing is decrypted unaudited.
  const std::string said = outcome ? std::string("ok") : outcome.error().message();
  if (auto recorded = store_.record(c, audit_record{.action = action,
                                                    .actor = actor,
                                                    .tenant = tenant_,
                                                    .name = name,
                                                    .version = static_cast<std::int32_t>(version),
                                                    .outcome = said});
      !recorded)
    return recorded.error();
  return outcome;
}

std::uint32_t transit_ciphertext_version(std::string_view ciphertext) {
  auto parsed = parse_ciphertext(ciphertext);
  return parsed ? parsed->version : 0;
}

result<std::string> transit_engine::encrypt_unaudited(pg::connection& c, std::string_view name,
                                                      bytes_view plaintext, bytes_view context,
                                                      std::uint32_t key_version) {
  auto entry = load(c, name, key_version);
  if (!entry) return entry.error();
  const auto& info = (*entry)->info;
  if (info.derived && context.empty()) return errc::context_required;
  auto version = encryption_version(info, key_version);
  if (!version) return version.error();
  auto sealed = (*entry)->ring->wrap_with(*version, plaintext, context);
  if (!sealed) return sealed.error();
  return "vault:v" + std::to_string(*version) + ":" + to_base64(sealed->wrapped);
}

result<secret_bytes> transit_engine::decrypt_unaudited(pg::connection& c, std::string_view name,
                                                       std::string_view ciphertext, bytes_view context) {
  auto parsed = parse_ciphertext(ciphertext);
  if (!parsed) return parsed.error();
  auto entry = load(c, name, parsed->version);
  if (!entry) return entry.error();
  if ((*entry)->info.derived && context.empty()) return errc::context_required;
  const encrypted_data_key edk{"local", std::string(name) + "/" + std::to_string(parsed->version),
                               std::move(parsed->wrapped)};
  return (*entry)->ring->unwrap(edk, context);
}

result<std::string> transit_engine::encrypt(pg::connection& c, std::string_view name, bytes_view plaintext,
                                            bytes_view context, std::uint32_t key_version,
                                            std::string_view actor) {
  auto sealed = encrypt_unaudited(c, name, plaintext, context, key_version);
  const std::uint32_t version = sealed ? transit_ciphertext_version(*sealed) : key_version;
  return audited(c, "transit.encrypt", actor, name, version, std::move(sealed));
}

result<secret_bytes> transit_engine::decrypt(pg::connection& c, std::string_view name,
                                             std::string_view ciphertext, bytes_view context,
                                             std::string_view actor) {
  return audited(c, "transit.decrypt", actor, name, transit_ciphertext_version(ciphertext),
                 decrypt_unaudited(c, name, ciphertext, context));
}

result<std::string> transit_engine::rewrap(pg::connection& c, std::string_view name,
                                           std::string_view ciphertext, bytes_view context,
                                           std::uint32_t key_version, std::string_view actor) {
  auto rewrapped = [&]() -> result<std::string> {
    auto plaintext = decrypt_unaudited(c, name, ciphertext, context);
    if (!plaintext) return plaintext.error();
    return encrypt_unaudited(c, name, plaintext->view(), context, key_version);
  }();
  return audited(c, "transit.rewrap", actor, name, transit_ciphertext_version(ciphertext),
                 std::move(rewrapped));
}

result<transit_data_key> transit_engine::data_key(pg::connection& c, std::string_view name,
                                                  bytes_view context, bool include_plaintext, unsigned bits,
                                                  std::string_view actor) {
  auto made = [&]() -> result<transit_data_key> {
    if (bits != 128 && bits != 256 && bits != 512) return errc::invalid_key_size;
    auto key = secret_bytes::random(bits / 8);
    auto ciphertext = encrypt_unaudited(c, name, key.view(), context, 0);
    if (!ciphertext) return ciphertext.error();
    transit_data_key out;
    out.key_version = transit_ciphertext_version(*ciphertext);
    out.ciphertext = std::move(*ciphertext);
    if (include_plaintext) out.plaintext = std::move(key);
    return out;
  }();
  const std::uint32_t version = made ? made->key_version : 0;
  return audited(c, include_plaintext ? "transit.datakey.plaintext" : "transit.datakey.wrapped", actor, name,
                 version, std::move(made));
}

}  // namespace keel::crypto
