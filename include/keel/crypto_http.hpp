#pragma once
/// @file keel/crypto_http.hpp
/// @brief keel::crypto_http: the transit engine and the secrets store in HashiCorp Vault's HTTP
/// API, for Vault's own clients.
#include <keel/crypto_http/vault_api.hpp>
#include <keel/crypto_pg.hpp>
