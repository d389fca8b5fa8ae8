// keel::crypto_pkcs11 against SoftHSM2 (a token made for the run in a temporary directory).
// Counter `ops_per_second` for keel's wrap and unwrap of a 32-byte data key, by each mechanism,
// beside the token's own calls with nothing of keel around them: C_WrapKey (CKM_AES_KEY_WRAP_PAD
// of a key object) and C_EncryptInit + C_Encrypt (CKM_AES_GCM of 32 bytes). `vs_raw_c_wrapkey`
// is keel's wrap over raw C_WrapKey, measured first in the same run.
//   ./keel bench crypto_pkcs11
#include <keel/crypto.hpp>
#include <keel/crypto_pkcs11.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <dlfcn.h>
#include <unistd.h>

#define CRYPTOKI_GNU 1
#include <p11-kit/pkcs11.h>

namespace {

namespace crypto = keel::crypto;

constexpr const char* module_path = "/usr/lib/softhsm/libsofthsm2.so";
constexpr const char* token_label = "keel-bench";
constexpr const char* pin = "1234";

std::unique_ptr<crypto::pkcs11_kms> gcm_provider;
std::unique_ptr<crypto::pkcs11_kms> kwp_provider;
double raw_wrapkey_ops = 0;

crypto::pkcs11_options options(std::optional<crypto::pkcs11_mechanism> mechanism = {}) {
  crypto::pkcs11_options o;
  o.module = module_path;
  o.token_label = token_label;
  o.pin = crypto::secret_bytes::copy_of(keel::as_bytes(pin));
  o.key_label = "kek-1";
  o.mechanism = mechanism;
  return o;
}

// The token's functions and a logged-in session of their own, for the raw calls. The module is
// the one keel loaded (dlopen of the same path returns it), already initialised.
struct raw_token {
  ck_function_list* fns = nullptr;
  ck_session_handle_t session = CK_INVALID_HANDLE;
  ck_object_handle_t kek = CK_INVALID_HANDLE;
  ck_object_handle_t data_key = CK_INVALID_HANDLE;

  bool open() {
    void* handle = ::dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) return false;
    auto* get = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(handle, "C_GetFunctionList"));
    if (get == nullptr || get(&fns) != CKR_OK) return false;
    ck_slot_id_t slots[8];
    unsigned long count = 8;
    if (fns->C_GetSlotList(1, slots, &count) != CKR_OK) return false;
    for (unsigned long i = 0; i < count; ++i) {
      ck_token_info info{};
      fns->C_GetTokenInfo(slots[i], &info);
      if (std::string(reinterpret_cast<char*>(info.label), sizeof info.label).starts_with(token_label)) {
        if (fns->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session) !=
            CKR_OK)
          return false;
        break;
      }
    }
    const ck_rv_t login =
        fns->C_Login(session, CKU_USER, reinterpret_cast<unsigned char*>(const_cast<char*>(pin)), 4);
    if (login != CKR_OK && login != CKR_USER_ALREADY_LOGGED_IN) return false;
    ck_object_class_t secret = CKO_SECRET_KEY;
    std::string label = "kek-1";
    ck_attribute query[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_LABEL, label.data(), label.size()}};
    fns->C_FindObjectsInit(session, query, 2);
    unsigned long found = 0;
    fns->C_FindObjects(session, &kek, 1, &found);
    fns->C_FindObjectsFinal(session);
    if (found != 1) return false;
    ck_key_type_t generic = CKK_GENERIC_SECRET;
    unsigned char yes = 1, no = 0;
    unsigned char value[32] = {1, 2, 3};
    ck_attribute attributes[] = {{CKA_CLASS, &secret, sizeof secret},
                                 {CKA_KEY_TYPE, &generic, sizeof generic},
                                 {CKA_TOKEN, &no, 1},
                                 {CKA_SENSITIVE, &no, 1},
                                 {CKA_EXTRACTABLE, &yes, 1},
                                 {CKA_VALUE, value, sizeof value}};
    return fns->C_CreateObject(session, attributes, 6, &data_key) == CKR_OK;
  }

  bool wrap_key() const {
    ck_mechanism mechanism{CKM_AES_KEY_WRAP_PAD, nullptr, 0};
    unsigned char out[64];
    unsigned long size = sizeof out;
    return fns->C_WrapKey(session, &mechanism, kek, data_key, out, &size) == CKR_OK;
  }

  bool encrypt_gcm() const {
    unsigned char iv[12] = {}, aad[16] = {}, plain[32] = {}, out[64];
    ck_gcm_params params{iv, 12, 96, aad, sizeof aad, 128};
    ck_mechanism mechanism{CKM_AES_GCM, &params, sizeof params};
    unsigned long size = sizeof out;
    return fns->C_EncryptInit(session, &mechanism, kek) == CKR_OK &&
           fns->C_Encrypt(session, plain, sizeof plain, out, &size) == CKR_OK;
  }
};

raw_token raw;

void raw_c_wrapkey(benchmark::State& state) {
  for (auto _ : state) {
    if (!raw.wrap_key()) state.SkipWithError("C_WrapKey failed");
  }
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}

void raw_c_encrypt_gcm(benchmark::State& state) {
  for (auto _ : state) {
    if (!raw.encrypt_gcm()) state.SkipWithError("C_Encrypt failed");
  }
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}

void keel_wrap(benchmark::State& state, crypto::pkcs11_kms* provider) {
  const auto data_key = crypto::secret_bytes::random(32);
  const auto aad = keel::as_bytes("tenant=acme,table=orders");
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto wrapped = provider->wrap(data_key.view(), aad);
    if (!wrapped) state.SkipWithError(wrapped.error().message().c_str());
    benchmark::DoNotOptimize(wrapped);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
  if (raw_wrapkey_ops > 0 && seconds > 0) {
    state.counters["raw_c_wrapkey_ops_per_second"] = raw_wrapkey_ops;
    state.counters["vs_raw_c_wrapkey"] = static_cast<double>(state.iterations()) / seconds / raw_wrapkey_ops;
  }
}

void keel_unwrap(benchmark::State& state, crypto::pkcs11_kms* provider) {
  const auto data_key = crypto::secret_bytes::random(32);
  const auto aad = keel::as_bytes("tenant=acme,table=orders");
  const auto wrapped = provider->wrap(data_key.view(), aad).value();
  for (auto _ : state) {
    auto key = provider->unwrap(wrapped, aad);
    if (!key) state.SkipWithError(key.error().message().c_str());
    benchmark::DoNotOptimize(key);
  }
  state.counters["ops_per_second"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}

// C_WrapKey's rate over one second, before the benchmarks, for keel's wrap to be compared with.
double measure_raw_wrapkey() {
  const auto start = std::chrono::steady_clock::now();
  long n = 0;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(1)) {
    for (int i = 0; i < 100; ++i) raw.wrap_key();
    n += 100;
  }
  return static_cast<double>(n) /
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = (std::filesystem::temp_directory_path() / "keel-softhsm-bench-XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) return 1;
  std::filesystem::create_directory(dir + "/tokens");
  std::ofstream(dir + "/softhsm2.conf")
      << "directories.tokendir = " << dir << "/tokens\nobjectstore.backend = file\nlog.level = ERROR\n";
  ::setenv("SOFTHSM2_CONF", (dir + "/softhsm2.conf").c_str(), 1);
  const std::string init = std::string("softhsm2-util --init-token --free --label ") + token_label +
                           " --so-pin 0000 --pin " + pin + " >/dev/null";
  int status = 0;
  if (std::system(init.c_str()) != 0) {  // NOLINT(cert-env33-c): a fixed command
    std::fprintf(stderr, "keel_crypto_pkcs11_bench: softhsm2-util failed (./keel setup installs softhsm2)\n");
    status = 1;
  } else if (auto made = crypto::pkcs11_kms::generate_key(options(), "kek-1"); !made) {
    std::fprintf(stderr, "keel_crypto_pkcs11_bench: %s\n", made.error().message().c_str());
    status = 1;
  } else {
    gcm_provider = crypto::pkcs11_kms::open(options(crypto::pkcs11_mechanism::aes_gcm)).value();
    kwp_provider = crypto::pkcs11_kms::open(options(crypto::pkcs11_mechanism::aes_key_wrap_pad)).value();
    if (!raw.open()) {
      std::fprintf(stderr, "keel_crypto_pkcs11_bench: the raw session could not be opened\n");
      status = 1;
    } else {
      raw_wrapkey_ops = measure_raw_wrapkey();
      benchmark::RegisterBenchmark("raw_c_wrapkey_kwp", raw_c_wrapkey);
      benchmark::RegisterBenchmark("raw_c_encrypt_gcm", raw_c_encrypt_gcm);
      benchmark::RegisterBenchmark("keel_wrap/gcm", keel_wrap, gcm_provider.get());
      benchmark::RegisterBenchmark("keel_wrap/kwp", keel_wrap, kwp_provider.get());
      benchmark::RegisterBenchmark("keel_unwrap/gcm", keel_unwrap, gcm_provider.get());
      benchmark::RegisterBenchmark("keel_unwrap/kwp", keel_unwrap, kwp_provider.get());
      benchmark::Initialize(&argc, argv);
      benchmark::RunSpecifiedBenchmarks();
      benchmark::Shutdown();
    }
    raw.fns->C_CloseSession(raw.session);
    gcm_provider.reset();
    kwp_provider.reset();
  }
  std::filesystem::remove_all(dir);
  return status;
}
