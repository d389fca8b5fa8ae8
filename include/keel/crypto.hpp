#pragma once
/// @file keel/crypto.hpp
/// @brief keel::crypto: envelope encryption with a versioned keyring, AEAD (AES-GCM,
/// ChaCha20-Poly1305), HKDF and HMAC, AES key wrap, and key material in locked, wiped memory — OpenSSL 3
/// underneath, nothing hand-rolled.
#include <keel/crypto/aead.hpp>
#include <keel/crypto/cache.hpp>
#include <keel/crypto/envelope.hpp>
#include <keel/crypto/error.hpp>
#include <keel/crypto/kdf.hpp>
#include <keel/crypto/keywrap.hpp>
#include <keel/crypto/kms.hpp>
#include <keel/crypto/secret.hpp>
