#pragma once
/// @file keel/crypto_pg.hpp
/// @brief keel::crypto_pg: a secrets manager on Postgres — versioned secrets per tenant as
/// envelopes, soft delete and destroy, rewrap after rotation, and a hash-chained audit log.
#include <keel/crypto.hpp>
#include <keel/crypto_pg/secrets.hpp>
