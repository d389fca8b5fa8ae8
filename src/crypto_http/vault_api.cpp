// Vault's HTTP API over keel::crypto: one middleware that answers every /v1/ request (so that
// Vault's LIST method, which no route can name, is served too), checks the token's grants for
// the path and method, and dispatches to the transit, KV and sys handlers.
#include <keel/core/byte_io.hpp>
#include <keel/core/time_text.hpp>
#include <keel/crypto/kdf.hpp>
#include <keel/crypto_http/vault_api.hpp>
#include <keel/net/json.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace keel::crypto_http {
namespace {

namespace json = boost::json;
using net::request;
using net::response;
using net::status;

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Vault's policy paths: `+` is one segment, a trailing `*` a prefix of the rest.
bool path_matches(std::string_view pattern, std::string_view path) {
  while (true) {
    if (pattern == "*") return true;
    const auto p_slash = pattern.find('/');
    const auto s_slash = path.find('/');
    const std::string_view p_seg = pattern.substr(0, p_slash);
    const std::string_view s_seg = path.substr(0, s_slash);
    if (p_slash == std::string_view::npos) {
      if (p_seg.ends_with('*')) return path.starts_with(p_seg.substr(0, p_seg.size() - 1));
      return s_slash == std::string_view::npos && (p_seg == "+" || p_seg == s_seg);
    }
    if (s_slash == std::string_view::npos) return false;
    if (p_seg != "+" && p_seg != s_seg) return false;
    pattern.remove_prefix(p_slash + 1);
    path.remove_prefix(s_slash + 1);
  }
}

timestamp now() {
  return timestamp{std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::system_clock::now().time_since_epoch())};
}

// Vault's answer: the data under "data", beside the fields its clients expect.
response vault_ok(json::value data) {
  json::object body;
  body["request_id"] = to_hex(crypto::random_bytes(16));
  body["lease_id"] = "";
  body["renewable"] = false;
  body["lease_duration"] = 0;
  body["data"] = std::move(data);
  body["wrap_info"] = nullptr;
  body["warnings"] = nullptr;
  body["auth"] = nullptr;
  return net::json_response(body);
}

response vault_no_content() {
  return response{.status = status::no_content, .headers = {}, .body = {}};
}

response vault_error(status s, std::string_view message) {
  json::object body;
  json::array errors;
  if (!message.empty()) errors.emplace_back(message);
  body["errors"] = std::move(errors);
  return net::json_response(body, s);
}

status status_of(const error_code& e) {
  if (e.category() == crypto::crypto_category()) {
    switch (static_cast<crypto::errc>(e.value())) {
      case crypto::errc::secret_not_found:
      case crypto::errc::secret_deleted:
      case crypto::errc::secret_version_destroyed:
        return status::not_found;
      case crypto::errc::openssl_failure:
        return status::internal_server_error;
      default:
        return status::bad_request;
    }
  }
  return status::internal_server_error;
}

response vault_error(const error_code& e) {
  return vault_error(status_of(e), e.message());
}

// A string field of the body, or nullopt.
std::optional<std::string_view> string_field(const json::object& body, std::string_view name) {
  if (const auto* v = body.if_contains(name); v != nullptr && v->is_string())
    return std::string_view(v->as_string());
  return std::nullopt;
}

std::optional<std::int64_t> integer_field(const json::object& body, std::string_view name) {
  const auto* v = body.if_contains(name);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->as_uint64());
  if (v->is_string()) {  // Vault's clients send numbers as strings too
    std::int64_t n = 0;
    const std::string_view s = v->as_string();
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec == std::errc() && end == s.data() + s.size()) return n;
  }
  return std::nullopt;
}

std::optional<bool> bool_field(const json::object& body, std::string_view name) {
  const auto* v = body.if_contains(name);
  if (v == nullptr) return std::nullopt;
  if (v->is_bool()) return v->as_bool();
  if (v->is_string()) return v->as_string() == "true";
  return std::nullopt;
}

// Base64 fields (plaintext, context): decoded, or an error naming the field.
result<bytes> base64_field(const json::object& body, std::string_view name) {
  const auto text = string_field(body, name);
  if (!text || text->empty()) return bytes{};
  return from_base64(*text);
}

// What a transit call authenticates: the context, and Vault's associated_data (AEAD keys)
// beside it, length-prefixed so that no two pairs give the same bytes.
result<bytes> aad_of(const json::object& item) {
  auto context = base64_field(item, "context");
  auto associated = base64_field(item, "associated_data");
  if (!context || !associated) return crypto::errc::invalid_context;
  if (associated->empty()) return std::move(*context);
  bytes out;
  byte_writer w(out);
  w.append_varint_prefixed(*context);
  w.append(*associated);
  return out;
}

json::object key_json(const crypto::transit_key_info& info) {
  json::object keys;
  for (const auto& [version, created] : info.versions) keys[std::to_string(version)] = created;
  json::object out;
  out["name"] = info.name;
  out["type"] = info.type;
  out["derived"] = info.derived;
  out["deletion_allowed"] = info.deletion_allowed;
  out["exportable"] = false;
  out["latest_version"] = info.latest_version;
  out["min_available_version"] = 0;
  out["min_decryption_version"] = info.min_decryption_version;
  out["min_encryption_version"] = info.min_encryption_version;
  out["supports_encryption"] = true;
  out["supports_decryption"] = true;
  out["supports_derivation"] = true;
  out["supports_signing"] = false;
  out["keys"] = std::move(keys);
  return out;
}

class vault_api {
 public:
  explicit vault_api(options opts) : options_(std::move(opts)) {
    if (options_.pool == nullptr) throw std::invalid_argument("keel::crypto_http::mount: give a pg::pool");
    for (std::size_t i = 0; i < options_.tokens.size(); ++i) {
      if (options_.tokens[i].id.size() < 16)
        throw std::invalid_argument("keel::crypto_http::mount: token ids must be 16 characters or more");
      by_hash_.emplace(token_hash(options_.tokens[i].id), i);
    }
  }

  response handle(request& req) {
    const std::string_view full = req.path;
    if (full == "/v1/sys/health") return health();
    std::string method_name(net::to_string(req.method));
    if (req.method == net::method::other)
      method_name = std::string(req.attribute("keel.method").value_or("OTHER"));
    const bool list =
        method_name == "LIST" || (req.method == net::method::get && req.query_param("list") == "true");
    std::string_view path = full.substr(4);  // after "/v1/"
    while (path.ends_with('/')) path.remove_suffix(1);

    const token* who = authenticate(req);
    if (who == nullptr) return vault_error(status::forbidden, "permission denied");
    std::string_view capability;
    if (list) {
      capability = "list";
    } else if (method_name == "GET") {
      capability = "read";
    } else if (method_name == "POST" || method_name == "PUT") {
      capability = "update";
    } else if (method_name == "DELETE") {
      capability = "delete";
    } else {
      return vault_error(status::method_not_allowed, "unsupported method");
    }
    if (!allowed(*who, path, capability)) return vault_error(status::forbidden, "permission denied");

    json::object body;
    if ((method_name == "POST" || method_name == "PUT") && !req.body.empty()) {
      auto parsed = net::parse_json(req);
      if (!parsed || !parsed->is_object())
        return vault_error(status::bad_request, "the body is not a JSON object");
      body = std::move(parsed->as_object());
    }
    auto c = options_.pool->acquire();
    if (!c) return vault_error(status::service_unavailable, c.error().message());

    const auto segments = split_path(path);
    if (options_.transit != nullptr && !segments.empty() && segments[0] == options_.transit_mount) {
      req.route =
          "/v1/" + options_.transit_mount + "/" + (segments.size() > 1 ? std::string(segments[1]) : "");
      return transit(**c, *who, segments, capability, body);
    }
    if (options_.secrets != nullptr && !segments.empty() && segments[0] == options_.secrets_mount) {
      req.route =
          "/v1/" + options_.secrets_mount + "/" + (segments.size() > 1 ? std::string(segments[1]) : "");
      return kv(**c, *who, path.substr(std::min(path.size(), options_.secrets_mount.size() + 1)), req,
                capability, body);
    }
    return vault_error(status::not_found, "no handler for route \"" + std::string(path) + "\"");
  }

 private:
  // Tokens are looked up by a keyed hash (the key random per process), so the lookup's timing
  // says nothing about how close a guess came.
  [[nodiscard]] std::string token_hash(std::string_view id) const {
    auto mac = crypto::hmac(crypto::hash_algorithm::sha256, lookup_key_.view(), as_bytes(id));
    return mac ? to_hex(*mac) : std::string();
  }

  [[nodiscard]] const token* authenticate(const request& req) const {
    std::optional<std::string_view> presented = req.headers.get("X-Vault-Token");
    if (!presented) {
      if (auto auth = req.headers.get("Authorization"); auth && auth->starts_with("Bearer ")) {
        presented = auth->substr(7);
      }
    }
    if (!presented || presented->empty()) return nullptr;
    const auto it = by_hash_.find(token_hash(*presented));
    return it == by_hash_.end() ? nullptr : &options_.tokens[it->second];
  }

  static bool allowed(const token& who, std::string_view path, std::string_view capability) {
    return std::any_of(who.grants.begin(), who.grants.end(), [&](const grant& g) {
      if (!path_matches(g.path, path)) return false;
      return std::any_of(g.capabilities.begin(), g.capabilities.end(), [&](const std::string& cap) {
        return cap == capability || (capability == "update" && cap == "create") || cap == "sudo";
      });
    });
  }

  static response health() {
    json::object out;
    out["initialized"] = true;
    out["sealed"] = false;
    out["standby"] = false;
    out["version"] = "keel";
    out["server_time_utc"] =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    return net::json_response(out);
  }

  // ---- transit ------------------------------------------------------------------------------

  response transit(pg::connection& c, const token& who, const std::vector<std::string_view>& s,
                   std::string_view capability, const json::object& body) {
    crypto::transit_engine& engine = *options_.transit;
    const std::string_view area = s.size() > 1 ? s[1] : std::string_view{};
    if (area == "keys") {
      if (s.size() == 2 && capability == "list") {
        auto names = engine.list_keys(c, who.actor);
        if (!names) return vault_error(names.error());
        json::array keys;
        for (const auto& n : *names) keys.emplace_back(n);
        json::object data;
        data["keys"] = std::move(keys);
        return vault_ok(std::move(data));
      }
      if (s.size() == 3) {
        const std::string name(s[2]);
        if (capability == "read") {
          auto info = engine.read_key(c, name);
          return info ? vault_ok(key_json(*info)) : vault_error(info.error());
        }
        if (capability == "update") {
          crypto::transit_key_options o;
          o.type = std::string(string_field(body, "type").value_or("aes256-gcm96"));
          o.derived = bool_field(body, "derived").value_or(false);
          auto info = engine.create_key(c, name, who.actor, o);
          if (!info && info.error() == crypto::errc::key_exists)
            info = engine.read_key(c, name);  // idempotent, as in Vault
          return info ? vault_ok(key_json(*info)) : vault_error(info.error());
        }
        if (capability == "delete") {
          auto deleted = engine.delete_key(c, name, who.actor);
          return deleted ? vault_no_content() : vault_error(deleted.error());
        }
      }
      if (s.size() == 4 && capability == "update") {
        const std::string name(s[2]);
        if (s[3] == "rotate") {
          auto info = engine.rotate(c, name, who.actor);
          return info ? vault_ok(key_json(*info)) : vault_error(info.error());
        }
        if (s[3] == "config") {
          crypto::transit_key_config change;
          if (auto v = integer_field(body, "min_decryption_version"))
            change.min_decryption_version = static_cast<std::uint32_t>(std::max<std::int64_t>(*v, 0));
          if (auto v = integer_field(body, "min_encryption_version"))
            change.min_encryption_version = static_cast<std::uint32_t>(std::max<std::int64_t>(*v, 0));
          change.deletion_allowed = bool_field(body, "deletion_allowed");
          auto info = engine.configure(c, name, change, who.actor);
          return info ? vault_ok(key_json(*info)) : vault_error(info.error());
        }
      }
      return vault_error(status::not_found, "no such transit keys path");
    }
    if (capability != "update" || s.size() < 3) return vault_error(status::not_found, "no such transit path");
    if (area == "encrypt" && s.size() == 3) {
      return batchable(
          body, [&](const json::object& item) { return encrypt_one(c, std::string(s[2]), item, who.actor); });
    }
    if (area == "decrypt" && s.size() == 3) {
      return batchable(
          body, [&](const json::object& item) { return decrypt_one(c, std::string(s[2]), item, who.actor); });
    }
    if (area == "rewrap" && s.size() == 3) {
      return batchable(
          body, [&](const json::object& item) { return rewrap_one(c, std::string(s[2]), item, who.actor); });
    }
    if (area == "datakey" && s.size() == 4 && (s[2] == "plaintext" || s[2] == "wrapped")) {
      auto context = base64_field(body, "context");
      if (!context) return vault_error(status::bad_request, "context is not base64");
      const auto bits = integer_field(body, "bits").value_or(256);
      auto key =
          engine.data_key(c, std::string(s[3]), *context, s[2] == "plaintext", static_cast<unsigned>(bits));
      if (!key) return vault_error(key.error());
      json::object data;
      data["ciphertext"] = key->ciphertext;
      data["key_version"] = key->key_version;
      if (key->plaintext) data["plaintext"] = to_base64(key->plaintext->view());
      return vault_ok(std::move(data));
    }
    return vault_error(status::not_found, "no such transit path");
  }

  // One item, or Vault's batch_input: each item answered in batch_results with its own error.
  template <class One>
  static response batchable(const json::object& body, One&& one) {
    if (const auto* batch = body.if_contains("batch_input"); batch != nullptr && batch->is_array()) {
      json::array results;
      for (const auto& item : batch->as_array()) {
        if (!item.is_object()) {
          json::object failed;
          failed["error"] = "a batch item is not an object";
          results.emplace_back(std::move(failed));
          continue;
        }
        auto answer = one(item.as_object());
        if (answer) {
          results.emplace_back(std::move(*answer));
        } else {
          json::object failed;
          failed["error"] = answer.error().message();
          results.emplace_back(std::move(failed));
        }
      }
      json::object data;
      data["batch_results"] = std::move(results);
      return vault_ok(std::move(data));
    }
    auto answer = one(body);
    return answer ? vault_ok(std::move(*answer)) : vault_error(answer.error());
  }

  // A derived key needs a context of its own, not just associated_data.
  result<void> check_context(pg::connection& c, const std::string& name, const json::object& item) {
    if (auto context = base64_field(item, "context"); !context || context->empty()) {
      auto info = options_.transit->read_key(c, name);
      if (!info) return info.error();
      if (info->derived) return crypto::errc::context_required;
    }
    return {};
  }

  result<json::object> encrypt_one(pg::connection& c, const std::string& name, const json::object& item,
                                   std::string_view actor) {
    auto plaintext = base64_field(item, "plaintext");
    auto context = aad_of(item);
    if (!plaintext) return crypto::errc::invalid_input_size;
    if (!context) return context.error();
    if (auto checked = check_context(c, name, item); !checked) return checked.error();
    const auto version = integer_field(item, "key_version").value_or(0);
    auto sealed =
        options_.transit->encrypt(c, name, *plaintext, *context, static_cast<std::uint32_t>(version), actor);
    if (!sealed) return sealed.error();
    json::object out;
    out["ciphertext"] = *sealed;
    out["key_version"] = crypto::transit_ciphertext_version(*sealed);
    return out;
  }

  result<json::object> decrypt_one(pg::connection& c, const std::string& name, const json::object& item,
                                   std::string_view actor) {
    auto context = aad_of(item);
    if (!context) return context.error();
    if (auto checked = check_context(c, name, item); !checked) return checked.error();
    auto opened =
        options_.transit->decrypt(c, name, string_field(item, "ciphertext").value_or(""), *context, actor);
    if (!opened) return opened.error();
    json::object out;
    out["plaintext"] = to_base64(opened->view());
    return out;
  }

  result<json::object> rewrap_one(pg::connection& c, const std::string& name, const json::object& item,
                                  std::string_view actor) {
    auto context = aad_of(item);
    if (!context) return context.error();
    if (auto checked = check_context(c, name, item); !checked) return checked.error();
    const auto version = integer_field(item, "key_version").value_or(0);
    auto sealed = options_.transit->rewrap(c, name, string_field(item, "ciphertext").value_or(""), *context,
                                           static_cast<std::uint32_t>(version), actor);
    if (!sealed) return sealed.error();
    json::object out;
    out["ciphertext"] = *sealed;
    out["key_version"] = crypto::transit_ciphertext_version(*sealed);
    return out;
  }

  // ---- KV version 2 ---------------------------------------------------------------------------

  response kv(pg::connection& c, const token& who, std::string_view rest, const request& req,
              std::string_view capability, const json::object& body) {
    crypto::secret_store& store = *options_.secrets;
    const auto slash = rest.find('/');
    const std::string_view area = rest.substr(0, slash);
    const std::string name(slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1));
    const crypto::secret_ref ref{who.tenant, name};
    if (area == "data" && !name.empty()) {
      if (capability == "update") {
        const auto* data = body.if_contains("data");
        if (data == nullptr || !data->is_object())
          return vault_error(status::bad_request, "no data provided: send {\"data\": {...}}");
        const std::string value = json::serialize(*data);
        auto version = store.put(c, ref, as_bytes(value), who.actor);
        if (!version) return vault_error(version.error());
        return vault_ok(version_metadata(*version, now(), std::nullopt, false));
      }
      if (capability == "read") {
        std::int32_t version = 0;
        if (auto v = req.query_param("version")) std::from_chars(v->data(), v->data() + v->size(), version);
        auto secret = store.get(c, ref, who.actor, version);
        if (!secret) return vault_error(secret.error());
        const std::string_view text(reinterpret_cast<const char*>(secret->value.data()),
                                    secret->value.size());
        json::error_code parse_error;
        json::value data = json::parse(text, parse_error);
        if (parse_error) return vault_error(status::internal_server_error, "the stored value is not JSON");
        json::object out;
        out["data"] = std::move(data);
        out["metadata"] = version_metadata(secret->version, std::nullopt, std::nullopt, false);
        return vault_ok(std::move(out));
      }
      if (capability == "delete") {
        auto removed = store.remove(c, ref, who.actor);
        return removed ? vault_no_content() : vault_error(removed.error());
      }
    }
    if ((area == "undelete" || area == "destroy") && !name.empty() && capability == "update") {
      if (area == "undelete") {
        auto restored = store.restore(c, ref, who.actor);
        return restored ? vault_no_content() : vault_error(restored.error());
      }
      const auto* versions = body.if_contains("versions");
      if (versions == nullptr || !versions->is_array())
        return vault_error(status::bad_request, "no versions provided: send {\"versions\": [1, 2]}");
      for (const auto& v : versions->as_array()) {
        if (!v.is_int64() && !v.is_uint64())
          return vault_error(status::bad_request, "a version is not a number");
        const auto number =
            static_cast<std::int32_t>(v.is_int64() ? v.as_int64() : static_cast<std::int64_t>(v.as_uint64()));
        if (auto destroyed = store.destroy(c, ref, number, who.actor); !destroyed)
          return vault_error(destroyed.error());
      }
      return vault_no_content();
    }
    if (area == "metadata") {
      if (capability == "list") {
        const std::string prefix = name.empty() || name.ends_with('/') ? name : name + "/";
        auto listed = store.list(c, who.tenant, who.actor, prefix);
        if (!listed) return vault_error(listed.error());
        std::vector<std::string> children;
        for (const auto& secret : *listed) {
          const std::string rest_of = secret.name.substr(prefix.size());
          const auto folder = rest_of.find('/');
          std::string child = folder == std::string::npos ? rest_of : rest_of.substr(0, folder + 1);
          if (children.empty() || children.back() != child) children.push_back(std::move(child));
        }
        if (children.empty()) return vault_error(status::not_found, "");
        json::array keys;
        for (auto& child : children) keys.emplace_back(child);
        json::object data;
        data["keys"] = std::move(keys);
        return vault_ok(std::move(data));
      }
      if (capability == "read" && !name.empty()) {
        auto versions = store.history(c, ref, who.actor);
        if (!versions) return vault_error(versions.error());
        json::object by_number;
        for (const auto& v : *versions) {
          by_number[std::to_string(v.version)] =
              version_metadata(v.version, v.created_at, v.destroyed_at, v.destroyed_at.has_value());
        }
        json::object data;
        data["current_version"] = versions->back().version;
        data["oldest_version"] = versions->front().version;
        data["created_time"] = format_utc(versions->front().created_at);
        data["updated_time"] = format_utc(versions->back().created_at);
        data["versions"] = std::move(by_number);
        return vault_ok(std::move(data));
      }
    }
    return vault_error(status::not_found, "no such secrets path");
  }

  static json::object version_metadata(std::int32_t version, std::optional<timestamp> created,
                                       std::optional<timestamp> destroyed_at, bool destroyed) {
    json::object out;
    out["version"] = version;
    out["created_time"] = created ? format_utc(*created) : "";
    out["deletion_time"] = destroyed_at ? format_utc(*destroyed_at) : "";
    out["destroyed"] = destroyed;
    out["custom_metadata"] = nullptr;
    return out;
  }

  options options_;
  crypto::secret_bytes lookup_key_ = crypto::secret_bytes::random(32);
  std::map<std::string, std::size_t> by_hash_;
};

}  // namespace

void mount(net::server& server, options opts) {
  auto api = std::make_shared<vault_api>(std::move(opts));
  server.use([api](request& req, const net::next_handler& next) -> response {
    if (!req.path.starts_with("/v1/")) return next(req);
    return api->handle(req);
  });
}

}  // namespace keel::crypto_http
