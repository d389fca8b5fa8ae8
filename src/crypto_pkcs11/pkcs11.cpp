// keel::crypto's PKCS#11 provider: the module loaded once per process and path, a pool of
// logged-in sessions, key handles found by label and remembered, and two ways to protect a data
// key (GCM over its bytes, or key wrap with padding plus an HMAC binding the context).
#include <keel/crypto/kdf.hpp>
#include <keel/crypto_pkcs11/pkcs11.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <dlfcn.h>

// The GNU flavour of p11-kit's header: lower-case names and no compatibility macros (the
// default flavour #defines words like `flags` and `reserved`).
#define CRYPTOKI_GNU 1
#include <p11-kit/pkcs11.h>

namespace keel::crypto {
namespace {

constexpr std::string_view gcm_label = "keel pkcs11 gcm v1";
constexpr std::string_view kwp_label = "keel pkcs11 kwp v1";
constexpr std::size_t binding_bytes = 32;  // HMAC-SHA-256 binding the context in kwp mode

error_code ckr(ck_rv_t rv) noexcept {
  return {static_cast<int>(rv), pkcs11_category()};
}

// What an error from a call that verifies data means: a changed wrapped key or context. The
// standard's answers are CKR_ENCRYPTED_DATA_INVALID and CKR_WRAPPED_KEY_INVALID; SoftHSM2 answers
// CKR_GENERAL_ERROR for a GCM tag that does not verify and other tokens CKR_FUNCTION_FAILED. The
// probe in open() showed the key and mechanism work, so a verifying call that fails is the
// data's fault.
error_code verify_error(ck_rv_t rv) noexcept {
  switch (rv) {
    case CKR_GENERAL_ERROR:
    case CKR_FUNCTION_FAILED:
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_WRAPPED_KEY_INVALID:
    case CKR_WRAPPED_KEY_LEN_RANGE:
      return errc::authentication_failed;
    default:
      return ckr(rv);
  }
}

bytes bound_aad(std::string_view label, std::string_view key_id, bytes_view aad) {
  bytes out;
  out.reserve(label.size() + key_id.size() + aad.size() + 2);
  out.insert(out.end(), label.begin(), label.end());
  out.push_back(0);
  out.insert(out.end(), key_id.begin(), key_id.end());
  out.push_back(0);
  out.insert(out.end(), aad.begin(), aad.end());
  return out;
}

// PKCS#11 takes non-const pointers to data it only reads.
unsigned char* mutable_bytes(bytes_view v) noexcept {
  return const_cast<unsigned char*>(v.data());  // NOLINT(cppcoreguidelines-pro-type-const-cast)
}

// A loaded module. Finalized when the last provider using it goes, if keel initialised it; never
// unloaded (dlclose), as modules keep threads and atexit handlers that outlive C_Finalize.
struct module {
  ck_function_list* fns = nullptr;
  bool initialized_here = false;
  module() = default;
  module(const module&) = delete;
  module& operator=(const module&) = delete;
  ~module() {
    if (initialized_here) fns->C_Finalize(nullptr);
  }
};

result<std::shared_ptr<module>> load_module(const std::string& path) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<module>> loaded;
  const std::lock_guard lock(mutex);
  if (auto existing = loaded[path].lock()) return existing;
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) return errc::pkcs11_module_unavailable;
  auto* get_function_list = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(handle, "C_GetFunctionList"));
  if (get_function_list == nullptr) return errc::pkcs11_module_unavailable;
  auto m = std::make_shared<module>();
  if (get_function_list(&m->fns) != CKR_OK || m->fns == nullptr) return errc::pkcs11_module_unavailable;
  ck_c_initialize_args args{};
  args.flags = CKF_OS_LOCKING_OK;  // the module may use the OS's locks: keel calls it from many threads
  const ck_rv_t rv = m->fns->C_Initialize(&args);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) return ckr(rv);
  m->initialized_here = rv == CKR_OK;
  loaded[path] = m;
  return m;
}

// Token labels are 32 bytes padded with spaces.
std::string_view trimmed_label(const ck_token_info& info) noexcept {
  std::string_view label(reinterpret_cast<const char*>(info.label), sizeof(info.label));
  while (!label.empty() && (label.back() == ' ' || label.back() == '\0')) label.remove_suffix(1);
  return label;
}

result<ck_slot_id_t> find_token(ck_function_list* fns, std::string_view token_label) {
  unsigned long count = 0;
  if (const ck_rv_t rv = fns->C_GetSlotList(1, nullptr, &count); rv != CKR_OK) return ckr(rv);
  std::vector<ck_slot_id_t> slots(count);
  if (const ck_rv_t rv = fns->C_GetSlotList(1, slots.data(), &count); rv != CKR_OK) return ckr(rv);
  slots.resize(count);
  for (const ck_slot_id_t slot : slots) {
    ck_token_info info{};
    if (fns->C_GetTokenInfo(slot, &info) != CKR_OK) continue;
    if (trimmed_label(info) == token_label) return slot;
  }
  return errc::pkcs11_token_not_found;
}

}  // namespace

std::string_view to_string(pkcs11_mechanism m) noexcept {
  switch (m) {
    case pkcs11_mechanism::aes_gcm:
      return "CKM_AES_GCM";
    case pkcs11_mechanism::aes_key_wrap_pad:
      return "CKM_AES_KEY_WRAP_PAD";
  }
  return "?";
}

struct pkcs11_kms::state {
  std::shared_ptr<module> mod;
  ck_function_list* fns = nullptr;
  ck_slot_id_t slot = 0;
  secret_bytes pin;
  std::string key_label;
  pkcs11_mechanism chosen = pkcs11_mechanism::aes_gcm;  // by the probe in open()
  std::size_t max_sessions = 4;

  std::mutex mutex;
  std::condition_variable session_freed;
  std::vector<ck_session_handle_t> idle;
  std::size_t open_sessions = 0;
  std::map<std::string, ck_object_handle_t, std::less<>> key_handles;

  state() = default;
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() {
    for (const ck_session_handle_t s : idle) fns->C_CloseSession(s);
  }

  // A session for one call, back to the pool when it ends; dropped instead if the token said it
  // is no longer valid.
  class lease {
   public:
    lease(state& owner, ck_session_handle_t session) noexcept : owner_(&owner), session_(session) {}
    lease(lease&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)), session_(other.session_), broken_(other.broken_) {}
    lease& operator=(lease&&) = delete;
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease() {
      if (owner_ != nullptr) owner_->give_back(session_, broken_);
    }
    [[nodiscard]] ck_session_handle_t get() const noexcept { return session_; }
    // Records what the token said of the session: a closed or invalid one is not reused.
    ck_rv_t note(ck_rv_t rv) noexcept {
      if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_DEVICE_REMOVED ||
          rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_USER_NOT_LOGGED_IN)
        broken_ = true;
      return rv;
    }

   private:
    state* owner_;
    ck_session_handle_t session_;
    bool broken_ = false;
  };

  result<lease> acquire() {
    std::unique_lock lock(mutex);
    session_freed.wait(lock, [&] { return !idle.empty() || open_sessions < max_sessions; });
    if (!idle.empty()) {
      const ck_session_handle_t s = idle.back();
      idle.pop_back();
      return lease(*this, s);
    }
    ++open_sessions;
    lock.unlock();
    auto opened = open_session();
    if (!opened) {
      lock.lock();
      --open_sessions;
      session_freed.notify_one();
      return opened.error();
    }
    return lease(*this, *opened);
  }

  void give_back(ck_session_handle_t s, bool broken) noexcept {
    const std::lock_guard lock(mutex);
    if (broken) {
      fns->C_CloseSession(s);
      --open_sessions;
    } else {
      idle.push_back(s);
    }
    session_freed.notify_one();
  }

  // Login state belongs to the application and token, not the session: the first session logs
  // in, later ones find it done (CKR_USER_ALREADY_LOGGED_IN); if every session closed, the next
  // one logs in again.
  result<ck_session_handle_t> open_session() {
    ck_session_handle_t s = CK_INVALID_HANDLE;
    if (const ck_rv_t rv =
            fns->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s);
        rv != CKR_OK)
      return ckr(rv);
    const ck_rv_t rv = fns->C_Login(s, CKU_USER, mutable_bytes(pin.view()), pin.size());
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
      fns->C_CloseSession(s);
      return ckr(rv);
    }
    return s;
  }

  result<ck_object_handle_t> find_key(lease& session, std::string_view label) {
    {
      const std::lock_guard lock(mutex);
      if (auto it = key_handles.find(label); it != key_handles.end()) return it->second;
    }
    ck_object_class_t secret_key_class = CKO_SECRET_KEY;
    std::array<ck_attribute, 2> query{{
        {CKA_CLASS, &secret_key_class, sizeof secret_key_class},
        {CKA_LABEL, const_cast<char*>(label.data()), label.size()},  // NOLINT: read only
    }};
    if (const ck_rv_t rv = session.note(fns->C_FindObjectsInit(session.get(), query.data(), query.size()));
        rv != CKR_OK)
      return ckr(rv);
    std::array<ck_object_handle_t, 2> found{};
    unsigned long count = 0;
    const ck_rv_t rv = session.note(fns->C_FindObjects(session.get(), found.data(), found.size(), &count));
    fns->C_FindObjectsFinal(session.get());
    if (rv != CKR_OK) return ckr(rv);
    if (count == 0) return errc::unknown_key;
    if (count > 1) return errc::duplicate_key_label;
    const std::lock_guard lock(mutex);
    key_handles.emplace(std::string(label), found[0]);
    return found[0];
  }

  // A handle the token no longer knows (the key was deleted or replaced) is looked up again
  // next time.
  void forget_key_if_stale(std::string_view label, ck_rv_t rv) {
    if (rv != CKR_KEY_HANDLE_INVALID && rv != CKR_OBJECT_HANDLE_INVALID) return;
    const std::lock_guard lock(mutex);
    if (auto it = key_handles.find(label); it != key_handles.end()) key_handles.erase(it);
  }

  result<bytes> wrap_gcm(lease& session, ck_object_handle_t kek, std::string_view key_id, bytes_view data_key,
                         bytes_view aad) {
    bytes iv = random_bytes(12);
    bytes full_aad = bound_aad(gcm_label, key_id, aad);
    ck_gcm_params params{iv.data(), iv.size(), 96, full_aad.data(), full_aad.size(), 128};
    ck_mechanism mechanism{CKM_AES_GCM, &params, sizeof params};
    if (const ck_rv_t rv = session.note(fns->C_EncryptInit(session.get(), &mechanism, kek)); rv != CKR_OK) {
      forget_key_if_stale(key_id, rv);
      return ckr(rv);
    }
    bytes out(1 + iv.size() + data_key.size() + 16);
    out[0] = static_cast<std::uint8_t>(pkcs11_mechanism::aes_gcm);
    std::copy(iv.begin(), iv.end(), out.begin() + 1);
    unsigned long sealed_size = data_key.size() + 16;
    const auto sealed_at = static_cast<std::ptrdiff_t>(1 + iv.size());
    if (const ck_rv_t rv = session.note(fns->C_Encrypt(
            session.get(), mutable_bytes(data_key), data_key.size(), out.data() + sealed_at, &sealed_size));
        rv != CKR_OK)
      return ckr(rv);
    out.resize(static_cast<std::size_t>(sealed_at) + sealed_size);
    return out;
  }

  result<secret_bytes> unwrap_gcm(lease& session, ck_object_handle_t kek, std::string_view key_id,
                                  bytes_view wrapped, bytes_view aad) {
    if (wrapped.size() < 1 + 12 + 16) return errc::authentication_failed;
    bytes iv(wrapped.begin() + 1, wrapped.begin() + 13);
    bytes full_aad = bound_aad(gcm_label, key_id, aad);
    ck_gcm_params params{iv.data(), iv.size(), 96, full_aad.data(), full_aad.size(), 128};
    ck_mechanism mechanism{CKM_AES_GCM, &params, sizeof params};
    if (const ck_rv_t rv = session.note(fns->C_DecryptInit(session.get(), &mechanism, kek)); rv != CKR_OK) {
      forget_key_if_stale(key_id, rv);
      return ckr(rv);
    }
    const bytes_view sealed = wrapped.subspan(13);
    // Tokens differ in how much room they want for the plaintext (some the ciphertext's whole
    // size): ask, then shorten to what was written.
    unsigned long size = 0;
    if (const ck_rv_t rv =
            session.note(fns->C_Decrypt(session.get(), mutable_bytes(sealed), sealed.size(), nullptr, &size));
        rv != CKR_OK)
      return verify_error(rv);
    secret_bytes key(size);
    if (const ck_rv_t rv = session.note(
            fns->C_Decrypt(session.get(), mutable_bytes(sealed), sealed.size(), key.data(), &size));
        rv != CKR_OK)
      return verify_error(rv);
    key.truncate(size);
    return key;
  }

  // A data key as a session object only for the moment it is wrapped: extractable, not sensitive.
  // The attributes of a data key as a session object: a generic secret that may leave the
  // token (it is only there to be wrapped or read back), and its value when creating one.
  struct session_key_template {
    ck_object_class_t secret_key_class = CKO_SECRET_KEY;
    ck_key_type_t generic = CKK_GENERIC_SECRET;
    unsigned char yes = 1;
    unsigned char no = 0;
    std::array<ck_attribute, 6> attributes{};
    explicit session_key_template(bytes_view value = {}) noexcept
        : attributes{{{CKA_CLASS, &secret_key_class, sizeof secret_key_class},
                      {CKA_KEY_TYPE, &generic, sizeof generic},
                      {CKA_TOKEN, &no, 1},
                      {CKA_SENSITIVE, &no, 1},
                      {CKA_EXTRACTABLE, &yes, 1},
                      {CKA_VALUE, mutable_bytes(value), value.size()}}} {}
    session_key_template(const session_key_template&) = delete;
    session_key_template& operator=(const session_key_template&) = delete;
    // Without CKA_VALUE: for C_UnwrapKey, which makes the value.
    [[nodiscard]] unsigned long count(bool with_value) const noexcept { return with_value ? 6 : 5; }
  };

  result<bytes> wrap_kwp(lease& session, ck_object_handle_t kek, std::string_view key_id, bytes_view data_key,
                         bytes_view aad) {
    session_key_template key_object(data_key);
    auto& attributes = key_object.attributes;
    ck_object_handle_t object = CK_INVALID_HANDLE;
    if (const ck_rv_t rv = session.note(
            fns->C_CreateObject(session.get(), attributes.data(), key_object.count(true), &object));
        rv != CKR_OK)
      return ckr(rv);
    ck_mechanism mechanism{CKM_AES_KEY_WRAP_PAD, nullptr, 0};
    bytes out(1 + data_key.size() + 16 + binding_bytes);
    out[0] = static_cast<std::uint8_t>(pkcs11_mechanism::aes_key_wrap_pad);
    unsigned long wrapped_size = data_key.size() + 16;
    const ck_rv_t rv =
        session.note(fns->C_WrapKey(session.get(), &mechanism, kek, object, out.data() + 1, &wrapped_size));
    fns->C_DestroyObject(session.get(), object);
    if (rv != CKR_OK) {
      forget_key_if_stale(key_id, rv);
      return ckr(rv);
    }
    auto binding = hmac(hash_algorithm::sha256, data_key, bound_aad(kwp_label, key_id, aad));
    if (!binding) return binding.error();
    out.resize(1 + wrapped_size);
    out.insert(out.end(), binding->begin(), binding->end());
    return out;
  }

  result<secret_bytes> unwrap_kwp(lease& session, ck_object_handle_t kek, std::string_view key_id,
                                  bytes_view wrapped, bytes_view aad) {
    if (wrapped.size() < 1 + 16 + binding_bytes) return errc::authentication_failed;
    const bytes_view kwp = wrapped.subspan(1, wrapped.size() - 1 - binding_bytes);
    const bytes_view binding = wrapped.subspan(wrapped.size() - binding_bytes);
    session_key_template key_object;
    ck_mechanism mechanism{CKM_AES_KEY_WRAP_PAD, nullptr, 0};
    ck_object_handle_t object = CK_INVALID_HANDLE;
    if (const ck_rv_t rv =
            session.note(fns->C_UnwrapKey(session.get(), &mechanism, kek, mutable_bytes(kwp), kwp.size(),
                                          key_object.attributes.data(), key_object.count(false), &object));
        rv != CKR_OK) {
      forget_key_if_stale(key_id, rv);
      return verify_error(rv);
    }
    ck_attribute value{CKA_VALUE, nullptr, 0};
    ck_rv_t rv = session.note(fns->C_GetAttributeValue(session.get(), object, &value, 1));
    secret_bytes key(rv == CKR_OK ? value.value_len : 0);
    if (rv == CKR_OK) {
      value.value = key.data();
      rv = session.note(fns->C_GetAttributeValue(session.get(), object, &value, 1));
    }
    fns->C_DestroyObject(session.get(), object);
    if (rv != CKR_OK) return ckr(rv);
    if (auto verified =
            hmac_verify(hash_algorithm::sha256, key.view(), bound_aad(kwp_label, key_id, aad), binding);
        !verified)
      return errc::authentication_failed;
    return key;
  }

  result<bytes> wrap_with(pkcs11_mechanism m, std::string_view key_id, bytes_view data_key, bytes_view aad) {
    auto session = acquire();
    if (!session) return session.error();
    auto kek = find_key(*session, key_id);
    if (!kek) return kek.error();
    return m == pkcs11_mechanism::aes_gcm ? wrap_gcm(*session, *kek, key_id, data_key, aad)
                                          : wrap_kwp(*session, *kek, key_id, data_key, aad);
  }

  result<secret_bytes> unwrap_with(std::string_view key_id, bytes_view wrapped, bytes_view aad) {
    if (wrapped.empty()) return errc::authentication_failed;
    auto session = acquire();
    if (!session) return session.error();
    auto kek = find_key(*session, key_id);
    if (!kek) return kek.error();
    switch (static_cast<pkcs11_mechanism>(wrapped[0])) {
      case pkcs11_mechanism::aes_gcm:
        return unwrap_gcm(*session, *kek, key_id, wrapped, aad);
      case pkcs11_mechanism::aes_key_wrap_pad:
        return unwrap_kwp(*session, *kek, key_id, wrapped, aad);
    }
    return errc::authentication_failed;
  }

  // Whether `m` round-trips a random key with the wrapping key: what the token really does.
  bool works(pkcs11_mechanism m) {
    const secret_bytes probe = secret_bytes::random(32);
    const bytes_view aad = as_bytes("keel pkcs11 probe");
    auto wrapped = wrap_with(m, key_label, probe.view(), aad);
    if (!wrapped) return false;
    auto unwrapped = unwrap_with(key_label, *wrapped, aad);
    return unwrapped && *unwrapped == probe;
  }
};

result<std::unique_ptr<pkcs11_kms>> pkcs11_kms::open(pkcs11_options options) {
  auto s = std::make_unique<state>();
  auto mod = load_module(options.module);
  if (!mod) return mod.error();
  s->mod = *mod;
  s->fns = s->mod->fns;
  auto slot = find_token(s->fns, options.token_label);
  if (!slot) return slot.error();
  s->slot = *slot;
  s->pin = std::move(options.pin);
  s->key_label = std::move(options.key_label);
  s->max_sessions = std::max<std::size_t>(options.max_sessions, 1);
  {
    auto session = s->acquire();  // logs in: a wrong PIN is reported here
    if (!session) return session.error();
    if (auto kek = s->find_key(*session, s->key_label); !kek) return kek.error();
  }
  std::vector<pkcs11_mechanism> candidates{pkcs11_mechanism::aes_gcm, pkcs11_mechanism::aes_key_wrap_pad};
  if (options.mechanism) candidates = {*options.mechanism};
  for (const pkcs11_mechanism m : candidates) {
    if (s->works(m)) {
      s->chosen = m;
      return std::unique_ptr<pkcs11_kms>(new pkcs11_kms(std::move(s)));
    }
  }
  return errc::pkcs11_no_mechanism;
}

result<void> pkcs11_kms::generate_key(const pkcs11_options& token, std::string_view label) {
  auto mod = load_module(token.module);
  if (!mod) return mod.error();
  ck_function_list* fns = (*mod)->fns;
  auto slot = find_token(fns, token.token_label);
  if (!slot) return slot.error();
  state s;
  s.mod = *mod;
  s.fns = fns;
  s.slot = *slot;
  s.pin = token.pin.copy();
  auto session = s.acquire();
  if (!session) return session.error();
  auto existing = s.find_key(*session, label);
  if (existing) return errc::key_exists;
  if (existing.error() != errc::unknown_key) return existing.error();
  ck_object_class_t secret_key_class = CKO_SECRET_KEY;
  ck_key_type_t aes = CKK_AES;
  unsigned long key_bytes = 32;
  unsigned char yes = 1;
  unsigned char no = 0;
  std::array<ck_attribute, 12> attributes{{
      {CKA_CLASS, &secret_key_class, sizeof secret_key_class},
      {CKA_KEY_TYPE, &aes, sizeof aes},
      {CKA_VALUE_LEN, &key_bytes, sizeof key_bytes},
      {CKA_TOKEN, &yes, 1},
      {CKA_PRIVATE, &yes, 1},
      {CKA_SENSITIVE, &yes, 1},
      {CKA_EXTRACTABLE, &no, 1},
      {CKA_ENCRYPT, &yes, 1},
      {CKA_DECRYPT, &yes, 1},
      {CKA_WRAP, &yes, 1},
      {CKA_UNWRAP, &yes, 1},
      {CKA_LABEL, const_cast<char*>(label.data()), label.size()},  // NOLINT: read only
  }};
  ck_mechanism mechanism{CKM_AES_KEY_GEN, nullptr, 0};
  ck_object_handle_t key = CK_INVALID_HANDLE;
  if (const ck_rv_t rv = session->note(
          fns->C_GenerateKey(session->get(), &mechanism, attributes.data(), attributes.size(), &key));
      rv != CKR_OK)
    return ckr(rv);
  return {};
}

pkcs11_kms::pkcs11_kms(std::unique_ptr<state> s) : state_(std::move(s)) {}
pkcs11_kms::~pkcs11_kms() = default;

pkcs11_mechanism pkcs11_kms::mechanism() const noexcept {
  return state_->chosen;
}

result<encrypted_data_key> pkcs11_kms::wrap(bytes_view data_key, bytes_view aad) {
  auto wrapped = state_->wrap_with(state_->chosen, state_->key_label, data_key, aad);
  if (!wrapped) return wrapped.error();
  return encrypted_data_key{std::string(provider()), state_->key_label, std::move(*wrapped)};
}

result<secret_bytes> pkcs11_kms::unwrap(const encrypted_data_key& edk, bytes_view aad) {
  if (edk.provider != provider()) return errc::unknown_key;
  return state_->unwrap_with(edk.key_id, edk.wrapped, aad);
}

}  // namespace keel::crypto
