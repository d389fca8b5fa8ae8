#include <keel/net/trust.hpp>

namespace keel::net {

bool is_loopback_address(std::string_view address) noexcept {
  if (address.starts_with("::ffff:")) address.remove_prefix(7);  // an IPv4 peer on a v6 socket
  return address.starts_with("127.") || address == "::1";
}

bool host_names_loopback(std::string_view host) noexcept {
  if (host.starts_with("[::1]")) return host.size() == 5 || host[5] == ':';
  host = host.substr(0, host.find(':'));
  return host == "localhost" || host.starts_with("127.");
}

bool same_origin_or_none(const request& req) noexcept {
  const auto origin = req.headers.get("Origin");
  if (!origin) return true;
  const auto host = req.headers.get("Host").value_or("");
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (origin->starts_with(scheme) && origin->substr(scheme.size()) == host) return true;
  }
  return false;
}

bool bearer_token_matches(const request& req, std::string_view token) noexcept {
  if (token.empty()) return false;
  constexpr std::string_view bearer = "Bearer ";
  auto given = req.headers.get("Authorization").value_or("");
  if (!given.starts_with(bearer)) return false;
  given.remove_prefix(bearer.size());
  // Constant time in the token's length, so timing does not reveal how much of a guess matched.
  if (given.size() != token.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < token.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ token[i]);
  return diff == 0;
}

bool local_or_token(const request& req, std::string_view token) noexcept {
  if (!same_origin_or_none(req)) return false;
  if (bearer_token_matches(req, token)) return true;
  return is_loopback_address(req.remote_address) && host_names_loopback(req.headers.get("Host").value_or(""));
}

}  // namespace keel::net
