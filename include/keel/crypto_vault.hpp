#pragma once
/// @file keel/crypto_vault.hpp
/// @brief keel::crypto_vault: a Vault transit key as a keel::crypto KMS provider.
#include <keel/crypto.hpp>
#include <keel/crypto_vault/transit_client.hpp>
