#include <keel/core/assert.hpp>
#include <keel/core/log.hpp>

#include <cstdlib>

namespace keel::detail {

void assertion_failed(std::string_view condition, std::string_view message, std::string_view file,
                      int line) noexcept {
  // Written whatever the log level: the process is about to end and this says why.
  if (!log::enabled(log::level::error)) log::set_level(log::level::error);
  log::error("keel assertion failed: this is a bug in keel; please report it with this line",
             {{"condition", condition}, {"invariant", message}, {"file", file}, {"line", line}});
  std::abort();
}

}  // namespace keel::detail
