#include <keel/core/hash.hpp>

#include "openssl.hpp"

#include <algorithm>

namespace keel {
namespace detail {

const EVP_MD* sha256_md() {
  static EVP_MD* const md = check_openssl(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  return md;
}

EVP_MAC* hmac_mac() {
  static EVP_MAC* const mac = check_openssl(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
  return mac;
}

}  // namespace detail

namespace {

// One context per thread, re-initialised per call: allocation-free one-shot hashing.
EVP_MD_CTX* thread_sha256_context() {
  thread_local detail::evp_md_ctx_ptr context{detail::check_openssl(EVP_MD_CTX_new())};
  return context.get();
}

EVP_MAC_CTX* thread_hmac_context() {
  thread_local detail::evp_mac_ctx_ptr context{detail::check_openssl(EVP_MAC_CTX_new(detail::hmac_mac()))};
  return context.get();
}

sha256_digest final_digest(EVP_MD_CTX* context) {
  sha256_digest digest;
  unsigned size = 0;
  detail::check_openssl(EVP_DigestFinal_ex(context, digest.data(), &size));
  return digest;
}

}  // namespace

sha256_digest sha256(bytes_view data) {
  EVP_MD_CTX* context = thread_sha256_context();
  detail::check_openssl(EVP_DigestInit_ex2(context, detail::sha256_md(), nullptr));
  detail::check_openssl(EVP_DigestUpdate(context, data.data(), data.size()));
  return final_digest(context);
}

struct sha256_hasher::context {
  detail::evp_md_ctx_ptr ctx{detail::check_openssl(EVP_MD_CTX_new())};
};

sha256_hasher::sha256_hasher() : context_(std::make_unique<context>()) {
  detail::check_openssl(EVP_DigestInit_ex2(context_->ctx.get(), detail::sha256_md(), nullptr));
}
sha256_hasher::~sha256_hasher() = default;
sha256_hasher::sha256_hasher(sha256_hasher&&) noexcept = default;
sha256_hasher& sha256_hasher::operator=(sha256_hasher&&) noexcept = default;

sha256_hasher& sha256_hasher::update(bytes_view data) {
  detail::check_openssl(EVP_DigestUpdate(context_->ctx.get(), data.data(), data.size()));
  return *this;
}

sha256_digest sha256_hasher::finish() {
  const auto digest = final_digest(context_->ctx.get());
  detail::check_openssl(EVP_DigestInit_ex2(context_->ctx.get(), detail::sha256_md(), nullptr));
  return digest;
}

sha256_digest hmac_sha256(bytes_view key, bytes_view data) {
  EVP_MAC_CTX* context = thread_hmac_context();
  char digest_name[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end(),
  };
  // OpenSSL rejects a null key pointer even when the length is zero.
  static const unsigned char empty_key = 0;
  const unsigned char* key_data = key.empty() ? &empty_key : key.data();
  detail::check_openssl(EVP_MAC_init(context, key_data, key.size(), params));
  detail::check_openssl(EVP_MAC_update(context, data.data(), data.size()));
  sha256_digest tag;
  std::size_t size = 0;
  detail::check_openssl(EVP_MAC_final(context, tag.data(), &size, tag.size()));
  return tag;
}

bool hmac_sha256_verify(bytes_view key, bytes_view data, bytes_view tag) {
  if (tag.size() < 16 || tag.size() > 32) return false;
  const auto expected = hmac_sha256(key, data);
  return constant_time_equal(bytes_view(expected).first(tag.size()), tag);
}

}  // namespace keel
