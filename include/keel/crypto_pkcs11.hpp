#pragma once
/// @file keel/crypto_pkcs11.hpp
/// @brief keel::crypto_pkcs11: key-encryption keys in a PKCS#11 token (an HSM, or SoftHSM2)
/// as a keel::crypto KMS provider.
#include <keel/crypto.hpp>
#include <keel/crypto_pkcs11/pkcs11.hpp>
