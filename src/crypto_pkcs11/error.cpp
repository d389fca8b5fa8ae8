// The "pkcs11" error category: a PKCS#11 return value (CKR_*) kept as the error's value, named
// in its message — as keel::pg keeps a Postgres error's SQLSTATE.
#include <keel/crypto_pkcs11/pkcs11.hpp>

#include <string>

#define CRYPTOKI_GNU 1
#include <p11-kit/pkcs11.h>

namespace keel::crypto {
namespace {

const char* describe(unsigned long rv) noexcept {
  switch (rv) {
    case CKR_CANCEL:
      return "CKR_CANCEL: see the PKCS#11 specification for this return value";
    case CKR_HOST_MEMORY:
      return "CKR_HOST_MEMORY: the module ran out of memory";
    case CKR_SLOT_ID_INVALID:
      return "CKR_SLOT_ID_INVALID: see the PKCS#11 specification for this return value";
    case CKR_GENERAL_ERROR:
      return "CKR_GENERAL_ERROR: see the PKCS#11 specification for this return value";
    case CKR_FUNCTION_FAILED:
      return "CKR_FUNCTION_FAILED: see the PKCS#11 specification for this return value";
    case CKR_ARGUMENTS_BAD:
      return "CKR_ARGUMENTS_BAD: see the PKCS#11 specification for this return value";
    case CKR_NO_EVENT:
      return "CKR_NO_EVENT: see the PKCS#11 specification for this return value";
    case CKR_NEED_TO_CREATE_THREADS:
      return "CKR_NEED_TO_CREATE_THREADS: see the PKCS#11 specification for this return value";
    case CKR_CANT_LOCK:
      return "CKR_CANT_LOCK: see the PKCS#11 specification for this return value";
    case CKR_ATTRIBUTE_READ_ONLY:
      return "CKR_ATTRIBUTE_READ_ONLY: see the PKCS#11 specification for this return value";
    case CKR_ATTRIBUTE_SENSITIVE:
      return "CKR_ATTRIBUTE_SENSITIVE: see the PKCS#11 specification for this return value";
    case CKR_ATTRIBUTE_TYPE_INVALID:
      return "CKR_ATTRIBUTE_TYPE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_ATTRIBUTE_VALUE_INVALID:
      return "CKR_ATTRIBUTE_VALUE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_ACTION_PROHIBITED:
      return "CKR_ACTION_PROHIBITED: see the PKCS#11 specification for this return value";
    case CKR_DATA_INVALID:
      return "CKR_DATA_INVALID: see the PKCS#11 specification for this return value";
    case CKR_DATA_LEN_RANGE:
      return "CKR_DATA_LEN_RANGE: see the PKCS#11 specification for this return value";
    case CKR_DEVICE_ERROR:
      return "CKR_DEVICE_ERROR: see the PKCS#11 specification for this return value";
    case CKR_DEVICE_MEMORY:
      return "CKR_DEVICE_MEMORY: the token is out of memory";
    case CKR_DEVICE_REMOVED:
      return "CKR_DEVICE_REMOVED: the token was removed";
    case CKR_ENCRYPTED_DATA_INVALID:
      return "CKR_ENCRYPTED_DATA_INVALID: see the PKCS#11 specification for this return value";
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
      return "CKR_ENCRYPTED_DATA_LEN_RANGE: see the PKCS#11 specification for this return value";
    case CKR_FUNCTION_CANCELED:
      return "CKR_FUNCTION_CANCELED: see the PKCS#11 specification for this return value";
    case CKR_FUNCTION_NOT_PARALLEL:
      return "CKR_FUNCTION_NOT_PARALLEL: see the PKCS#11 specification for this return value";
    case CKR_FUNCTION_NOT_SUPPORTED:
      return "CKR_FUNCTION_NOT_SUPPORTED: see the PKCS#11 specification for this return value";
    case CKR_KEY_HANDLE_INVALID:
      return "CKR_KEY_HANDLE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_KEY_SIZE_RANGE:
      return "CKR_KEY_SIZE_RANGE: see the PKCS#11 specification for this return value";
    case CKR_KEY_TYPE_INCONSISTENT:
      return "CKR_KEY_TYPE_INCONSISTENT: the key is not an AES key";
    case CKR_KEY_NOT_NEEDED:
      return "CKR_KEY_NOT_NEEDED: see the PKCS#11 specification for this return value";
    case CKR_KEY_CHANGED:
      return "CKR_KEY_CHANGED: see the PKCS#11 specification for this return value";
    case CKR_KEY_NEEDED:
      return "CKR_KEY_NEEDED: see the PKCS#11 specification for this return value";
    case CKR_KEY_INDIGESTIBLE:
      return "CKR_KEY_INDIGESTIBLE: see the PKCS#11 specification for this return value";
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
      return "CKR_KEY_FUNCTION_NOT_PERMITTED: the key's attributes forbid this use: it needs "
             "CKA_ENCRYPT/CKA_DECRYPT or CKA_WRAP/CKA_UNWRAP";
    case CKR_KEY_NOT_WRAPPABLE:
      return "CKR_KEY_NOT_WRAPPABLE: see the PKCS#11 specification for this return value";
    case CKR_KEY_UNEXTRACTABLE:
      return "CKR_KEY_UNEXTRACTABLE: see the PKCS#11 specification for this return value";
    case CKR_MECHANISM_INVALID:
      return "CKR_MECHANISM_INVALID: the token does not offer this mechanism";
    case CKR_MECHANISM_PARAM_INVALID:
      return "CKR_MECHANISM_PARAM_INVALID: see the PKCS#11 specification for this return value";
    case CKR_OBJECT_HANDLE_INVALID:
      return "CKR_OBJECT_HANDLE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_OPERATION_ACTIVE:
      return "CKR_OPERATION_ACTIVE: see the PKCS#11 specification for this return value";
    case CKR_OPERATION_NOT_INITIALIZED:
      return "CKR_OPERATION_NOT_INITIALIZED: see the PKCS#11 specification for this return value";
    case CKR_PIN_INCORRECT:
      return "CKR_PIN_INCORRECT: the PIN is wrong (the token may lock after a few more tries)";
    case CKR_PIN_INVALID:
      return "CKR_PIN_INVALID: see the PKCS#11 specification for this return value";
    case CKR_PIN_LEN_RANGE:
      return "CKR_PIN_LEN_RANGE: see the PKCS#11 specification for this return value";
    case CKR_PIN_EXPIRED:
      return "CKR_PIN_EXPIRED: see the PKCS#11 specification for this return value";
    case CKR_PIN_LOCKED:
      return "CKR_PIN_LOCKED: the user PIN is locked after too many wrong tries: the security officer must "
             "reset it";
    case CKR_SESSION_CLOSED:
      return "CKR_SESSION_CLOSED: see the PKCS#11 specification for this return value";
    case CKR_SESSION_COUNT:
      return "CKR_SESSION_COUNT: the token allows no more sessions: lower pkcs11_options::max_sessions";
    case CKR_SESSION_HANDLE_INVALID:
      return "CKR_SESSION_HANDLE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_SESSION_PARALLEL_NOT_SUPPORTED:
      return "CKR_SESSION_PARALLEL_NOT_SUPPORTED: see the PKCS#11 specification for this return value";
    case CKR_SESSION_READ_ONLY:
      return "CKR_SESSION_READ_ONLY: see the PKCS#11 specification for this return value";
    case CKR_SESSION_EXISTS:
      return "CKR_SESSION_EXISTS: see the PKCS#11 specification for this return value";
    case CKR_SESSION_READ_ONLY_EXISTS:
      return "CKR_SESSION_READ_ONLY_EXISTS: see the PKCS#11 specification for this return value";
    case CKR_SESSION_READ_WRITE_SO_EXISTS:
      return "CKR_SESSION_READ_WRITE_SO_EXISTS: see the PKCS#11 specification for this return value";
    case CKR_SIGNATURE_INVALID:
      return "CKR_SIGNATURE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_SIGNATURE_LEN_RANGE:
      return "CKR_SIGNATURE_LEN_RANGE: see the PKCS#11 specification for this return value";
    case CKR_TEMPLATE_INCOMPLETE:
      return "CKR_TEMPLATE_INCOMPLETE: see the PKCS#11 specification for this return value";
    case CKR_TEMPLATE_INCONSISTENT:
      return "CKR_TEMPLATE_INCONSISTENT: see the PKCS#11 specification for this return value";
    case CKR_TOKEN_NOT_PRESENT:
      return "CKR_TOKEN_NOT_PRESENT: the token was removed";
    case CKR_TOKEN_NOT_RECOGNIZED:
      return "CKR_TOKEN_NOT_RECOGNIZED: see the PKCS#11 specification for this return value";
    case CKR_TOKEN_WRITE_PROTECTED:
      return "CKR_TOKEN_WRITE_PROTECTED: the token is read-only: keys cannot be created in it";
    case CKR_UNWRAPPING_KEY_SIZE_RANGE:
      return "CKR_UNWRAPPING_KEY_SIZE_RANGE: see the PKCS#11 specification for this return value";
    case CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT:
      return "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT: see the PKCS#11 specification for this return value";
    case CKR_USER_ALREADY_LOGGED_IN:
      return "CKR_USER_ALREADY_LOGGED_IN: see the PKCS#11 specification for this return value";
    case CKR_USER_NOT_LOGGED_IN:
      return "CKR_USER_NOT_LOGGED_IN: see the PKCS#11 specification for this return value";
    case CKR_USER_PIN_NOT_INITIALIZED:
      return "CKR_USER_PIN_NOT_INITIALIZED: the token's user PIN was never set: initialise it (softhsm2-util "
             "--init-token sets both PINs)";
    case CKR_USER_TYPE_INVALID:
      return "CKR_USER_TYPE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
      return "CKR_USER_ANOTHER_ALREADY_LOGGED_IN: see the PKCS#11 specification for this return value";
    case CKR_USER_TOO_MANY_TYPES:
      return "CKR_USER_TOO_MANY_TYPES: see the PKCS#11 specification for this return value";
    case CKR_WRAPPED_KEY_INVALID:
      return "CKR_WRAPPED_KEY_INVALID: see the PKCS#11 specification for this return value";
    case CKR_WRAPPED_KEY_LEN_RANGE:
      return "CKR_WRAPPED_KEY_LEN_RANGE: see the PKCS#11 specification for this return value";
    case CKR_WRAPPING_KEY_HANDLE_INVALID:
      return "CKR_WRAPPING_KEY_HANDLE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_WRAPPING_KEY_SIZE_RANGE:
      return "CKR_WRAPPING_KEY_SIZE_RANGE: see the PKCS#11 specification for this return value";
    case CKR_WRAPPING_KEY_TYPE_INCONSISTENT:
      return "CKR_WRAPPING_KEY_TYPE_INCONSISTENT: see the PKCS#11 specification for this return value";
    case CKR_RANDOM_SEED_NOT_SUPPORTED:
      return "CKR_RANDOM_SEED_NOT_SUPPORTED: see the PKCS#11 specification for this return value";
    case CKR_RANDOM_NO_RNG:
      return "CKR_RANDOM_NO_RNG: see the PKCS#11 specification for this return value";
    case CKR_DOMAIN_PARAMS_INVALID:
      return "CKR_DOMAIN_PARAMS_INVALID: see the PKCS#11 specification for this return value";
    case CKR_CURVE_NOT_SUPPORTED:
      return "CKR_CURVE_NOT_SUPPORTED: see the PKCS#11 specification for this return value";
    case CKR_BUFFER_TOO_SMALL:
      return "CKR_BUFFER_TOO_SMALL: see the PKCS#11 specification for this return value";
    case CKR_SAVED_STATE_INVALID:
      return "CKR_SAVED_STATE_INVALID: see the PKCS#11 specification for this return value";
    case CKR_INFORMATION_SENSITIVE:
      return "CKR_INFORMATION_SENSITIVE: see the PKCS#11 specification for this return value";
    case CKR_STATE_UNSAVEABLE:
      return "CKR_STATE_UNSAVEABLE: see the PKCS#11 specification for this return value";
    case CKR_CRYPTOKI_NOT_INITIALIZED:
      return "CKR_CRYPTOKI_NOT_INITIALIZED: see the PKCS#11 specification for this return value";
    case CKR_CRYPTOKI_ALREADY_INITIALIZED:
      return "CKR_CRYPTOKI_ALREADY_INITIALIZED: see the PKCS#11 specification for this return value";
    case CKR_MUTEX_BAD:
      return "CKR_MUTEX_BAD: see the PKCS#11 specification for this return value";
    case CKR_MUTEX_NOT_LOCKED:
      return "CKR_MUTEX_NOT_LOCKED: see the PKCS#11 specification for this return value";
    case CKR_NEW_PIN_MODE:
      return "CKR_NEW_PIN_MODE: see the PKCS#11 specification for this return value";
    case CKR_NEXT_OTP:
      return "CKR_NEXT_OTP: see the PKCS#11 specification for this return value";
    case CKR_EXCEEDED_MAX_ITERATIONS:
      return "CKR_EXCEEDED_MAX_ITERATIONS: see the PKCS#11 specification for this return value";
    case CKR_FIPS_SELF_TEST_FAILED:
      return "CKR_FIPS_SELF_TEST_FAILED: see the PKCS#11 specification for this return value";
    case CKR_LIBRARY_LOAD_FAILED:
      return "CKR_LIBRARY_LOAD_FAILED: see the PKCS#11 specification for this return value";
    case CKR_PIN_TOO_WEAK:
      return "CKR_PIN_TOO_WEAK: see the PKCS#11 specification for this return value";
    case CKR_PUBLIC_KEY_INVALID:
      return "CKR_PUBLIC_KEY_INVALID: see the PKCS#11 specification for this return value";
    case CKR_FUNCTION_REJECTED:
      return "CKR_FUNCTION_REJECTED: see the PKCS#11 specification for this return value";
    default:
      return "a vendor-defined or unknown PKCS#11 return value: see the module's documentation";
  }
}

// Boost's error_category has a non-virtual destructor by design: categories are never deleted
// through a base pointer.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class pkcs11_error_category final : public error_category {
 public:
  constexpr pkcs11_error_category() noexcept : error_category(category_id("pkcs11")) {}
  [[nodiscard]] const char* name() const noexcept override { return "pkcs11"; }
  [[nodiscard]] std::string message(int value) const override {
    return describe(static_cast<unsigned int>(value));
  }
  const char* message(int value, char* /*buffer*/, std::size_t /*len*/) const noexcept override {
    return describe(static_cast<unsigned int>(value));
  }
};
#pragma GCC diagnostic pop

constexpr pkcs11_error_category category;

}  // namespace

const error_category& pkcs11_category() noexcept {
  return category;
}

}  // namespace keel::crypto
