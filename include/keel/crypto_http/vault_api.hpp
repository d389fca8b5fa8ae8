#pragma once
/// @file keel/crypto_http/vault_api.hpp
/// @brief keel::crypto over HTTP in HashiCorp Vault's API, so Vault's clients work unchanged:
/// the transit engine (keys, encrypt, decrypt, rewrap, datakey, rotate, config) and a KV
/// version 2 secrets engine on keel::crypto::secret_store, with bearer tokens scoped to paths
/// by Vault-style grants.
///
/// @code
/// keel::crypto_http::mount(server, {
///     .tokens = {{.id = token_from_env, .tenant = "acme", .actor = "billing",
///                 .grants = {{"transit/encrypt/orders", {"update"}}, {"secret/data/billing/*", {"read"}}}}},
///     .pool = &pool, .secrets = &store, .transit = &transit});
/// // then: vault.write("transit/encrypt/orders", {plaintext: base64}) from node-vault, the vault CLI, ...
/// @endcode
#include <keel/crypto_pg/secrets.hpp>
#include <keel/crypto_pg/transit.hpp>
#include <keel/net/server.hpp>
#include <keel/pg/pool.hpp>

#include <string>
#include <vector>

namespace keel::crypto_http {

/// What a token may do on paths matching `path` (without "/v1/"): a path, a prefix ending in
/// `*` ("secret/data/billing/*"), with `+` standing for one segment ("transit/encrypt/+").
/// Capabilities as Vault names them: "create" and "update" (POST and PUT; either allows both),
/// "read" (GET), "delete" (DELETE), "list" (LIST, or GET with ?list=true).
struct grant {
  std::string path;
  std::vector<std::string> capabilities;
};

/// A bearer token (sent as X-Vault-Token, or Authorization: Bearer). Its secrets live under
/// `tenant`; `actor` is the name its calls are audited under.
struct token {
  std::string id;
  std::string tenant = "default";
  std::string actor = "token";
  std::vector<grant> grants;
};

struct options {
  /// Deny by default: a request without a known token, or on a path no grant of its token
  /// allows, is answered 403 with Vault's {"errors":["permission denied"]}.
  std::vector<token> tokens;
  /// Where the handlers get connections; must outlive the running server.
  pg::pool* pool = nullptr;
  /// The KV engine's store (secrets under each token's tenant); null: no KV engine.
  crypto::secret_store* secrets = nullptr;
  /// The transit engine (its keys shared by every tenant, as in Vault); null: no transit engine.
  crypto::transit_engine* transit = nullptr;
  std::string transit_mount = "transit";
  std::string secrets_mount = "secret";
};

/// Serves /v1/<transit_mount>/..., /v1/<secrets_mount>/... and /v1/sys/health on `server`.
/// Call before `server.start()`. Throws std::invalid_argument without a pool, or with a token
/// id shorter than 16 characters (guessable).
void mount(net::server& server, options opts);

}  // namespace keel::crypto_http
