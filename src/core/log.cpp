#include <keel/core/log.hpp>
#include <keel/core/time_text.hpp>
#include <keel/core/utf8.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <string>

#include <unistd.h>

namespace keel::log {
namespace detail {
std::atomic<level> current_level{level::info};
}  // namespace detail

namespace {

constexpr std::string_view level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

std::function<void(std::string_view)>& sink() {
  static std::function<void(std::string_view)> instance;
  return instance;
}

// Read KEEL_LOG once at start-up; a typo is reported rather than silently ignored. It runs
// during static initialisation, before any thread of keel's exists, and only allocates (a
// bad_alloc there ends the program, as any failed start-up allocation would).
// NOLINTNEXTLINE(cert-err58-cpp)
const bool level_from_environment = [] {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): see above, no other thread runs yet
  if (const char* name = std::getenv("KEEL_LOG"); name != nullptr && *name != '\0') {
    if (const auto lvl = parse_level(name)) {
      detail::current_level.store(*lvl, std::memory_order_relaxed);
    } else {
      // Through emit(), so the value is escaped like any other field.
      detail::emit(level::warn, "KEEL_LOG has an unknown level; using info",
                   {{"value", std::string_view(name).substr(0, 64)},
                    {"expected", "trace, debug, info, warn, error or off"}});
    }
  }
  return true;
}();

void append_escaped(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out.append("\\n");
    } else if (c == '\t') {
      out.append("\\t");
    } else if (c == '\r') {
      out.append("\\r");
    } else if (c < 0x20 || c == 0x7F) {
      out.append("\\u00");
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xF]);
    } else if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      // Pass well-formed UTF-8 through; replace anything else so the line stays valid JSON.
      const std::size_t length = keel::utf8_sequence_length(text.substr(i));
      if (length != 0) {
        out.append(text.substr(i, length));
        i += length - 1;
      } else {
        out.append("\\ufffd");
      }
    }
  }
}

void append_string(std::string& out, std::string_view text) {
  out.push_back('"');
  append_escaped(out, text);
  out.push_back('"');
}

void append_timestamp(std::string& out) {
  append_utc(out, system_clock::instance().now());
}

void append_value(std::string& out, const field& f) {
  switch (f.type()) {
    case field::kind::string:
      append_string(out, f.string_value());
      break;
    case field::kind::signed_integer:
      fmt::format_to(std::back_inserter(out), "{}", f.signed_value());
      break;
    case field::kind::unsigned_integer:
      fmt::format_to(std::back_inserter(out), "{}", f.unsigned_value());
      break;
    case field::kind::floating:
      // JSON has no NaN or infinity; write them as strings rather than emit an invalid line.
      if (std::isfinite(f.floating_value())) {
        fmt::format_to(std::back_inserter(out), "{}", f.floating_value());
      } else {
        fmt::format_to(std::back_inserter(out), "\"{}\"", f.floating_value());
      }
      break;
    case field::kind::boolean:
      out.append(f.unsigned_value() != 0 ? "true" : "false");
      break;
  }
}

void write_all(std::string_view line) noexcept {
  while (!line.empty()) {
    const ssize_t n = ::write(2, line.data(), line.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a failure to log
    }
    line.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

void set_level(level lvl) noexcept {
  detail::current_level.store(lvl, std::memory_order_relaxed);
}

std::optional<level> parse_level(std::string_view name) noexcept {
  for (std::size_t i = 0; i < std::size(level_names); ++i) {
    if (name == level_names[i]) return static_cast<level>(i);
  }
  if (name == "warning") return level::warn;
  return std::nullopt;
}

void set_sink(std::function<void(std::string_view line)> new_sink) {
  sink() = std::move(new_sink);
}

void detail::emit(level lvl, std::string_view message, std::initializer_list<field> fields) noexcept {
  try {
    // One buffer per thread; a sink that logs itself gets a buffer of its own, so the line it
    // was handed stays intact.
    thread_local std::string buffer;
    thread_local bool in_use = false;
    std::string nested;
    std::string& line = in_use ? nested : buffer;
    const bool outermost = !in_use;
    in_use = true;
    struct release_buffer {
      bool outermost;
      ~release_buffer() {
        if (outermost) in_use = false;
      }
    } release{outermost};
    line.clear();
    line.append(R"({"ts":")");
    append_timestamp(line);
    line.append(R"(","level":")");
    line.append(level_names[static_cast<std::size_t>(lvl)]);
    line.append(R"(","msg":)");
    append_string(line, message);
    for (const field& f : fields) {
      line.push_back(',');
      append_string(line, f.key());
      line.push_back(':');
      append_value(line, f);
    }
    line.append("}\n");
    if (auto& s = sink()) {
      s(line);
    } else {
      write_all(line);
    }
  } catch (...) {
    // Logging must never take the caller down; a line lost to bad_alloc is the lesser harm.
  }
}

}  // namespace keel::log
