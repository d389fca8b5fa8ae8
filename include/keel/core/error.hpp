#pragma once
/// @file keel/core/error.hpp
/// @brief `keel::result<T>`, `keel::error_code`, and the pattern for a component's `errc`.
///
/// Every fallible keel call returns `result<T>`. A component declares its own `errc` enum and
/// its category; KEEL_ERROR_ENUM adds `make_error_code` and Boost's trait:
/// @code
/// namespace keel::jobs {
/// enum class errc { queue_paused = 1, unknown_kind };
/// const keel::error_category& jobs_category() noexcept;   // defined once in src/jobs/:
/// }                                                        //   enum_error_category<errc>{"keel.jobs",
/// &describe} KEEL_ERROR_ENUM(keel::jobs, jobs_category)
/// @endcode
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>
#include <boost/system/system_error.hpp>

#include <cstdint>
#include <string>
#include <type_traits>

namespace keel {

using error_code = boost::system::error_code;
using error_category = boost::system::error_category;
using system_error = boost::system::system_error;

/// A value or the error that prevented it. `.value()` throws `system_error` on error.
template <class T>
using result = boost::system::result<T, error_code>;

/// An error category for a component's `errc` enum. `describe` maps each value to a message
/// that says what went wrong and what to do; `id` is a fixed random 64-bit number, so two
/// copies of the category (e.g. in two shared objects) still compare equal.
/// A category's id from its name (64-bit FNV-1a): two copies of a category (in two shared
/// objects, say) compare equal, and no id is picked by hand.
[[nodiscard]] constexpr std::uint64_t category_id(const char* name) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (; *name != '\0'; ++name) {
    h ^= static_cast<unsigned char>(*name);
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Boost's error_category has a non-virtual destructor by design: categories are never deleted
// through a base pointer.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
template <class Errc>
requires std::is_enum_v<Errc>
class enum_error_category final : public error_category {
 public:
  using describe_fn = const char* (*)(Errc) noexcept;

  constexpr enum_error_category(std::uint64_t id, const char* name, describe_fn describe) noexcept
      : error_category(id), name_(name), describe_(describe) {}
  /// The id is category_id(name).
  constexpr enum_error_category(const char* name, describe_fn describe) noexcept
      : enum_error_category(category_id(name), name, describe) {}

  [[nodiscard]] const char* name() const noexcept override { return name_; }
  [[nodiscard]] std::string message(int value) const override { return describe_(static_cast<Errc>(value)); }
  const char* message(int value, char* /*buffer*/, std::size_t /*len*/) const noexcept override {
    return describe_(static_cast<Errc>(value));
  }

 private:
  const char* name_;
  describe_fn describe_;
};
#pragma GCC diagnostic pop

/// Errors of keel::core.
enum class errc {
  hex_odd_length = 1,
  hex_invalid_digit,
  base64_invalid_character,
  base64_invalid_length,
  base64_invalid_padding,
  base64_noncanonical,
  varint_truncated,
  varint_overflow,
  varint_noncanonical,
  invalid_key_size,
  invalid_signature_size,
  crypto_failure,
  invalid_argument,
  truncated,         ///< byte_reader: the input ends inside a field
  trailing_bytes,    ///< byte_reader: bytes left after a complete value
  length_too_large,  ///< byte_reader: a length prefix claims more than the format allows
};

/// The category of `keel::errc` (name "keel.core").
[[nodiscard]] const error_category& core_category() noexcept;

}  // namespace keel

/// Makes `ns::errc` a keel error code: `make_error_code(ns::errc)` (found by ADL) on the
/// category `ns::category_fn()`, and Boost's is_error_code_enum. Use at global scope.
#define KEEL_ERROR_ENUM(ns, category_fn)                                     \
  namespace ns {                                                             \
  [[nodiscard]] inline ::keel::error_code make_error_code(errc e) noexcept { \
    return {static_cast<int>(e), category_fn()};                             \
  }                                                                          \
  }                                                                          \
  template <>                                                                \
  struct boost::system::is_error_code_enum<ns::errc> : std::true_type {}

KEEL_ERROR_ENUM(keel, core_category);
