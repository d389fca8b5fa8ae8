#pragma once
// RAII and shared helpers for the OpenSSL 3 objects keel::core uses. Private to src/core.
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <memory>
#include <new>

namespace keel::detail {

struct evp_md_ctx_deleter {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct evp_mac_ctx_deleter {
  void operator()(EVP_MAC_CTX* p) const noexcept { EVP_MAC_CTX_free(p); }
};
struct evp_pkey_deleter {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
using evp_md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, evp_md_ctx_deleter>;
using evp_mac_ctx_ptr = std::unique_ptr<EVP_MAC_CTX, evp_mac_ctx_deleter>;
using evp_pkey_ptr = std::unique_ptr<EVP_PKEY, evp_pkey_deleter>;

// OpenSSL 3 looks algorithms up by name on every implicit fetch; fetching once and keeping
// the object for the life of the process avoids that cost on each hash.
const EVP_MD* sha256_md();
EVP_MAC* hmac_mac();

// With valid arguments these OpenSSL calls fail only when memory runs out.
inline void check_openssl(int ok) {
  if (ok != 1) throw std::bad_alloc();
}
template <class T>
T* check_openssl(T* p) {
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace keel::detail
