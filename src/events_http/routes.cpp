// The /events page and the /api/events routes: thin read-only handlers over keel::events.
#include <keel/events/consumer_group.hpp>
#include <keel/events_http/page.hpp>
#include <keel/net/json.hpp>

#include "page_html.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace keel::events_http {
namespace {

std::int64_t unix_ms(timestamp t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::string_view status_name(events::stream_status s) {
  switch (s) {
    case events::stream_status::not_found:
      return "not_found";
    case events::stream_status::active:
      return "active";
    case events::stream_status::deleted:
      return "deleted";
    case events::stream_status::tombstoned:
      return "tombstoned";
  }
  return "?";
}

std::optional<std::int64_t> number_param(const net::request& req, std::string_view name,
                                         std::int64_t fallback) {
  const auto text = req.query_param(name);
  if (!text) return fallback;
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || end != text->data() + text->size()) return std::nullopt;
  return v;
}

// A bad request (the caller's input) is 400; anything else is the database's trouble: 503.
net::response failure(const error_code& ec) {
  if (ec.category() == events::events_category()) return net::error_response(net::status::bad_request, ec);
  return net::error_response(net::status::service_unavailable, ec);
}

boost::json::object event_json(const events::recorded_event& e) {
  boost::system::error_code ec;
  auto data = boost::json::parse(e.data, ec);
  boost::system::error_code mec;
  auto metadata = boost::json::parse(e.metadata, mec);
  return {{"stream", e.stream},
          {"version", e.version},
          {"type", e.type},
          {"id", e.id.to_string()},
          {"position", e.position.to_string()},
          {"recorded_at", unix_ms(e.recorded_at)},
          {"data", ec ? boost::json::value(e.data) : data},
          {"metadata", mec ? boost::json::value(e.metadata) : metadata}};
}

}  // namespace

void mount(net::server& server, pg::pool& pool, options opts) {
  auto store = opts.store != nullptr
                   ? std::shared_ptr<const events::store>(std::shared_ptr<void>(), opts.store)
                   : std::make_shared<const events::store>();
  auto authorize = std::make_shared<const authorize_fn>(std::move(opts.authorize));
  const auto readable = [authorize](net::handler h) -> net::handler {
    return [authorize, h = std::move(h)](const net::request& req) {
      if (*authorize && !(*authorize)(req)) {
        return net::error_response(
            net::status::forbidden, "forbidden",
            "the events page is not readable for this request: see the authorize hook");
      }
      return h(req);
    };
  };

  server.get("/events", readable([](const net::request&) {
               return net::text_response(detail::page_html, net::status::ok, "text/html; charset=utf-8");
             }));

  // Streams in name order, a page at a time: ?category=&after=&limit=.
  server.get("/api/events/streams", readable([&pool, store](const net::request& req) {
               const auto limit = number_param(req, "limit", 50);
               if (!limit || *limit < 1 || *limit > 1000) {
                 return net::error_response(net::status::bad_request, "invalid limit", "use 1 to 1000");
               }
               auto c = pool.acquire();
               if (!c) return failure(c.error());
               auto list = store->list_streams(**c, req.query_param("category").value_or(""),
                                               req.query_param("after").value_or(""),
                                               static_cast<std::size_t>(*limit));
               if (!list) return failure(list.error());
               boost::json::array streams;
               for (const auto& s : *list) {
                 streams.push_back({{"name", s.name},
                                    {"status", status_name(s.status)},
                                    {"version", s.last_version},
                                    {"updated_at", unix_ms(s.updated_at)}});
               }
               return net::json_response(boost::json::object{{"streams", streams}});
             }));

  // One stream's events: ?from=<version>&limit=.
  server.get("/api/events/streams/{name}", readable([&pool, store](const net::request& req) {
               const auto from = number_param(req, "from", 0);
               const auto limit = number_param(req, "limit", 100);
               if (!from || *from < 0 || !limit || *limit < 1 || *limit > 1000) {
                 return net::error_response(net::status::bad_request, "invalid from or limit",
                                            "from: a version from 0; limit: 1 to 1000");
               }
               auto c = pool.acquire();
               if (!c) return failure(c.error());
               const auto name = req.path_param("name").value_or("");
               auto page = store->read_stream(
                   **c, name, {.from_version = *from, .max_count = static_cast<std::size_t>(*limit)});
               if (!page) return failure(page.error());
               if (page->status == events::stream_status::not_found) {
                 return net::error_response(net::status::not_found, "no such stream", std::string(name));
               }
               boost::json::array list;
               for (const auto& e : page->events) list.push_back(event_json(e));
               return net::json_response(boost::json::object{{"stream", name},
                                                             {"status", status_name(page->status)},
                                                             {"version", page->last_version},
                                                             {"next_version", page->next_version},
                                                             {"end_of_stream", page->end_of_stream},
                                                             {"events", list}});
             }));

  // Subscriptions and projections (their checkpoints) with their lag, and the horizon.
  server.get("/api/events/readers", readable([&pool, store](const net::request&) {
               auto c = pool.acquire();
               if (!c) return failure(c.error());
               auto readers = store->checkpoints(**c);
               if (!readers) return failure(readers.error());
               auto head = store->last_position(**c);
               if (!head) return failure(head.error());
               auto horizon = store->horizon(**c);
               if (!horizon) return failure(horizon.error());
               const auto now = std::chrono::system_clock::now();
               boost::json::array list;
               for (const auto& r : *readers) {
                 list.push_back(
                     {{"name", r.name},
                      {"position", r.position.to_string()},
                      {"lag_events", std::max<std::int64_t>(0, *head - r.position.position)},
                      {"checkpoint_age_seconds", std::chrono::duration<double>(now - r.updated_at).count()}});
               }
               return net::json_response(
                   boost::json::object{{"readers", list},
                                       {"last_position", *head},
                                       {"horizon",
                                        {{"transaction", horizon->horizon},
                                         {"events_waiting", horizon->events_waiting},
                                         {"oldest_transaction_seconds", horizon->oldest_transaction_seconds},
                                         {"oldest_transaction_pid", horizon->oldest_transaction_pid}}}});
             }));

  // Consumer groups: members with their heartbeats, partitions with owner, lease and lag.
  server.get(
      "/api/events/groups", readable([&pool, store](const net::request&) {
        auto c = pool.acquire();
        if (!c) return failure(c.error());
        auto groups = events::consumer_groups(**c);
        if (!groups) return failure(groups.error());
        auto head = store->last_position(**c);
        if (!head) return failure(head.error());
        boost::json::array list;
        for (const auto& g : *groups) {
          boost::json::array members;
          for (const auto& m : g.members) {
            members.push_back({{"name", m.name}, {"heartbeat_age_seconds", m.heartbeat_age_seconds}});
          }
          boost::json::array partitions;
          for (const auto& p : g.partition_list) {
            partitions.push_back({{"partition", p.partition},
                                  {"owner", p.owner},
                                  {"lease_seconds_left", p.lease_seconds_left},
                                  {"position", p.position.to_string()},
                                  {"lag_events", std::max<std::int64_t>(0, *head - p.position.position)}});
          }
          list.push_back({{"name", g.name},
                          {"partitions", g.partitions},
                          {"created_at", unix_ms(g.created_at)},
                          {"members", members},
                          {"partition_list", partitions}});
        }
        return net::json_response(boost::json::object{{"groups", list}});
      }));
}

}  // namespace keel::events_http
