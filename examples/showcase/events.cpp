// keel::events in the showcase: an order's lifecycle, event-sourced. Each order is a stream
// (order-<n>); its state is the fold of its events; a command is decided against that state
// and appended with the version it was decided on, so two clerks cannot both ship an order.
// $all and the horizon are browsable as JSON, and keel::events_http's page at /events shows the
// streams, the readers and the consumer groups: a "receipts" subscription that follows the paid
// orders, a "shipping" consumer group of two members, an inline projection keeping an orders
// table and a projection refreshing a materialized view of it. A few orders are placed at first
// start.
#include <keel/events.hpp>
#include <keel/events_http.hpp>
#include <keel/pg/migrations.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace showcase {
namespace {

namespace ev = keel::events;
namespace net = keel::net;

// An order as its events leave it.
struct order_state {
  std::string status = "none";  // none, placed, paid, shipped, cancelled
  std::int64_t total_cents = 0;
  std::int64_t version = -1;
};

order_state fold(const std::vector<ev::recorded_event>& events) {
  order_state s;
  for (const auto& e : events) {
    s.version = e.version;
    if (e.type == "order_placed") {
      s.status = "placed";
      boost::system::error_code ec;
      const auto data = boost::json::parse(e.data, ec);
      if (!ec && data.is_object()) {
        if (const auto* total = data.as_object().if_contains("total_cents");
            total != nullptr && total->is_int64()) {
          s.total_cents = total->as_int64();
        }
      }
    } else if (e.type == "order_paid") {
      s.status = "paid";
    } else if (e.type == "order_shipped") {
      s.status = "shipped";
    } else if (e.type == "order_cancelled") {
      s.status = "cancelled";
    }
  }
  return s;
}

// Which command may follow which state: the event it appends, or nothing.
std::optional<std::string> decide(const order_state& s, std::string_view command) {
  if (command == "pay" && s.status == "placed") return "order_paid";
  if (command == "ship" && s.status == "paid") return "order_shipped";
  if (command == "cancel" && (s.status == "placed" || s.status == "paid")) return "order_cancelled";
  return std::nullopt;
}

boost::json::object event_json(const ev::recorded_event& e) {
  boost::system::error_code ec;
  auto data = boost::json::parse(e.data, ec);
  return {{"stream", e.stream},     {"version", e.version},
          {"type", e.type},         {"data", ec ? boost::json::value(e.data) : data},
          {"id", e.id.to_string()}, {"position", e.position.to_string()}};
}

boost::json::object order_json(const std::string& stream, const order_state& s,
                               const std::vector<ev::recorded_event>& events) {
  boost::json::array list;
  for (const auto& e : events) list.push_back(event_json(e));
  return {{"stream", stream},
          {"status", s.status},
          {"total_cents", s.total_cents},
          {"version", s.version},
          {"events", list}};
}

// The read models: showcase_orders, kept by an inline projection in each append's transaction
// (never behind), and showcase_order_summary, a materialized view over it that a projection
// refreshes. The first migration fills the table from orders placed before it existed.
constexpr keel::pg::migration read_model_migrations[] = {
    {1, "orders read model", R"sql(
CREATE TABLE showcase_orders (
  stream      text   PRIMARY KEY,
  status      text   NOT NULL,
  total_cents bigint NOT NULL
);
INSERT INTO showcase_orders (stream, status, total_cents)
SELECT stream,
       CASE (array_agg(type ORDER BY version DESC))[1]
         WHEN 'order_paid' THEN 'paid' WHEN 'order_shipped' THEN 'shipped'
         WHEN 'order_cancelled' THEN 'cancelled' ELSE 'placed' END,
       coalesce(max((data::jsonb ->> 'total_cents')::bigint) FILTER (WHERE type = 'order_placed'), 0)
FROM keel_events WHERE category = 'order' GROUP BY stream;
CREATE MATERIALIZED VIEW showcase_order_summary AS
  SELECT status, count(*) AS orders, sum(total_cents)::bigint AS total_cents FROM showcase_orders GROUP BY status;
CREATE UNIQUE INDEX ON showcase_order_summary (status);
)sql"},
};

std::string_view status_after(std::string_view event_type) {
  if (event_type == "order_paid") return "paid";
  if (event_type == "order_shipped") return "shipped";
  if (event_type == "order_cancelled") return "cancelled";
  return "placed";
}

// In the append's transaction: an order's row follows its events.
keel::result<void> project_order(keel::pg::connection& c, std::span<const ev::recorded_event> events) {
  for (const auto& e : events) {
    if (e.type == "order_placed") {
      auto done = c.query(
          "INSERT INTO showcase_orders VALUES ($1, 'placed', coalesce(($2::json ->> 'total_cents')::bigint, "
          "0)) "
          "ON CONFLICT (stream) DO NOTHING",
          e.stream, e.data);
      if (!done) return done.error();
    } else {
      auto done =
          c.query("UPDATE showcase_orders SET status = $2 WHERE stream = $1", e.stream, status_after(e.type));
      if (!done) return done.error();
    }
  }
  return {};
}

struct events_part {
  events_part(keel::pg::pool& p, keel::metrics::registry& registry)
      : pool(p),
        metrics(registry),
        store(ev::store_options{.metrics = &metrics, .inline_projections = inline_projections}) {}
  keel::pg::pool& pool;
  ev::events_metrics metrics;
  const std::vector<ev::inline_projection> inline_projections{
      {.name = "showcase-orders",
       .category = "order",
       .types = {"order_placed", "order_paid", "order_shipped", "order_cancelled"},
       .apply = project_order}};
  ev::store store;
  std::atomic<std::int64_t> next_order{1};
  std::atomic<std::int64_t> receipts_sent{0};
  std::atomic<std::int64_t> shipping_labels{0};
  // Follows the paid orders, as a mailer would; stopped when the routes holding the part go.
  std::unique_ptr<ev::subscription> receipts;
  // Two members of a consumer group share the orders' partitions, each order in order.
  std::vector<std::unique_ptr<ev::consumer>> shipping;
  // Refreshes showcase_order_summary after the orders change.
  std::unique_ptr<ev::projection> summary;
};

net::response place(events_part& part, keel::pg::connection& c, std::int64_t total_cents) {
  const auto stream = "order-" + std::to_string(part.next_order++);
  auto placed =
      part.store.append(c, stream, ev::expected_version::no_stream(),
                        {{.type = "order_placed",
                          .data = boost::json::serialize(boost::json::object{{"total_cents", total_cents}}),
                          .metadata = R"({"source": "showcase"})"}});
  if (!placed) return net::error_response(net::status::bad_request, placed.error());
  if (!*placed)
    return net::error_response(net::status::conflict, "order number taken", "place the order again");
  return net::json_response(boost::json::object{{"stream", stream}, {"version", placed->version}},
                            net::status::created);
}

}  // namespace

keel::result<void> mount_events(context& ctx) {
  {
    auto c = ctx.pool.acquire();
    if (!c) return c.error();
    if (auto migrated = ev::migrate(**c); !migrated) return migrated.error();
  }
  {
    auto c = ctx.pool.acquire();
    if (!c) return c.error();
    if (auto migrated = keel::pg::migrate(**c, "showcase events", read_model_migrations); !migrated)
      return migrated.error();
  }
  auto part = std::make_shared<events_part>(ctx.pool, ctx.server.metrics());
  {
    // Order numbers go on from the highest stored; demo orders at first start.
    auto c = ctx.pool.acquire();
    if (!c) return c.error();
    auto highest = (*c)->query(
        "SELECT coalesce(max(substring(name FROM 7)::bigint), 0) FROM keel_events_streams WHERE category = "
        "'order' "
        "AND name ~ '^order-[0-9]+$'");
    if (!highest) return highest.error();
    part->next_order = highest->value<std::int64_t>().value() + 1;
    if (part->next_order == 1) {
      for (const std::int64_t total : {1250, 4999, 860}) (void)place(*part, **c, total);
      (void)part->store.append(**c, "order-1", ev::expected_version::exact(0), {{.type = "order_paid"}});
      (void)part->store.append(**c, "order-1", ev::expected_version::exact(1), {{.type = "order_shipped"}});
      (void)part->store.append(**c, "order-2", ev::expected_version::exact(0), {{.type = "order_paid"}});
    }
  }

  part->receipts =
      std::make_unique<ev::subscription>(ev::subscription_options{.conninfo = ctx.conninfo,
                                                                  .name = "receipts",
                                                                  .category = "order",
                                                                  .types = {"order_paid"},
                                                                  .metrics = &part->metrics},
                                         [raw = part.get()](const ev::recorded_event&) -> keel::result<void> {
                                           ++raw->receipts_sent;  // a real mailer would send the receipt here
                                           return {};
                                         });
  if (auto started = part->receipts->start(); !started) return started.error();
  for (const char* member : {"shipping-a", "shipping-b"}) {
    part->shipping.push_back(
        std::make_unique<ev::consumer>(ev::consumer_group_options{.conninfo = ctx.conninfo,
                                                                  .group = "shipping",
                                                                  .member = member,
                                                                  .category = "order",
                                                                  .types = {"order_shipped"},
                                                                  .partitions = 8,
                                                                  .metrics = &part->metrics},
                                       [raw = part.get()](const ev::recorded_event&) -> keel::result<void> {
                                         ++raw->shipping_labels;  // a real one would print the label
                                         return {};
                                       }));
    if (auto started = part->shipping.back()->start(); !started) return started.error();
  }
  part->summary = std::make_unique<ev::projection>(
      ev::projection_options{.conninfo = ctx.conninfo,
                             .name = "order-summary",
                             .category = "order",
                             .batch_size = 10'000,
                             .min_batch_interval = std::chrono::milliseconds(250),
                             .metrics = &part->metrics},
      ev::refresh_materialized_view("showcase_order_summary", {.concurrently = true}));
  if (auto started = part->summary->start(); !started) return started.error();
  keel::events_http::mount(ctx.server, ctx.pool, {.store = &part->store});

  // The read models: the inline one (always current) and the materialized view (as of its
  // projection's checkpoint; ?fresh=1 waits for it to reach the latest order).
  ctx.server.get("/api/events/summary", [part](const net::request& req) {
    auto c = part->pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    bool fresh = true;
    if (req.query_param("fresh") == "1") {
      auto last = part->store.read_all(**c, {.after = ev::all_position::end(),
                                             .dir = ev::direction::backward,
                                             .max_count = 1,
                                             .category = "order"});
      if (!last) return net::error_response(net::status::service_unavailable, last.error());
      if (!last->events.empty()) {
        fresh = part->summary->wait_for(last->events.back().position, std::chrono::seconds(5));
      }
    }
    const auto rows_json = [&](std::string_view sql) -> keel::result<boost::json::array> {
      auto rows = (*c)->query(sql);
      if (!rows) return rows.error();
      boost::json::array list;
      for (const auto r : *rows) {
        auto f = r.as<std::string, std::int64_t, std::int64_t>();
        if (!f) return f.error();
        list.push_back(
            {{"status", std::get<0>(*f)}, {"orders", std::get<1>(*f)}, {"total_cents", std::get<2>(*f)}});
      }
      return list;
    };
    auto live = rows_json(
        "SELECT status, count(*), sum(total_cents)::bigint FROM showcase_orders GROUP BY status ORDER BY "
        "status");
    if (!live) return net::error_response(net::status::service_unavailable, live.error());
    auto view = rows_json("SELECT status, orders, total_cents FROM showcase_order_summary ORDER BY status");
    if (!view) return net::error_response(net::status::service_unavailable, view.error());
    return net::json_response(boost::json::object{{"inline", std::move(*live)},
                                                  {"materialized_view", std::move(*view)},
                                                  {"view_fresh", fresh},
                                                  {"shipping_labels", part->shipping_labels.load()}});
  });

  ctx.server.post(
      "/api/events/orders", net::json_handler([part](const net::request&, const boost::json::value& body) {
        const auto* total = body.is_object() ? body.as_object().if_contains("total_cents") : nullptr;
        if (total == nullptr || !total->is_int64() || total->as_int64() <= 0) {
          return net::error_response(net::status::bad_request, "invalid order",
                                     "send {\"total_cents\": 1250} (a positive integer)");
        }
        auto c = part->pool.acquire();
        if (!c) return net::error_response(net::status::service_unavailable, c.error());
        return place(*part, **c, total->as_int64());
      }));

  ctx.server.get("/api/events/orders/{id}", [part](const net::request& req) {
    const std::string stream = "order-" + std::string(req.path_param("id").value_or(""));
    auto c = part->pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    auto page = part->store.read_stream(**c, stream);
    if (!page) return net::error_response(net::status::bad_request, page.error());
    if (page->status == ev::stream_status::not_found) {
      return net::error_response(net::status::not_found, "no such order",
                                 "place one with POST /api/events/orders");
    }
    return net::json_response(order_json(stream, fold(page->events), page->events));
  });

  // A command: decided against the order's state, appended with the version it was decided on.
  // {"expected_version": n} in the body makes the client's own view the condition.
  ctx.server.post("/api/events/orders/{id}/{command}", [part](const net::request& req) {
    const std::string stream = "order-" + std::string(req.path_param("id").value_or(""));
    const auto command = req.path_param("command").value_or("");
    std::optional<std::int64_t> client_version;
    if (!req.body.empty()) {
      auto body = net::parse_json(req);
      if (!body)
        return net::error_response(net::status::bad_request, "invalid JSON",
                                   "send {\"expected_version\": n}");
      if (const auto* v = body->is_object() ? body->as_object().if_contains("expected_version") : nullptr) {
        if (!v->is_int64()) {
          return net::error_response(net::status::bad_request, "invalid expected_version", "use an integer");
        }
        client_version = v->as_int64();
      }
    }
    auto c = part->pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    auto page = part->store.read_stream(**c, stream);
    if (!page) return net::error_response(net::status::bad_request, page.error());
    if (page->status == ev::stream_status::not_found) {
      return net::error_response(net::status::not_found, "no such order",
                                 "place one with POST /api/events/orders");
    }
    const auto state = fold(page->events);
    const auto event_type = decide(state, command);
    if (!event_type) {
      return net::error_response(net::status::conflict, "command not allowed",
                                 "an order that is " + state.status + " cannot " + std::string(command) +
                                     " (place → pay → ship; cancel before shipping)");
    }
    const auto expected = ev::expected_version::exact(client_version.value_or(state.version));
    auto appended = part->store.append(**c, stream, expected, {{.type = *event_type}});
    if (!appended) return net::error_response(net::status::bad_request, appended.error());
    if (!*appended) {
      return net::json_response(
          boost::json::object{{"error", "wrong expected version"},
                              {"detail", "the order changed since you read it; read it again and retry"},
                              {"expected_version", expected.version},
                              {"actual_version", appended->version}},
          net::status::conflict);
    }
    page = part->store.read_stream(**c, stream);
    if (!page) return net::error_response(net::status::service_unavailable, page.error());
    return net::json_response(order_json(stream, fold(page->events), page->events));
  });

  // The global order, a page at a time: ?after=<transaction/position>&category=order&limit=n.
  ctx.server.get("/api/events/all", [part](const net::request& req) {
    ev::all_read read{.max_count = 100};
    if (const auto after = req.query_param("after")) {
      auto parsed = ev::all_position::parse(*after);
      if (!parsed) return net::error_response(net::status::bad_request, parsed.error());
      read.after = *parsed;
    }
    if (const auto category = req.query_param("category")) read.category = std::string(*category);
    if (const auto limit = req.query_param("limit")) {
      try {
        read.max_count = static_cast<std::size_t>(std::stoul(std::string(*limit)));
      } catch (const std::exception&) {
        return net::error_response(net::status::bad_request, "invalid limit",
                                   "use a number from 1 to 100000");
      }
    }
    auto c = part->pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    auto page = part->store.read_all(**c, read);
    if (!page) return net::error_response(net::status::bad_request, page.error());
    boost::json::array list;
    for (const auto& e : page->events) list.push_back(event_json(e));
    return net::json_response(boost::json::object{{"events", list},
                                                  {"next", page->next.to_string()},
                                                  {"caught_up", page->caught_up},
                                                  {"horizon", page->horizon}});
  });

  ctx.server.get("/api/events/horizon", [part](const net::request&) {
    auto c = part->pool.acquire();
    if (!c) return net::error_response(net::status::service_unavailable, c.error());
    auto h = part->store.horizon(**c);
    if (!h) return net::error_response(net::status::service_unavailable, h.error());
    return net::json_response(
        boost::json::object{{"horizon", h->horizon},
                            {"events_waiting", h->events_waiting},
                            {"oldest_transaction_seconds", h->oldest_transaction_seconds},
                            {"oldest_transaction_pid", h->oldest_transaction_pid}});
  });

  ctx.endpoints.push_back(
      {"GET", "/events", "events page: streams, a stream's events, readers and their lag, consumer groups"});
  ctx.endpoints.push_back(
      {"POST", "/api/events/orders", "place an order {\"total_cents\": 1250} (keel::events)"});
  ctx.endpoints.push_back({"GET", "/api/events/orders/1", "an order: its state folded from its events"});
  ctx.endpoints.push_back(
      {"POST", "/api/events/orders/{id}/pay", "pay (also ship, cancel); {\"expected_version\": n} to guard"});
  ctx.endpoints.push_back(
      {"GET", "/api/events/all?category=order", "the global order, never skipping an event"});
  ctx.endpoints.push_back(
      {"GET", "/api/events/horizon", "what holds readers of $all back (long transactions)"});
  ctx.endpoints.push_back(
      {"GET", "/api/events/summary?fresh=1",
       "orders by status: an inline projection, and a materialized view a projection refreshes"});
  return {};
}

}  // namespace showcase
