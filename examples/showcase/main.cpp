// The keel showcase: one service that shows what the library offers, working.
//   ./keel demo [--port 8080] [--address 127.0.0.1] [--data-dir .keel/pg]
// Postgres: the server named by KEEL_DATABASE_URL, or an embedded private cluster kept in
// --data-dir (created on first run, kept across runs). Stops cleanly on Ctrl-C (SIGINT/SIGTERM).
#include <keel/core.hpp>
#include <keel/net.hpp>
#include <keel/pg/local_cluster.hpp>
#include <keel/pg/migrations.hpp>
#include <keel/pg/pool.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

struct component {
  std::string_view name;
  std::string_view what;
  std::string_view status;
};

constexpr component components[] = {
    {"core", "errors, bytes, hashing, signatures, varints, bit streams, clocks, logging", "ready"},
    {"pg", "libpq done right: pool, transactions, COPY, pipeline, LISTEN/NOTIFY, migrations", "ready"},
    {"net", "HTTP + WebSocket server, router, JSON, Prometheus /metrics", "ready"},
    {"ledger", "double-entry ledger with Merkle proofs", "ready"},
    {"events", "event store on Postgres: expected versions, a global order that never skips an event",
     "ready"},
    {"tsdb", "compressed time series in Postgres: decimal/Gorilla/Chimp128, rollups, LTTB", "ready"},
    {"ratelimit", "sliding-window rate limiting: in-process, Redis, Postgres", "ready"},
    {"jobs", "Postgres job queue with a web dashboard", "ready"},
    {"crdt",
     "a text CRDT (Yjs's ordering, undo, deltas since versions), counter, registers, OR-set, maps; Yjs's "
     "update codec",
     "ready"},
    {"sync",
     "Yjs rooms over WebSocket (y-websocket's protocol) kept in Postgres, across processes; live table "
     "changes",
     "in progress"},
    {"crypto",
     "envelope encryption, a versioned keyring, PKCS#11, the secrets store with its audit chain, Vault's "
     "transit and KV API",
     "ready"},
    {"dsl",
     "PRQL compiled to parameterized SQL under access policies grafted at every table's source; RLS emitted "
     "and "
     "introspected; the access page",
     "in progress"},
};

constexpr keel::pg::migration migrations[] = {
    {1, "visits", R"sql(
      CREATE TABLE showcase_visits (
        id   bigserial   PRIMARY KEY,
        at   timestamptz NOT NULL DEFAULT now(),
        note text        NOT NULL
      ))sql"},
};

struct options {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
  std::string data_dir = ".keel/pg";
};

std::optional<options> parse_arguments(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (arg == "--port" && value != nullptr) {
      const std::string_view text = value;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), o.port);
      if (ec != std::errc() || end != text.data() + text.size()) {
        std::fprintf(stderr, "--port needs a number from 0 to 65535, not '%s'\n", value);
        return std::nullopt;
      }
      ++i;
    } else if (arg == "--address" && value != nullptr) {
      o.address = value;
      ++i;
    } else if (arg == "--data-dir" && value != nullptr) {
      o.data_dir = value;
      ++i;
    } else {
      std::fprintf(stderr, "usage: showcase [--port N] [--address IP] [--data-dir DIR]\n");
      return std::nullopt;
    }
  }
  return o;
}

// The pages, with what each shows (the nav bar links them too).
constexpr std::pair<std::string_view, std::string_view> pages[] = {
    {"/ledger",
     "accounts and balances, a transfer form, a signed tree head and a proof verified in your browser"},
    {"/events", "an event-sourced order lifecycle: streams, readers and their lag, consumer groups"},
    {"/tsdb", "a week of temperatures, raw against LTTB-downsampled, with a time axis"},
    {"/jobs", "the job queue: throughput and depth over time, failures with a retry button"},
    {"/ratelimit", "the limits in force, and a burst of requests meeting one (429 with RateLimit headers)"},
    {"/dsl", "a shop's access policy as a graph, and PRQL queries tried as its roles (keel::dsl)"},
    {"/crdt", "two replicas of a text edited apart, synced by deltas, undone; Yjs updates merged"},
    {"/sync",
     "a collaborative text: npm's Yjs in the browser on keel::sync's rooms, with everyone's cursors"},
    {"/metrics", "every component's Prometheus metrics"},
};

std::string index_page(const std::vector<showcase::endpoint>& endpoints) {
  std::string page_list;
  for (const auto& [href, what] : pages) {
    page_list += "<li><a href=\"" + std::string(href) + "\">" + std::string(href) + "</a> — " +
                 keel::net::escape_html(what) + "</li>\n";
  }
  std::string links;
  for (const auto& e : endpoints) {
    const std::string path = keel::net::escape_html(e.path);
    // A path with a {placeholder} is a pattern, not a page: shown, not linked.
    const bool linkable = e.method == "GET" && e.path.find('{') == std::string::npos;
    links += "<li><code>" + keel::net::escape_html(e.method) + "</code> " +
             (linkable ? "<a href=\"" + path + "\">" + path + "</a>" : "<code>" + path + "</code>") + " — " +
             keel::net::escape_html(e.what) + "</li>\n";
  }
  std::string rows;
  for (const auto& c : components) {
    rows += "<tr><td><code>keel::" + keel::net::escape_html(c.name) + "</code></td><td class=\"" +
            std::string(c.status == "ready" ? "ok" : "note") + "\">" + std::string(c.status) + "</td><td>" +
            keel::net::escape_html(c.what) + "</td></tr>\n";
  }
  return showcase::page(
      "keel " + std::string(keel::version),
      "<h1>keel " + std::string(keel::version) +
          "</h1>\n<p>Embeddable C++20 backend primitives, each working in this one service. "
          "This page is served by <code>keel::net</code>; the data behind the pages lives in "
          "Postgres through <code>keel::pg</code>, seeded at first start.</p>\n"
          "<h2>Pages</h2>\n<ul id=\"pages\">\n" +
          page_list +
          "</ul>\n<h2>Components</h2>\n<table><thead><tr><th>component</th><th>status</th>"
          "<th>what it is</th></tr></thead><tbody>\n" +
          rows + "</tbody></table>\n<h2>Endpoints</h2>\n<ul id=\"endpoints\">\n" + links + "</ul>",
      "");
}

}  // namespace

namespace showcase {

// The pages people open from the index, in the bar at the top of each.
constexpr std::pair<std::string_view, std::string_view> page_links[] = {
    {"/", "keel"},     {"/ledger", "ledger"},         {"/events", "events"}, {"/tsdb", "time series"},
    {"/jobs", "jobs"}, {"/ratelimit", "rate limits"}, {"/dsl", "access"},    {"/crdt", "crdt"},
    {"/sync", "sync"}, {"/metrics", "metrics"}};

const char* const page_style = R"css(
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto 2rem; max-width: 64rem; color: #222; padding: 0 1rem; }
nav a { color: #1759b8; text-decoration: none; } nav a:first-child { font-weight: 700; color: #222; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .35rem .6rem; border-bottom: 1px solid #e3e3e3; text-align: left; }
th { color: #555; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176f2c; font-weight: 600; } .bad { color: #a12; font-weight: 600; } .note { color: #777; font-size: 13px; }
code, pre { font: 13px ui-monospace, monospace; } pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; }
form { display: flex; gap: .6rem; align-items: end; flex-wrap: wrap; margin: .6rem 0; } label { display: flex; flex-direction: column; font-size: 13px; color: #555; }
input, select, button { font: inherit; padding: .25rem .4rem; }
)css";

// Inline styles: the bar also goes on the components' own pages (/jobs, /events, /tsdb, /dsl).
std::string nav_bar() {
  std::string out =
      "<nav style=\"display:flex;gap:1.1rem;padding:.6rem 0;border-bottom:1px solid #ddd;margin-bottom:1rem;"
      "font:14px system-ui,sans-serif\">";
  for (const auto& [href, label] : page_links) {
    out += "<a href=\"" + std::string(href) + "\">" + std::string(label) + "</a>";
  }
  return out + "</nav>";
}

std::string page(std::string_view title, std::string_view body, std::string_view script) {
  return "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + std::string(title) +
         " — keel showcase</title>\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
         "<style>" +
         std::string(page_style) + "</style></head><body>\n" + nav_bar() + "\n" + std::string(body) +
         "\n<script>\n\"use strict\";\n" + std::string(script) + "\n</script>\n</body></html>\n";
}

}  // namespace showcase

int main(int argc, char** argv) {
  const auto opts = parse_arguments(argc, argv);
  if (!opts) return 2;

  // Postgres: an existing server, or the embedded cluster under .keel/pg.
  std::unique_ptr<keel::pg::local_cluster> cluster;
  std::string conninfo;
  if (const char* url = std::getenv("KEEL_DATABASE_URL"); url != nullptr && *url != '\0') {
    conninfo = url;
  } else {
    auto started = keel::pg::local_cluster::start({.data_dir = opts->data_dir, .durable = true});
    if (!started) {
      std::fprintf(stderr, "could not start the embedded Postgres in %s: %s\n", opts->data_dir.c_str(),
                   started.error().message().c_str());
      return 1;
    }
    cluster = std::make_unique<keel::pg::local_cluster>(std::move(*started));
    conninfo = cluster->conninfo();
  }

  keel::pg::pool pool({.conninfo = conninfo, .max_size = 8});
  {
    auto c = pool.acquire();
    if (!c) {
      std::fprintf(stderr, "cannot reach Postgres: %s\n", c.error().message().c_str());
      return 1;
    }
    if (auto applied = keel::pg::migrate(**c, "showcase", migrations); !applied) {
      std::fprintf(stderr, "migrations failed: %s (%s)\n", applied.error().message().c_str(),
                   (*c)->last_error().to_string().c_str());
      return 1;
    }
  }

  keel::net::server server({.address = opts->address, .port = opts->port, .handle_signals = true});
  auto& registry = server.metrics();
  auto& pool_open =
      registry.add_gauge("keel_pg_pool_connections", "Pooled Postgres connections by state", {"state"});
  auto& pool_events = registry.add_gauge("keel_pg_pool_events", "Pool events since start", {"event"});
  auto& visits_total = registry.add_counter("showcase_visits_total", "Visits recorded").get();

  // Pool figures are sampled when /metrics is scraped.
  server.use([&](keel::net::request& req, const keel::net::next_handler& next) {
    if (req.path == "/metrics") {
      const auto s = pool.stats();
      pool_open.labels({"in_use"}).set(static_cast<double>(s.in_use));
      pool_open.labels({"idle"}).set(static_cast<double>(s.idle));
      pool_events.labels({"acquired"}).set(static_cast<double>(s.acquired));
      pool_events.labels({"waited"}).set(static_cast<double>(s.waited));
      pool_events.labels({"timeouts"}).set(static_cast<double>(s.timeouts));
      pool_events.labels({"connect_errors"}).set(static_cast<double>(s.connect_errors));
      pool_events.labels({"replaced"}).set(static_cast<double>(s.replaced));
    }
    return next(req);
  });

  // The components' own pages get the showcase's bar too, so every page leads to the others.
  server.use([](keel::net::request& req, const keel::net::next_handler& next) {
    auto res = next(req);
    const bool component_page =
        req.path == "/jobs" || req.path == "/events" || req.path == "/tsdb" || req.path == "/dsl";
    if (component_page && res.headers.get("Content-Type").value_or("").starts_with("text/html")) {
      if (const auto body = res.body.find("<body>"); body != std::string::npos) {
        res.body.insert(body + 6, showcase::nav_bar());
      }
    }
    return res;
  });

  showcase::context context{.server = server,
                            .pool = pool,
                            .conninfo = conninfo,
                            .endpoints =
                                {
                                    {"GET", "/healthz", "liveness"},
                                    {"GET", "/readyz", "readiness, including Postgres"},
                                    {"GET", "/metrics", "Prometheus metrics"},
                                    {"GET", "/api/components", "the component table as JSON"},
                                    {"GET", "/api/pg", "the Postgres server and pool"},
                                    {"POST", "/api/visits", "records {\"note\": \"...\"} in Postgres"},
                                },
                            .state_dir = std::filesystem::path(opts->data_dir).parent_path().string()};
  // Each component's routes (examples/showcase/<component>.cpp) are mounted here.
  using mount_function = keel::result<void> (*)(showcase::context&);
  const std::vector<std::pair<const char*, mount_function>> parts = {
      // {"<component>", showcase::mount_<component>},  one line per component, declared in showcase.hpp
      {"ledger", showcase::mount_ledger}, {"ratelimit", showcase::mount_ratelimit},
      {"tsdb", showcase::mount_tsdb},     {"jobs", showcase::mount_jobs},
      {"events", showcase::mount_events}, {"crypto", showcase::mount_crypto},
      {"dsl", showcase::mount_dsl},       {"crdt", showcase::mount_crdt},
      {"sync", showcase::mount_sync},
  };
  for (const auto& [name, mount] : parts) {
    if (auto mounted = mount(context); !mounted) {
      std::fprintf(stderr, "could not start the %s part: %s\n", name, mounted.error().message().c_str());
      return 1;
    }
  }

  server.get("/", [page = index_page(context.endpoints)](const keel::net::request&) {
    return keel::net::text_response(page, keel::net::status::ok, "text/html; charset=utf-8");
  });

  server.get("/api/components", [](const keel::net::request&) {
    boost::json::array list;
    for (const auto& c : components) {
      list.push_back({{"name", c.name}, {"status", c.status}, {"what", c.what}});
    }
    return keel::net::json_response(boost::json::object{{"version", keel::version}, {"components", list}});
  });

  server.get("/api/pg", [&](const keel::net::request&) {
    auto c = pool.acquire();
    if (!c) return keel::net::error_response(keel::net::status::service_unavailable, c.error());
    auto info = (*c)->query("SELECT version(), (SELECT count(*) FROM showcase_visits)");
    if (!info) return keel::net::error_response(keel::net::status::internal_server_error, info.error());
    const auto s = pool.stats();
    return keel::net::json_response(boost::json::object{
        {"server", (*info)[0].get<std::string>(0).value()},
        {"visits", (*info)[0].get<std::int64_t>(1).value()},
        {"embedded", cluster != nullptr},
        {"pool", {{"open", s.open}, {"in_use", s.in_use}, {"idle", s.idle}, {"acquired", s.acquired}}}});
  });

  server.post(
      "/api/visits", keel::net::json_handler([&](const keel::net::request&, const boost::json::value& body) {
        const auto* note = body.is_object() ? body.as_object().if_contains("note") : nullptr;
        if (note == nullptr || !note->is_string()) {
          return keel::net::error_response(keel::net::status::bad_request, "invalid visit",
                                           "send {\"note\": \"some text\"}");
        }
        auto c = pool.acquire();
        if (!c) return keel::net::error_response(keel::net::status::service_unavailable, c.error());
        const std::string_view text(note->as_string().data(), note->as_string().size());
        auto inserted = (*c)->query("INSERT INTO showcase_visits (note) VALUES ($1) RETURNING id", text);
        if (!inserted) return keel::net::error_response(keel::net::status::bad_request, inserted.error());
        visits_total.inc();
        return keel::net::json_response(boost::json::object{{"id", inserted->value<std::int64_t>().value()}},
                                        keel::net::status::created);
      }));

  server.add_readiness_check("postgres", [&] {
    auto c = pool.acquire(std::chrono::milliseconds(500));
    if (!c) return keel::net::readiness{false, c.error().message()};
    if (auto r = (*c)->query("SELECT 1"); !r) return keel::net::readiness{false, r.error().message()};
    return keel::net::readiness{true, "reachable"};
  });

  if (auto started = server.start(); !started) {
    std::fprintf(stderr, "could not listen on %s:%u: %s\n", opts->address.c_str(), opts->port,
                 started.error().message().c_str());
    return 1;
  }
  const std::string database = cluster ? "embedded, data in " + opts->data_dir : "KEEL_DATABASE_URL";
  std::printf("keel showcase listening on http://%s:%u/  (Postgres: %s; Ctrl-C stops)\n",
              opts->address.c_str(), server.port(), database.c_str());
  std::fflush(stdout);
  server.wait();
  std::printf("keel showcase stopped\n");
  return 0;
}
