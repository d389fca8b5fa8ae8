#pragma once
/// @file keel/core/log.hpp
/// @brief Structured logging to stderr: one JSON object per line.
///
/// @code
/// keel::log::info("pool connection replaced", {{"pool", name}, {"in_use", 3}, {"reason", why}});
/// // {"ts":"2026-11-25T21:53:04.123456Z","level":"info","msg":"pool connection replaced","pool":"main",...}
/// @endcode
/// The level comes from the environment variable KEEL_LOG (trace, debug, info, warn, error,
/// off; default info) or set_level(). A disabled call costs one relaxed atomic load and formats
/// nothing; an enabled one formats into a thread-local buffer and emits the line with a single
/// write(2), so threads never wait on a logging lock.
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <type_traits>

namespace keel::log {

enum class level : std::uint8_t { trace, debug, info, warn, error, off };

/// One key/value pair of a log line. Values are strings, integers, doubles or booleans.
class field {
 public:
  enum class kind : std::uint8_t { string, signed_integer, unsigned_integer, floating, boolean };

  field(std::string_view key, std::string_view value) noexcept
      : key_(key), kind_(kind::string), string_(value) {}
  field(std::string_view key, const char* value) noexcept : field(key, std::string_view(value)) {}
  field(std::string_view key, bool value) noexcept
      : key_(key), kind_(kind::boolean), unsigned_(value ? 1U : 0U) {}
  template <class T>
  requires(std::is_integral_v<T>&& std::is_signed_v<T>) field(std::string_view key, T value)
  noexcept : key_(key), kind_(kind::signed_integer), signed_(value) {}
  template <class T>
  requires(std::is_integral_v<T>&& std::is_unsigned_v<T> && !std::is_same_v<T, bool>)
      field(std::string_view key, T value)
  noexcept : key_(key), kind_(kind::unsigned_integer), unsigned_(value) {}
  template <class T>
  requires std::is_floating_point_v<T> field(std::string_view key, T value)
  noexcept : key_(key), kind_(kind::floating), floating_(static_cast<double>(value)) {}

  [[nodiscard]] std::string_view key() const noexcept { return key_; }
  [[nodiscard]] kind type() const noexcept { return kind_; }
  [[nodiscard]] std::string_view string_value() const noexcept { return string_; }
  [[nodiscard]] std::int64_t signed_value() const noexcept { return signed_; }
  [[nodiscard]] std::uint64_t unsigned_value() const noexcept { return unsigned_; }
  [[nodiscard]] double floating_value() const noexcept { return floating_; }

 private:
  std::string_view key_;
  kind kind_;
  std::string_view string_;
  union {
    std::int64_t signed_;
    std::uint64_t unsigned_ = 0;
    double floating_;
  };
};

namespace detail {
extern std::atomic<level> current_level;
void emit(level lvl, std::string_view message, std::initializer_list<field> fields) noexcept;
}  // namespace detail

/// The current level; messages below it are dropped.
[[nodiscard]] inline level current() noexcept {
  return detail::current_level.load(std::memory_order_relaxed);
}
/// True when a message at `lvl` would be written.
[[nodiscard]] inline bool enabled(level lvl) noexcept {
  return lvl >= current() && lvl != level::off;
}
/// Changes the level for the whole process.
void set_level(level lvl) noexcept;
/// Parses a level name (as in KEEL_LOG); nullopt for an unknown name.
[[nodiscard]] std::optional<level> parse_level(std::string_view name) noexcept;

/// Where lines go: stderr by default. Tests install a sink to capture lines; pass an empty
/// function to restore stderr. Not for hot-swapping while other threads log.
void set_sink(std::function<void(std::string_view line)> sink);

inline void write(level lvl, std::string_view message, std::initializer_list<field> fields = {}) noexcept {
  if (enabled(lvl)) detail::emit(lvl, message, fields);
}
inline void trace(std::string_view message, std::initializer_list<field> fields = {}) noexcept {
  write(level::trace, message, fields);
}
inline void debug(std::string_view message, std::initializer_list<field> fields = {}) noexcept {
  write(level::debug, message, fields);
}
inline void info(std::string_view message, std::initializer_list<field> fields = {}) noexcept {
  write(level::info, message, fields);
}
inline void warn(std::string_view message, std::initializer_list<field> fields = {}) noexcept {
  write(level::warn, message, fields);
}
inline void error(std::string_view message, std::initializer_list<field> fields = {}) noexcept {
  write(level::error, message, fields);
}

}  // namespace keel::log
