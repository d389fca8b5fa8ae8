#pragma once
// Peer libraries measured side by side with keel in the same benchmark run: the Node scripts in
// bench/peers (graphile-worker, rate-limiter-flexible), installed with their npm packages under
// the directory KEEL_PEERS_DIR names (`./keel bench` sets it up). Each script prints one JSON
// line with its figure.
#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/wait.h>

namespace keel::bench {

/// What a peer script measured, or why it could not run.
struct peer_figure {
  std::optional<double> value;
  std::string problem;
};

/// The URL node-postgres takes for a libpq conninfo: URLs pass through; key=value strings
/// (what keel::pg::local_cluster gives, host being the socket directory) are rewritten.
inline std::string node_postgres_url(std::string_view conninfo) {
  if (conninfo.starts_with("postgres")) return std::string(conninfo);
  std::map<std::string, std::string, std::less<>> fields;
  std::size_t at = 0;
  while (at < conninfo.size()) {
    while (at < conninfo.size() && conninfo[at] == ' ') ++at;
    const auto equals = conninfo.find('=', at);
    if (equals == std::string_view::npos) break;
    const auto key = std::string(conninfo.substr(at, equals - at));
    at = equals + 1;
    std::string value;
    if (at < conninfo.size() && conninfo[at] == '\'') {
      const auto close = conninfo.find('\'', at + 1);
      value = std::string(conninfo.substr(at + 1, close - at - 1));
      at = close == std::string_view::npos ? conninfo.size() : close + 1;
    } else {
      const auto space = conninfo.find(' ', at);
      value = std::string(conninfo.substr(at, space - at));
      at = space == std::string_view::npos ? conninfo.size() : space;
    }
    fields[key] = value;
  }
  const auto get = [&](const char* key, const char* fallback) {
    const auto found = fields.find(key);
    return found != fields.end() ? found->second : std::string(fallback);
  };
  return "postgresql://" + get("user", "postgres") + "@localhost/" + get("dbname", "postgres") +
         "?host=" + get("host", "127.0.0.1") + "&port=" + get("port", "5432");
}

/// What a peer script printed, or why it could not run (then `output` is empty).
struct peer_run {
  std::string output;
  std::string problem;
  /// The number after `"<field>":` in the output (its last occurrence).
  [[nodiscard]] peer_figure figure(std::string_view field) const {
    if (!problem.empty()) return {std::nullopt, problem};
    std::string key = "\"";
    key.append(field).append("\":");
    const auto found = output.rfind(key);
    if (found == std::string::npos)
      return {std::nullopt, "no " + std::string(field) + " in: " + output.substr(0, 400)};
    return {std::strtod(output.c_str() + found + key.size(), nullptr), {}};
  }
};

/// Runs `node <KEEL_PEERS_DIR>/<script> args…`. Arguments are single-quoted for the shell; they
/// are the benchmark's own values.
inline peer_run run_peer_script(std::string_view script, const std::vector<std::string>& args) {
  const char* dir = std::getenv("KEEL_PEERS_DIR");
  if (dir == nullptr || *dir == '\0')
    return {{}, "KEEL_PEERS_DIR is not set: run the benchmarks with ./keel bench, which installs the peers"};
  const auto quote = [](std::string_view s) {
    std::string out(1, '\'');
    for (const char c : s) {
      if (c == '\'')
        out.append("'\\''");
      else
        out.push_back(c);
    }
    out.push_back('\'');
    return out;
  };

  // Appends rather than operator+ on temporaries: GCC 12 warns falsely (-Wrestrict) on those.
  std::string command = "cd ";
  command.append(quote(dir)).append(" && node ").append(quote(script));
  for (const auto& a : args) command.append(" ").append(quote(a));
  command.append(" 2>&1");
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {{}, "could not start node"};
  std::string output;
  std::array<char, 4096> chunk{};
  while (const auto n = std::fread(chunk.data(), 1, chunk.size(), pipe)) output.append(chunk.data(), n);
  const int status = ::pclose(pipe);
  if (status != 0) return {{}, std::string(script) + " failed: " + output.substr(0, 400)};
  return {std::move(output), {}};
}

/// Runs a peer script and reads one number of its output.
inline peer_figure run_peer(std::string_view script, const std::vector<std::string>& args,
                            std::string_view field) {
  return run_peer_script(script, args).figure(field);
}

}  // namespace keel::bench
