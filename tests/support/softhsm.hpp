#pragma once
// A throwaway SoftHSM2 token: its own configuration and token directory in a temporary
// directory, initialised with Debian's softhsm2-util, removed at the end. SoftHSM reads
// SOFTHSM2_CONF when the module is initialised, so a token is good for the providers opened
// while it lives (keel finalises the module when the last provider closes).
#include <keel/crypto_pkcs11/pkcs11.hpp>

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace keel::test {

class softhsm_token {
 public:
  static constexpr const char* module_path = "/usr/lib/softhsm/libsofthsm2.so";
  static constexpr const char* user_pin = "1234";

  explicit softhsm_token(std::string label = "keel-test") : label_(std::move(label)) {
    std::string pattern = (std::filesystem::temp_directory_path() / "keel-softhsm-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir_ = pattern;
    std::filesystem::create_directory(dir_ / "tokens");
    const auto conf = dir_ / "softhsm2.conf";
    std::ofstream(conf) << "directories.tokendir = " << (dir_ / "tokens").string()
                        << "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n";
    REQUIRE(::setenv("SOFTHSM2_CONF", conf.c_str(), 1) == 0);
    const std::string init = "softhsm2-util --init-token --free --label '" + label_ +
                             "' --so-pin 0000 --pin " + user_pin + " >/dev/null";
    INFO("softhsm2-util (Debian softhsm2, installed by ./keel setup) initialises the test token");
    REQUIRE(std::system(init.c_str()) == 0);  // NOLINT(cert-env33-c): a fixed command
  }
  softhsm_token(const softhsm_token&) = delete;
  softhsm_token& operator=(const softhsm_token&) = delete;
  ~softhsm_token() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  [[nodiscard]] const std::string& label() const noexcept { return label_; }

  /// Options for a provider on this token wrapping with `key_label`.
  [[nodiscard]] crypto::pkcs11_options options(std::string key_label = "kek-1") const {
    crypto::pkcs11_options o;
    o.module = module_path;
    o.token_label = label_;
    o.pin = crypto::secret_bytes::copy_of(as_bytes(user_pin));
    o.key_label = std::move(key_label);
    return o;
  }

 private:
  std::string label_;
  std::filesystem::path dir_;
};

}  // namespace keel::test
