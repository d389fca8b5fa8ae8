#pragma once
/// @file keel/core/error.hpp
/// @brief `keel::result<T>`, `keel::error_code`, and the pattern for a component's `errc`.
///
/// Every fallible keel call returns `result<T>`. A component declares its own `errc` enum,
/// a category made with `enum_error_category`, and a `make_error_code` overload found by ADL:
/// @code
/// namespace keel::jobs {
/// enum class errc { queue_paused = 1, unknown_kind };
/// const keel::error_category& jobs_category() noexcept;   // defined once in src/jobs/
/// inline keel::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), jobs_category()};
/// }
/// }
/// template <> struct boost::system::is_error_code_enum<keel::jobs::errc> : std::true_type {};
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

[[nodiscard]] inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), core_category()};
}

}  // namespace keel

template <>
struct boost::system::is_error_code_enum<keel::errc> : std::true_type {};
