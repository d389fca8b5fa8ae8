// Secret memory. Small secrets (keys, derived keys: up to 4 KiB) come from OpenSSL's secure heap,
// one mlock()ed, guard-paged, undumped region set up once, so that a secret costs no system
// call; larger ones, or all of them when the heap cannot be had (RLIMIT_MEMLOCK), get whole
// pages of their own, locked and undumped. Either way the bytes are wiped before release.
#include <keel/crypto/secret.hpp>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>

#include <sys/mman.h>
#include <unistd.h>

namespace keel::crypto {
namespace {

std::size_t page_size() noexcept {
  static const auto size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

constexpr std::size_t secure_heap_bytes = 1U << 20U;  // room for ~30,000 32-byte keys
constexpr std::size_t secure_heap_max_secret = 4096;

// Sets OpenSSL's secure heap up once, unless the application did. @returns whether it is there.
bool secure_heap() noexcept {
  static const bool ready =
      CRYPTO_secure_malloc_initialized() == 1 || CRYPTO_secure_malloc_init(secure_heap_bytes, 32) != 0;
  return ready;
}

}  // namespace

secret_bytes::secret_bytes(std::size_t size) : size_(size) {
  if (size == 0) return;
  if (size <= secure_heap_max_secret && secure_heap()) {
    if (void* p = OPENSSL_secure_zalloc(size); p != nullptr) {
      data_ = static_cast<std::uint8_t*>(p);
      secure_heap_ = CRYPTO_secure_allocated(p) == 1;
      locked_ = secure_heap_;
      if (secure_heap_) return;
      OPENSSL_free(p);  // the heap was full and OpenSSL fell back to malloc: use pages instead
      data_ = nullptr;
      locked_ = false;
    }
  }
  const auto page = page_size();
  capacity_ = (size + page - 1) / page * page;
  void* mapped = ::mmap(nullptr, capacity_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::bad_alloc();
  data_ = static_cast<std::uint8_t*>(mapped);
  locked_ = ::mlock(mapped, capacity_) == 0;
  (void)::madvise(mapped, capacity_, MADV_DONTDUMP);
}

secret_bytes secret_bytes::copy_of(bytes_view data) {
  secret_bytes out(data.size());
  if (!data.empty() && out.data_ != nullptr) std::memcpy(out.data_, data.data(), data.size());
  return out;
}

secret_bytes secret_bytes::random(std::size_t size) {
  secret_bytes out(size);
  if (size > 0 && RAND_bytes(out.data_, static_cast<int>(size)) != 1) {
    throw std::runtime_error("keel::crypto: OpenSSL's random generator failed");
  }
  return out;
}

secret_bytes::secret_bytes(secret_bytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)),
      locked_(std::exchange(other.locked_, false)),
      secure_heap_(std::exchange(other.secure_heap_, false)) {}

secret_bytes& secret_bytes::operator=(secret_bytes&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    locked_ = std::exchange(other.locked_, false);
    secure_heap_ = std::exchange(other.secure_heap_, false);
  }
  return *this;
}

secret_bytes::~secret_bytes() {
  release();
}

void secret_bytes::release() noexcept {
  if (data_ == nullptr) return;
  if (secure_heap_) {
    OPENSSL_secure_clear_free(data_, size_);
    data_ = nullptr;
    size_ = capacity_ = 0;
    locked_ = secure_heap_ = false;
    return;
  }
  OPENSSL_cleanse(data_, capacity_);
  if (locked_) (void)::munlock(data_, capacity_);
  (void)::munmap(data_, capacity_);
  data_ = nullptr;
  size_ = capacity_ = 0;
  locked_ = false;
}

void secret_bytes::truncate(std::size_t size) noexcept {
  if (size >= size_) return;
  OPENSSL_cleanse(data_ + size, size_ - size);
  size_ = size;
}

bool operator==(const secret_bytes& a, const secret_bytes& b) noexcept {
  return equal_constant_time(a.view(), b.view());
}

bool equal_constant_time(bytes_view a, bytes_view b) noexcept {
  if (a.size() != b.size()) return false;
  return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void cleanse(std::span<std::uint8_t> data) noexcept {
  if (!data.empty()) OPENSSL_cleanse(data.data(), data.size());
}

bytes random_bytes(std::size_t size) {
  bytes out(size);
  if (size > 0 && RAND_bytes(out.data(), static_cast<int>(size)) != 1) {
    throw std::runtime_error("keel::crypto: OpenSSL's random generator failed");
  }
  return out;
}

}  // namespace keel::crypto
