// Headless Chromium over the DevTools protocol: one WebSocket to the browser, one page target
// attached in flat mode (its messages carry a sessionId). Requests are answered in order of id;
// events that arrive in between (console errors, load events) are recorded as they pass.
#include "support/browser.hpp"

#include <keel/core/bytes.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace keel::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using std::chrono::steady_clock;

namespace {

error_code make_error(boost::system::errc::errc_t e) {
  return boost::system::errc::make_error_code(e);
}

std::optional<std::string> find_chromium() {
  if (const char* configured = std::getenv("KEEL_CHROMIUM"); configured != nullptr && *configured != '\0') {
    return std::string(configured);
  }
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    std::string_view rest = dirs;
    while (!rest.empty()) {
      const auto colon = rest.find(':');
      const std::string_view dir = rest.substr(0, colon);
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
      const std::string candidate = std::string(dir) + "/" + name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return std::nullopt;
}

// Text of a console.error call: its arguments, as the console would show them.
std::string console_text(const json::object& params) {
  std::string text;
  if (const auto* args = params.if_contains("args"); args != nullptr && args->is_array()) {
    for (const auto& arg : args->as_array()) {
      if (!text.empty()) text += ' ';
      const auto& a = arg.as_object();
      if (const auto* v = a.if_contains("value"); v != nullptr) {
        text += v->is_string() ? std::string(v->as_string()) : json::serialize(*v);
      } else if (const auto* d = a.if_contains("description"); d != nullptr && d->is_string()) {
        text += d->as_string();
      }
    }
  }
  return text;
}

std::string exception_text(const json::object& details) {
  if (const auto* e = details.if_contains("exception"); e != nullptr && e->is_object()) {
    if (const auto* d = e->as_object().if_contains("description"); d != nullptr && d->is_string()) {
      return std::string(d->as_string());
    }
  }
  if (const auto* t = details.if_contains("text"); t != nullptr && t->is_string())
    return std::string(t->as_string());
  return "a JavaScript exception";
}

}  // namespace

struct browser::state {
  pid_t pid = -1;
  std::filesystem::path profile;
  asio::io_context io;
  beast::websocket::stream<tcp::socket> socket{io};
  beast::flat_buffer buffer;
  bool broken = false;
  std::int64_t next_id = 1;
  std::string session;
  std::uint64_t loads = 0;
  std::vector<std::string> errors;
  std::string last_error;

  ~state() {
    if (socket.is_open()) {
      beast::error_code ignored;
      socket.next_layer().close(ignored);
    }
    if (pid > 0) {
      // Chromium forks helpers (zygote, renderers) into its process group: stop them all.
      ::kill(-pid, SIGTERM);
      const auto deadline = steady_clock::now() + std::chrono::seconds(3);
      int status = 0;
      while (::waitpid(pid, &status, WNOHANG) == 0) {
        if (steady_clock::now() > deadline) {
          ::kill(-pid, SIGKILL);
          ::waitpid(pid, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      ::kill(-pid, SIGKILL);
      // Its helpers were re-parented to this process (a subreaper): reap them too.
      const auto reap_deadline = steady_clock::now() + std::chrono::seconds(3);
      while (::waitpid(-pid, &status, WNOHANG) >= 0 && steady_clock::now() < reap_deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    if (!profile.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(profile, ignored);
    }
  }

  error_code fail(boost::system::errc::errc_t e, std::string why) {
    last_error = std::move(why);
    return make_error(e);
  }

  void record_event(const json::object& message) {
    const auto* method = message.if_contains("method");
    const auto* params = message.if_contains("params");
    if (method == nullptr || !method->is_string() || params == nullptr || !params->is_object()) return;
    const std::string_view name = method->as_string();
    const auto& p = params->as_object();
    if (name == "Page.loadEventFired") {
      ++loads;
    } else if (name == "Runtime.exceptionThrown") {
      if (const auto* d = p.if_contains("exceptionDetails"); d != nullptr && d->is_object()) {
        errors.push_back(exception_text(d->as_object()));
      }
    } else if (name == "Runtime.consoleAPICalled") {
      if (const auto* type = p.if_contains("type");
          type != nullptr && type->is_string() && type->as_string() == "error") {
        errors.push_back(console_text(p));
      }
    }
  }

  // Reads one message; a timeout leaves the socket unusable, so the browser is marked broken.
  result<json::object> read_message(steady_clock::time_point deadline) {
    bool done = false;
    beast::error_code ec;
    socket.async_read(buffer, [&](beast::error_code e, std::size_t) {
      ec = e;
      done = true;
    });
    io.restart();
    io.run_until(deadline);
    if (!done) {
      broken = true;
      beast::error_code ignored;
      socket.next_layer().cancel(ignored);
      io.restart();
      io.run();
      return fail(boost::system::errc::timed_out, "chromium did not answer in time");
    }
    if (ec) {
      broken = true;
      return fail(boost::system::errc::connection_aborted, "lost the DevTools connection: " + ec.message());
    }
    const std::string text = beast::buffers_to_string(buffer.data());
    buffer.consume(buffer.size());
    json::error_code parse_error;
    auto parsed = json::parse(text, parse_error);
    if (parse_error || !parsed.is_object()) {
      return fail(boost::system::errc::protocol_error,
                  "chromium sent something that is not a JSON object: " + text);
    }
    return std::move(parsed.as_object());
  }

  // Sends a command (to the page session unless `to_browser`) and waits for its answer.
  result<json::object> call(std::string_view method, json::object params, bool to_browser = false,
                            std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (broken)
      return fail(boost::system::errc::connection_aborted,
                  "the browser is unusable after an earlier failure");
    const std::int64_t id = next_id++;
    json::object message{{"id", id}, {"method", method}, {"params", std::move(params)}};
    if (!to_browser) message["sessionId"] = session;
    beast::error_code ec;
    socket.write(asio::buffer(json::serialize(message)), ec);
    if (ec) {
      broken = true;
      return fail(boost::system::errc::connection_aborted, "could not send to chromium: " + ec.message());
    }
    const auto deadline = steady_clock::now() + timeout;
    for (;;) {
      auto received = read_message(deadline);
      if (!received) return received.error();
      auto& m = *received;
      const auto* answer_id = m.if_contains("id");
      if (answer_id == nullptr) {
        record_event(m);
        continue;
      }
      if (!answer_id->is_int64() || answer_id->as_int64() != id) continue;
      if (const auto* e = m.if_contains("error"); e != nullptr) {
        return fail(boost::system::errc::invalid_argument,
                    std::string(method) + " failed: " + json::serialize(*e));
      }
      if (auto* r = m.if_contains("result"); r != nullptr && r->is_object()) return std::move(r->as_object());
      return json::object{};
    }
  }
};

browser::browser(std::unique_ptr<state> s) : state_(std::move(s)) {}
browser::browser(browser&&) noexcept = default;
browser& browser::operator=(browser&&) noexcept = default;
browser::~browser() = default;

result<browser> browser::launch() {
  auto s = std::make_unique<state>();
  const auto chromium = find_chromium();
  if (!chromium) {
    s->last_error = "chromium is not installed; run ./keel setup";
    return make_error(boost::system::errc::no_such_file_or_directory);
  }
  std::string profile_template = (std::filesystem::temp_directory_path() / "keel-browser-XXXXXX").string();
  if (::mkdtemp(profile_template.data()) == nullptr) return make_error(boost::system::errc::io_error);
  s->profile = profile_template;

  std::vector<std::string> args = {
      *chromium,
      "--headless",
      "--no-sandbox",  // tests may run as root, where the sandbox refuses to start
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-extensions",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-features=Translate,MediaRouter,OptimizationHints",
      "--window-size=1280,900",
      "--remote-debugging-port=0",
      "--user-data-dir=" + s->profile.string(),
      "about:blank",
  };
  const std::string log_path = (s->profile / "chromium.log").string();
  // Chromium's helpers outlive its main process by a moment; as a subreaper this process gets
  // them back and reaps them, instead of leaving zombies behind when init does not.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  const pid_t pid = ::fork();
  if (pid < 0) return make_error(boost::system::errc::resource_unavailable_try_again);
  if (pid == 0) {
    ::setpgid(0, 0);
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  s->pid = pid;

  // Chromium writes its DevTools port and browser path to the profile once it listens.
  const auto port_file = s->profile / "DevToolsActivePort";
  const auto deadline = steady_clock::now() + std::chrono::seconds(30);
  std::string port_text;
  std::string browser_path;
  for (;;) {
    {
      std::ifstream in(port_file);
      if (in && std::getline(in, port_text) && std::getline(in, browser_path) && !browser_path.empty()) break;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      s->pid = -1;
      std::ifstream log(log_path);
      std::string tail((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      s->last_error =
          "chromium exited before it listened: " + tail.substr(tail.size() > 2000 ? tail.size() - 2000 : 0);
      return make_error(boost::system::errc::no_such_process);
    }
    if (steady_clock::now() > deadline) {
      s->last_error = "chromium did not open its DevTools port within 30 s";
      return make_error(boost::system::errc::timed_out);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  beast::error_code ec;
  tcp::resolver resolver(s->io);
  const auto endpoints = resolver.resolve("127.0.0.1", port_text, ec);
  if (!ec) asio::connect(s->socket.next_layer(), endpoints, ec);
  if (!ec) s->socket.handshake("127.0.0.1:" + port_text, browser_path, ec);
  if (ec) {
    s->last_error = "could not connect to chromium's DevTools: " + ec.message();
    return make_error(boost::system::errc::connection_refused);
  }
  s->socket.read_message_max(64 * 1024 * 1024);  // screenshots are large

  auto created = s->call("Target.createTarget", {{"url", "about:blank"}}, true);
  if (!created) return created.error();
  auto attached =
      s->call("Target.attachToTarget", {{"targetId", created->at("targetId")}, {"flatten", true}}, true);
  if (!attached) return attached.error();
  s->session = std::string(attached->at("sessionId").as_string());
  for (const char* domain : {"Page.enable", "Runtime.enable"}) {
    if (auto enabled = s->call(domain, {}); !enabled) return enabled.error();
  }
  return browser(std::move(s));
}

result<void> browser::navigate(std::string_view url, std::chrono::milliseconds timeout) {
  auto& s = *state_;
  const auto loads_before = s.loads;
  auto navigated = s.call("Page.navigate", {{"url", url}});
  if (!navigated) return navigated.error();
  if (const auto* text = navigated->if_contains("errorText"); text != nullptr && text->is_string()) {
    return s.fail(boost::system::errc::host_unreachable,
                  "could not open " + std::string(url) + ": " + std::string(text->as_string()));
  }
  const auto deadline = steady_clock::now() + timeout;
  while (s.loads == loads_before) {
    auto m = s.read_message(deadline);
    if (!m) {
      s.last_error = std::string(url) + " did not finish loading: " + s.last_error;
      return m.error();
    }
    s.record_event(*m);
  }
  return {};
}

result<json::value> browser::evaluate(std::string_view expression) {
  auto& s = *state_;
  auto evaluated = s.call(
      "Runtime.evaluate",
      {{"expression", expression}, {"awaitPromise", true}, {"returnByValue", true}, {"userGesture", true}});
  if (!evaluated) return evaluated.error();
  if (const auto* details = evaluated->if_contains("exceptionDetails");
      details != nullptr && details->is_object()) {
    return s.fail(boost::system::errc::invalid_argument, exception_text(details->as_object()));
  }
  const auto& remote = evaluated->at("result").as_object();
  if (const auto* value = remote.if_contains("value")) return *value;
  return json::value(nullptr);  // undefined
}

result<json::value> browser::wait_for(std::string_view condition, std::chrono::milliseconds timeout) {
  auto& s = *state_;
  const std::string probe =
      "(async () => { const v = await (" + std::string(condition) + "); return v ? v : null; })()";
  const auto deadline = steady_clock::now() + timeout;
  std::string last_exception;
  for (;;) {
    auto value = evaluate(probe);
    if (value && !value->is_null()) return value;
    if (!value) {
      if (s.broken) return value.error();
      last_exception = s.last_error;  // e.g. the element does not exist yet: keep polling
    }
    if (steady_clock::now() > deadline) {
      return s.fail(boost::system::errc::timed_out,
                    "still false after " + std::to_string(timeout.count()) +
                        " ms: " + std::string(condition) +
                        (last_exception.empty() ? "" : " (last exception: " + last_exception + ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

result<void> browser::click(std::string_view css_selector) {
  auto& s = *state_;
  const std::string locate =
      "(() => { const e = document.querySelector(" + json::serialize(json::string(css_selector)) +
      "); if (!e) return null; e.scrollIntoView({block: 'center'});"
      " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()";
  auto where = evaluate(locate);
  if (!where) return where.error();
  if (!where->is_array()) {
    return s.fail(boost::system::errc::no_such_file_or_directory,
                  "no element matches " + std::string(css_selector));
  }
  const double x = where->as_array().at(0).to_number<double>();
  const double y = where->as_array().at(1).to_number<double>();
  for (const char* type : {"mousePressed", "mouseReleased"}) {
    auto sent = s.call("Input.dispatchMouseEvent",
                       {{"type", type}, {"x", x}, {"y", y}, {"button", "left"}, {"clickCount", 1}});
    if (!sent) return sent.error();
  }
  return {};
}

result<void> browser::insert_text(std::string_view text) {
  auto sent = state_->call("Input.insertText", {{"text", text}});
  if (!sent) return sent.error();
  return {};
}

result<std::vector<std::uint8_t>> browser::screenshot_png() {
  auto shot = state_->call("Page.captureScreenshot", {{"format", "png"}});
  if (!shot) return shot.error();
  auto decoded = from_base64(shot->at("data").as_string());
  if (!decoded) return decoded.error();
  return std::vector<std::uint8_t>(decoded->begin(), decoded->end());
}

std::vector<std::string> browser::console_errors() const {
  return state_->errors;
}

const std::string& browser::last_error() const {
  return state_->last_error;
}

}  // namespace keel::test
