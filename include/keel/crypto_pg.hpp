#pragma once
/// @file keel/crypto_pg.hpp
/// @brief keel::crypto_pg: a secrets manager on Postgres — versioned secrets per tenant as
/// envelopes, soft delete and destroy, rewrap after rotation, a hash-chained audit log — and
/// the transit engine (Vault's encryption as a service) keeping its keys in that store.
#include <keel/crypto.hpp>
#include <keel/crypto_pg/secrets.hpp>
#include <keel/crypto_pg/transit.hpp>
