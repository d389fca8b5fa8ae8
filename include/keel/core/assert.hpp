#pragma once
/// @file keel/core/assert.hpp
/// @brief KEEL_ASSERT: invariants that state machines check, on in debug and sanitizer builds.
///
/// @code
/// KEEL_ASSERT(account.debits_pending >= amount, "a pending debit is released twice");
/// @endcode
/// A failed assertion is a bug in keel (or memory corrupted under it), never bad input: it
/// writes one JSON log line naming the condition, the message, the file and the line, and
/// aborts, as TigerBeetle does, rather than carry a broken invariant into stored state.
///
/// On unless NDEBUG is defined (Debug, asan, tsan and fuzz builds); define KEEL_ENABLE_ASSERTS
/// to keep them in an optimised build, or KEEL_DISABLE_ASSERTS to drop them from a debug one.
/// When off, the condition is still compiled (so it cannot rot) but never evaluated.
#include <string_view>

namespace keel::detail {
/// Logs the failed assertion and aborts.
[[noreturn]] void assertion_failed(std::string_view condition, std::string_view message,
                                   std::string_view file, int line) noexcept;
}  // namespace keel::detail

#if defined(KEEL_DISABLE_ASSERTS)
#define KEEL_ASSERTS_ENABLED 0
#elif defined(KEEL_ENABLE_ASSERTS) || !defined(NDEBUG)
#define KEEL_ASSERTS_ENABLED 1
#else
#define KEEL_ASSERTS_ENABLED 0
#endif

#if KEEL_ASSERTS_ENABLED
/// Aborts with a log line when `condition` is false; the optional second argument says what
/// the invariant means.
#define KEEL_ASSERT(condition, ...)                                 \
  (static_cast<bool>(condition) ? static_cast<void>(0)              \
                                : ::keel::detail::assertion_failed( \
                                      #condition, ::std::string_view{"" __VA_ARGS__}, __FILE__, __LINE__))
#else
#define KEEL_ASSERT(condition, ...) static_cast<void>(sizeof(static_cast<bool>(condition)))
#endif
