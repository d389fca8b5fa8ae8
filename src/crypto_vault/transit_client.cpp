// The Vault transit KMS: one HTTP/1.1 request per call (Beast, blocking, bounded by the
// timeout) over TLS (certificate and host name checked) or plain TCP, the data key as
// `plaintext`, the envelope's context as `associated_data`, and the ciphertext Vault answers
// kept as the wrapped bytes.
#include <keel/core/log.hpp>
#include <keel/crypto_vault/transit_client.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

// Asio's TLS support, compiled here once: keel::asio builds Asio without it (only this
// component speaks TLS), and with separate compilation its code must be in one TU.
#include <boost/asio/ssl/impl/src.hpp>

#include <charconv>
#include <optional>
#include <string>
#include <utility>

namespace keel::crypto {

struct vault_transit_kms::state {
  bool tls = true;
  std::optional<boost::asio::ssl::context> tls_context;  // made once: it holds the trusted certificates
  std::string host;
  std::string port;
  secret_bytes token;
  std::string mount;
  std::string key_name;
  std::chrono::milliseconds timeout{};
};

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

struct reply {
  unsigned status = 0;
  json::value body;
};

// The request over an open stream (TCP, or TLS after its handshake), and the answer.
template <class Stream>
result<reply> exchange(asio::io_context& ioc, Stream& stream, const vault_transit_kms::state& s,
                       http::verb verb, const std::string& path, const json::object* payload) {
  beast::error_code ec;
  http::request<http::string_body> req(verb, "/v1/" + s.mount + "/" + path, 11);
  req.set(http::field::host, s.host + ":" + s.port);
  req.set("X-Vault-Token", std::string_view(reinterpret_cast<const char*>(s.token.data()), s.token.size()));
  if (payload != nullptr) {
    req.set(http::field::content_type, "application/json");
    req.body() = json::serialize(*payload);
  }
  req.prepare_payload();
  ioc.restart();
  http::async_write(stream, req, [&](beast::error_code e, std::size_t) { ec = e; });
  ioc.run();
  // The request body may hold a data key (encrypt's plaintext): wipe it.
  cleanse({reinterpret_cast<std::uint8_t*>(req.body().data()), req.body().size()});
  if (ec) return errc::vault_unreachable;
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  ioc.restart();
  http::async_read(stream, buffer, res, [&](beast::error_code e, std::size_t) { ec = e; });
  ioc.run();
  if (ec) return errc::vault_unreachable;
  reply out;
  // NOLINTNEXTLINE(clang-analyzer-cplusplus.Move): async_read moves the message into its parser and back
  out.status = res.result_int();
  json::error_code parse_error;
  out.body = res.body().empty() ? json::value() : json::parse(res.body(), parse_error);
  if (parse_error) out.body = json::value();
  // The answer may hold a data key (decrypt's plaintext): wipe the raw text.
  cleanse({reinterpret_cast<std::uint8_t*>(res.body().data()), res.body().size()});
  return out;
}

result<reply> call(const vault_transit_kms::state& s, http::verb verb, const std::string& path,
                   const json::object* payload) {
  asio::io_context ioc;
  asio::ip::tcp::resolver resolver(ioc);
  beast::error_code ec;
  auto endpoints = resolver.resolve(s.host, s.port, ec);
  if (ec) return errc::vault_unreachable;
  auto connect = [&](beast::tcp_stream& tcp) {
    tcp.expires_after(s.timeout);
    tcp.async_connect(endpoints, [&](beast::error_code e, const asio::ip::tcp::endpoint&) { ec = e; });
    ioc.run();
    return !ec;
  };
  if (!s.tls) {
    beast::tcp_stream stream(ioc);
    if (!connect(stream)) return errc::vault_unreachable;
    return exchange(ioc, stream, s, verb, path, payload);
  }
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): SSL_CTX is shared read-only by its streams
  beast::ssl_stream<beast::tcp_stream> stream(ioc, const_cast<asio::ssl::context&>(*s.tls_context));
  if (!connect(beast::get_lowest_layer(stream))) return errc::vault_unreachable;
    // The name for SNI, and the check that the certificate is for it (a DNS name or an IP address).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // OpenSSL's SSL_set_tlsext_host_name is a C macro
  const long sni_set = SSL_set_tlsext_host_name(stream.native_handle(), s.host.c_str());
#pragma GCC diagnostic pop
  if (sni_set != 1) return errc::vault_tls_failed;
  stream.set_verify_callback(asio::ssl::host_name_verification(s.host));
  ioc.restart();
  stream.async_handshake(asio::ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
  ioc.run();
  if (ec) return errc::vault_tls_failed;
  auto answer = exchange(ioc, stream, s, verb, path, payload);
  ioc.restart();
  stream.async_shutdown([](beast::error_code) {});  // the answer is in; a peer that just closes is fine
  ioc.run();
  return answer;
}

// What an error answer means; 400s about the data are authentication failures, as Vault says
// "message authentication failed" for a changed ciphertext or another context.
error_code error_of(const reply& r, std::string_view doing) {
  std::string message;
  if (const auto* o = r.body.if_object()) {
    if (const auto* errors = o->if_contains("errors"); errors != nullptr && errors->is_array()) {
      for (const auto& e : errors->as_array()) {
        if (e.is_string()) message += std::string(e.as_string()) + "; ";
      }
    }
  }
  log::warn("keel::crypto vault transit call failed",
            {{"doing", doing}, {"status", static_cast<std::int64_t>(r.status)}, {"message", message}});
  if (r.status == 403) return errc::vault_permission_denied;
  if (r.status == 404) return errc::unknown_key;
  if (r.status == 400 && (message.find("authentication") != std::string::npos ||
                          message.find("did not verify") != std::string::npos))
    return errc::authentication_failed;
  return errc::vault_request_failed;
}

const json::object* data_of(const reply& r) {
  const auto* o = r.body.if_object();
  if (o == nullptr) return nullptr;
  const auto* data = o->if_contains("data");
  return data != nullptr ? data->if_object() : nullptr;
}

}  // namespace

result<std::unique_ptr<vault_transit_kms>> vault_transit_kms::open(vault_transit_options options) {
  std::string_view address = options.address;
  auto s = std::make_unique<state>();
  if (address.starts_with("https://")) {
    address.remove_prefix(8);
  } else if (address.starts_with("http://")) {
    address.remove_prefix(7);
    s->tls = false;
  } else {
    return errc::invalid_vault_address;
  }
  while (address.ends_with('/')) address.remove_suffix(1);
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || address.find('/') != std::string_view::npos)
    return errc::invalid_vault_address;
  unsigned port = 0;
  const auto port_text = address.substr(colon + 1);
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
    return errc::invalid_vault_address;
  if (options.key_name.empty() || options.key_name.find('/') != std::string::npos) return errc::unknown_key;
  if (s->tls) {
    s->tls_context.emplace(asio::ssl::context::tls_client);
    auto& tls = *s->tls_context;
    tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1);
    tls.set_verify_mode(asio::ssl::verify_peer);
    beast::error_code trust_error;
    if (options.ca_file.empty()) {
      tls.set_default_verify_paths(trust_error);
    } else {
      tls.load_verify_file(options.ca_file, trust_error);
    }
    if (trust_error) return errc::invalid_vault_address;
  }
  s->host = std::string(address.substr(0, colon));
  s->port = std::string(port_text);
  s->token = std::move(options.token);
  s->mount = std::move(options.mount);
  s->key_name = std::move(options.key_name);
  s->timeout = options.timeout;
  auto key = call(*s, http::verb::get, "keys/" + s->key_name, nullptr);
  if (!key) return key.error();
  if (key->status != 200) return error_of(*key, "reading the key");
  return std::unique_ptr<vault_transit_kms>(new vault_transit_kms(std::move(s)));
}

vault_transit_kms::vault_transit_kms(std::unique_ptr<state> s) : state_(std::move(s)) {}
vault_transit_kms::~vault_transit_kms() = default;

result<encrypted_data_key> vault_transit_kms::wrap(bytes_view data_key, bytes_view aad) {
  json::object payload;
  payload["plaintext"] = to_base64(data_key);
  if (!aad.empty()) payload["associated_data"] = to_base64(aad);
  auto r = call(*state_, http::verb::post, "encrypt/" + state_->key_name, &payload);
  // The payload held the data key too: wipe it (json::string's buffer is ordinary memory).
  if (auto* p = payload.if_contains("plaintext"); p != nullptr && p->is_string()) {
    auto& text = p->as_string();
    cleanse({reinterpret_cast<std::uint8_t*>(text.data()), text.size()});
  }
  if (!r) return r.error();
  if (r->status != 200) return error_of(*r, "encrypting a data key");
  const auto* data = data_of(*r);
  const auto* ciphertext = data != nullptr ? data->if_contains("ciphertext") : nullptr;
  if (ciphertext == nullptr || !ciphertext->is_string()) return errc::vault_request_failed;
  const std::string_view text = ciphertext->as_string();
  return encrypted_data_key{std::string(provider()), state_->key_name, bytes(text.begin(), text.end())};
}

result<secret_bytes> vault_transit_kms::unwrap(const encrypted_data_key& edk, bytes_view aad) {
  if (edk.provider != provider() || edk.key_id.empty() || edk.key_id.find('/') != std::string::npos)
    return errc::unknown_key;
  json::object payload;
  payload["ciphertext"] = std::string(as_chars(edk.wrapped));
  if (!aad.empty()) payload["associated_data"] = to_base64(aad);
  auto r = call(*state_, http::verb::post, "decrypt/" + edk.key_id, &payload);
  if (!r) return r.error();
  if (r->status != 200) return error_of(*r, "decrypting a data key");
  const auto* data = data_of(*r);
  const auto* plaintext = data != nullptr ? data->if_contains("plaintext") : nullptr;
  if (plaintext == nullptr || !plaintext->is_string()) return errc::vault_request_failed;
  auto decoded = from_base64(std::string_view(plaintext->as_string()));
  auto& text = const_cast<json::string&>(plaintext->as_string());  // NOLINT: wiped, then dropped
  cleanse({reinterpret_cast<std::uint8_t*>(text.data()), text.size()});
  if (!decoded) return errc::vault_request_failed;
  auto key = secret_bytes::copy_of(*decoded);
  cleanse(*decoded);
  return key;
}

}  // namespace keel::crypto
