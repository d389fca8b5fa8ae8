#pragma once
// A real headless Chromium for `browser` tests, driven over the DevTools protocol.
//
// Each browser runs in its own temporary profile and process group and is killed (and its
// profile removed) when the object goes away. Calls are synchronous and bounded by timeouts, so a
// hung page fails the test instead of hanging it. When a call fails, last_error() says why
// (a JavaScript exception's text, a timeout, a missing chromium).
#include <keel/core/result.hpp>

#include <boost/json/value.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel::test {

class browser {
 public:
  /// Starts chromium (KEEL_CHROMIUM, or `chromium` on PATH) headless with a blank page.
  [[nodiscard]] static result<browser> launch();

  browser(browser&&) noexcept;
  browser& operator=(browser&&) noexcept;
  ~browser();

  /// Opens `url` in the page and waits for its load event.
  [[nodiscard]] result<void> navigate(std::string_view url,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(20));

  /// Evaluates a JavaScript expression in the page, awaiting it when it is a promise; the value
  /// comes back as JSON. A thrown exception is an error whose text is in last_error().
  [[nodiscard]] result<boost::json::value> evaluate(std::string_view expression);

  /// Polls `condition` (a JavaScript expression) until it is truthy; returns its last value.
  [[nodiscard]] result<boost::json::value> wait_for(
      std::string_view condition, std::chrono::milliseconds timeout = std::chrono::seconds(10));

  /// Clicks the first element matching the CSS selector (scrolled into view, real click event).
  [[nodiscard]] result<void> click(std::string_view css_selector);

  /// Types `text` into the focused element as a keyboard would insert it (input events and all).
  [[nodiscard]] result<void> insert_text(std::string_view text);

  /// A PNG of the visible page, for debugging a failed test.
  [[nodiscard]] result<std::vector<std::uint8_t>> screenshot_png();

  /// Uncaught exceptions and console.error messages the page produced so far.
  [[nodiscard]] std::vector<std::string> console_errors() const;

  /// Why the last failed call failed.
  [[nodiscard]] const std::string& last_error() const;

 private:
  struct state;
  explicit browser(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
};

}  // namespace keel::test
