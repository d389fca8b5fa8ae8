// keel::crypto in the showcase: envelopes under a keyring kept in the state directory.
//   POST /api/crypto/encrypt  {"plaintext", "context": {"tenant": "acme"}} -> a base64 envelope
//   POST /api/crypto/decrypt  {"envelope", "context"}: the context pairs must match
//   POST /api/crypto/rewrap   {"envelope"}: its data key moved to the primary version
//   GET  /api/crypto/keyring  versions and states
//   POST /api/crypto/rotate   a new primary version
//   /v1/...                   Vault's HTTP API (keel::crypto_http): transit keys and encryption,
//                             KV version 2 secrets in keel::crypto_pg's store, wrapped by the keyring
//   GET  /api/crypto/vault    how to reach it (the token's file, the mounts)
// The keyring file is sealed under KEEL_KEYRING_PASSPHRASE; without it the showcase makes a
// passphrase and keeps it in a 0600 file beside the keyring — a demo convenience: a real
// service takes the passphrase from its secret store, never from the disk beside the keys. The
// Vault token (KEEL_SHOWCASE_VAULT_TOKEN) and the audit log's key are kept the same way.
#include <keel/core/bytes.hpp>
#include <keel/crypto.hpp>
#include <keel/crypto_http.hpp>
#include <keel/crypto_pg.hpp>
#include <keel/net.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <fcntl.h>
#include <unistd.h>

namespace showcase {
namespace {

namespace crypto = keel::crypto;
namespace net = keel::net;

struct crypto_part {
  std::unique_ptr<crypto::keyring> ring;
  std::string path;
  std::string passphrase;
  std::unique_ptr<crypto::secret_store> store;
  std::unique_ptr<crypto::transit_engine> transit;
  std::string token_file;
  [[nodiscard]] keel::result<void> save() const { return ring->save(path, passphrase); }
};

// A secret from the environment variable `env`, else from `file`, else made and kept there.
keel::result<std::string> demo_secret(const std::filesystem::path& file, const char* env) {
  if (const char* given = std::getenv(env); given != nullptr && *given != '\0') return given;
  if (std::ifstream in(file); in) {
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  const auto made = keel::to_hex(crypto::random_bytes(24));
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return keel::error_code(errno, boost::system::system_category());
  const bool written = ::write(fd, made.data(), made.size()) == static_cast<ssize_t>(made.size());
  ::close(fd);
  if (!written) return keel::error_code(EIO, boost::system::system_category());
  return made;
}

// {"k": "v", ...} as an encryption context; nullopt unless every value is a string.
std::optional<crypto::encryption_context> context_of(const boost::json::object& body) {
  crypto::encryption_context out;
  const auto* given = body.if_contains("context");
  if (given == nullptr) return out;
  if (!given->is_object()) return std::nullopt;
  for (const auto& [key, value] : given->as_object()) {
    if (!value.is_string()) return std::nullopt;
    out.emplace(std::string(key), std::string(value.as_string()));
  }
  return out;
}

boost::json::object header_json(const crypto::envelope_header& h) {
  boost::json::object context;
  for (const auto& [k, v] : h.context) context[k] = v;
  boost::json::array keys;
  for (const auto& k : h.data_keys) keys.push_back({{"provider", k.provider}, {"key_id", k.key_id}});
  return {{"context", context},
          {"data_keys", keys},
          {"frame_size", h.frame_size},
          {"header_bytes", h.header_size}};
}

net::response crypto_error(const keel::error_code& ec) {
  // The caller's input (a broken or foreign envelope, a wrong context) is 400; a key that can no
  // longer unwrap is 409 (rotation state); anything else is the server's.
  if (ec == crypto::errc::key_destroyed || ec == crypto::errc::key_disabled)
    return net::error_response(net::status::conflict, ec);
  if (ec.category() == crypto::crypto_category()) return net::error_response(net::status::bad_request, ec);
  return net::error_response(net::status::internal_server_error, ec);
}

std::optional<keel::bytes> envelope_of(const boost::json::object& body) {
  const auto* e = body.if_contains("envelope");
  if (e == nullptr || !e->is_string()) return std::nullopt;
  auto decoded = keel::from_base64(std::string_view(e->as_string()));
  if (!decoded) return std::nullopt;
  return std::move(*decoded);
}

}  // namespace

keel::result<void> mount_crypto(context& ctx) {
  auto part = std::make_shared<crypto_part>();
  std::error_code ignored;
  std::filesystem::create_directories(ctx.state_dir, ignored);
  part->path = (std::filesystem::path(ctx.state_dir) / "showcase.keyring").string();
  auto passphrase = demo_secret(std::filesystem::path(ctx.state_dir) / "showcase.keyring.passphrase",
                                "KEEL_KEYRING_PASSPHRASE");
  if (!passphrase) return passphrase.error();
  part->passphrase = std::move(*passphrase);
  if (std::filesystem::exists(part->path)) {
    auto loaded = crypto::keyring::load(part->path, part->passphrase);
    if (!loaded) return loaded.error();
    part->ring = std::move(*loaded);
  } else {
    part->ring = std::make_unique<crypto::keyring>("showcase");
    part->ring->rotate();
    if (auto saved = part->save(); !saved) return saved;
  }

  // The secrets store and the transit engine, wrapped by the keyring, served in Vault's API.
  {
    auto c = ctx.pool.acquire();
    if (!c) return c.error();
    if (auto migrated = crypto::secret_store::migrate(**c); !migrated) return migrated;
  }
  auto audit_key =
      demo_secret(std::filesystem::path(ctx.state_dir) / "showcase.audit-key", "KEEL_SHOWCASE_AUDIT_KEY");
  if (!audit_key) return audit_key.error();
  part->token_file = (std::filesystem::path(ctx.state_dir) / "showcase.vault-token").string();
  auto token = demo_secret(part->token_file, "KEEL_SHOWCASE_VAULT_TOKEN");
  if (!token) return token.error();
  part->store = std::make_unique<crypto::secret_store>(
      crypto::secret_store_options{.wrappers = {part->ring.get()},
                                   .audit_key = crypto::secret_bytes::copy_of(keel::as_bytes(*audit_key))});
  part->transit = std::make_unique<crypto::transit_engine>(*part->store);
  keel::crypto_http::mount(ctx.server,
                           {.tokens = {{.id = *token,
                                        .tenant = "showcase",
                                        .actor = "showcase-admin",
                                        .grants = {{"transit/*", {"sudo"}}, {"secret/*", {"sudo"}}}}},
                            .pool = &ctx.pool,
                            .secrets = part->store.get(),
                            .transit = part->transit.get()});
  ctx.server.get("/api/crypto/vault", [part](const net::request&) {
    return net::json_response(boost::json::object{{"address", "/v1/"},
                                                  {"token_file", part->token_file},
                                                  {"mounts", boost::json::array{"transit", "secret"}},
                                                  {"example",
                                                   "VAULT_ADDR=http://127.0.0.1:<port> VAULT_TOKEN=$(cat "
                                                   "<token_file>) vault write transit/keys/orders"}});
  });

  ctx.server.post(
      "/api/crypto/encrypt", net::json_handler([part](const net::request&, const boost::json::value& body) {
        const auto* o = body.if_object();
        const auto* text = o != nullptr ? o->if_contains("plaintext") : nullptr;
        auto context = o != nullptr ? context_of(*o) : std::nullopt;
        if (text == nullptr || !text->is_string() || !context) {
          return net::error_response(net::status::bad_request, "invalid request",
                                     R"(send {"plaintext": "...", "context": {"tenant": "acme"}})");
        }
        crypto::kms* keys[] = {part->ring.get()};
        auto sealed = crypto::encrypt(keys, keel::as_bytes(std::string_view(text->as_string())), *context);
        if (!sealed) return crypto_error(sealed.error());
        auto header = crypto::read_header(*sealed).value();
        auto out = header_json(header);
        out["envelope"] = keel::to_base64(*sealed);
        out["bytes"] = sealed->size();
        return net::json_response(out, net::status::created);
      }));

  ctx.server.post(
      "/api/crypto/decrypt", net::json_handler([part](const net::request&, const boost::json::value& body) {
        const auto* o = body.if_object();
        auto envelope = o != nullptr ? envelope_of(*o) : std::nullopt;
        auto context = o != nullptr ? context_of(*o) : std::nullopt;
        if (!envelope || !context) {
          return net::error_response(net::status::bad_request, "invalid request",
                                     R"(send {"envelope": "<base64>", "context": {"tenant": "acme"}})");
        }
        crypto::kms* keys[] = {part->ring.get()};
        auto opened = crypto::decrypt(keys, *envelope, {.expected_context = *context});
        if (!opened) return crypto_error(opened.error());
        return net::json_response(boost::json::object{
            {"plaintext", std::string(keel::as_chars(opened->plaintext))}, {"key_id", opened->used.key_id}});
      }));

  ctx.server.post("/api/crypto/rewrap",
                  net::json_handler([part](const net::request&, const boost::json::value& body) {
                    const auto* o = body.if_object();
                    auto envelope = o != nullptr ? envelope_of(*o) : std::nullopt;
                    if (!envelope) {
                      return net::error_response(net::status::bad_request, "invalid request",
                                                 R"(send {"envelope": "<base64>"})");
                    }
                    crypto::kms* keys[] = {part->ring.get()};
                    auto rewrapped = crypto::rewrap(keys, keys, *envelope);
                    if (!rewrapped) return crypto_error(rewrapped.error());
                    auto out = header_json(crypto::read_header(*rewrapped).value());
                    out["envelope"] = keel::to_base64(*rewrapped);
                    return net::json_response(out);
                  }));

  ctx.server.get("/api/crypto/keyring", [part](const net::request&) {
    boost::json::array versions;
    for (const auto& v : part->ring->versions()) {
      versions.push_back(
          {{"version", v.version}, {"state", crypto::to_string(v.state)}, {"primary", v.primary}});
    }
    return net::json_response(
        boost::json::object{{"name", part->ring->name()},
                            {"provider", part->ring->provider()},
                            {"min_decryption_version", part->ring->min_decryption_version()},
                            {"versions", versions}});
  });

  ctx.server.post("/api/crypto/rotate", [part](const net::request&) {
    const auto version = part->ring->rotate();
    if (auto saved = part->save(); !saved) return crypto_error(saved.error());
    return net::json_response(boost::json::object{{"primary", version}});
  });

  ctx.endpoints.push_back(
      {"POST", "/api/crypto/encrypt",
       "an envelope of {\"plaintext\", \"context\"}: AES-256-GCM, a data key per message"});
  ctx.endpoints.push_back(
      {"POST", "/api/crypto/decrypt", "opens {\"envelope\", \"context\"}; the context must match"});
  ctx.endpoints.push_back(
      {"POST", "/api/crypto/rewrap", "moves an envelope's data key to the primary version"});
  ctx.endpoints.push_back({"GET", "/api/crypto/keyring", "the keyring's versions and states (keel::crypto)"});
  ctx.endpoints.push_back({"POST", "/api/crypto/rotate", "a new primary key version"});
  ctx.endpoints.push_back(
      {"GET", "/api/crypto/vault",
       "Vault's API at /v1/ (transit, KV v2) on keel::crypto_pg: the token's file, the mounts"});
  return {};
}

}  // namespace showcase
