// The /api/tsdb routes and the /tsdb page: thin handlers over keel::tsdb::store, each checking
// the authorization hook first and refusing malformed input with a 400 that says what to send.
#include <keel/net/json.hpp>
#include <keel/net/trust.hpp>
#include <keel/tsdb/query.hpp>
#include <keel/tsdb_http/routes.hpp>

#include "plot_page.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace keel::tsdb_http {

namespace {

/// The store and its lock: a store is one connection and not thread-safe; requests take turns.
struct shared_store {
  explicit shared_store(tsdb::store& s) : store(s) {}
  std::mutex lock;
  tsdb::store& store;
};

net::response bad_request(std::string_view detail) {
  return net::error_response(net::status::bad_request, "invalid request", detail);
}

// The integer query parameter `name`, nullopt when it is absent, or the 400 answer when it is
// present but not an integer.
struct int_param {
  std::optional<std::int64_t> value;
  std::optional<net::response> refused;
};

int_param read_int(const net::request& req, std::string_view name) {
  const auto text = req.query_param(name);
  if (!text) return {};
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size() || text->empty()) {
    return {.value = std::nullopt,
            .refused = bad_request(std::string(name) +
                                   " must be an integer from -9223372036854775808 to "
                                   "9223372036854775807, got \"" +
                                   std::string(*text) + "\"")};
  }
  return {.value = value, .refused = std::nullopt};
}

boost::json::value number_or_null(double v) {
  if (std::isfinite(v)) return v;
  return nullptr;
}

// How many points the page and the plot route downsample to: ?points=, 300 when absent,
// clamped to [3, 100000] so that a huge count cannot make a huge answer.
constexpr std::int64_t default_plot_points = 300;
std::size_t clamp_points(std::int64_t asked) {
  return static_cast<std::size_t>(std::clamp<std::int64_t>(asked, 3, 100000));
}

// Wraps a handler with the authorization check.
net::handler guarded(const std::shared_ptr<const authorize_fn>& authorize, access wanted, net::handler h) {
  return [authorize, wanted, h = std::move(h)](const net::request& req) {
    if (!(*authorize)(req, wanted)) {
      return net::error_response(net::status::forbidden, "forbidden",
                                 wanted == access::write
                                     ? "writing points is not allowed for this request: write from loopback, "
                                       "send the configured bearer token, or widen the authorize hook"
                                     : "these time series are not readable for this request: see the "
                                       "authorize hook");
    }
    return h(req);
  };
}

// What a plot asks for: the series (?series=, else the mounted default) and how many points to
// draw (?points=), or the 400 saying what is wrong.
struct plot_request {
  std::int64_t series = 0;
  std::size_t points = 0;
};
std::variant<plot_request, net::response> read_plot_request(const net::request& req,
                                                            const std::optional<std::int64_t>& fallback) {
  auto series = read_int(req, "series");
  if (series.refused) return std::move(*series.refused);
  if (!series.value && !fallback) {
    return bad_request("pass ?series=<id> (the ids are in GET /api/tsdb/series?metric=<name>)");
  }
  auto points = read_int(req, "points");
  if (points.refused) return std::move(*points.refused);
  return plot_request{.series = series.value.value_or(fallback.value_or(0)),
                      .points = clamp_points(points.value.value_or(default_plot_points))};
}

// Every point of one series, read under the store's lock.
result<void> read_whole_series(shared_store& shared, std::int64_t series, std::vector<std::int64_t>& t,
                               std::vector<double>& v) {
  std::lock_guard guard(shared.lock);
  auto scan = shared.store.scan(series, std::numeric_limits<std::int64_t>::min(),
                                std::numeric_limits<std::int64_t>::max());
  if (!scan) return scan.error();
  scan->drain(t, v);
  return {};
}

// The plot's title (metric{labels}) and unit, from the series index; empty when unknown.
detail::plot_labels describe(shared_store& shared, std::int64_t series) {
  std::lock_guard guard(shared.lock);
  auto info = shared.store.describe(series);
  if (!info || !*info) return {};
  detail::plot_labels out{.title = (*info)->metric};
  std::string_view unit_label;
  if (!(*info)->labels.empty()) {
    out.title += "{";
    for (const auto& l : (*info)->labels) {
      if (out.title.back() != '{') out.title += ", ";
      out.title += l.name + "=\"" + l.value + "\"";
      if (l.name == "unit") unit_label = l.value;
    }
    out.title += "}";
  }
  out.unit = detail::unit_of((*info)->metric, unit_label);
  return out;
}

net::response ingest(shared_store& shared, const boost::json::value& body) {
  static constexpr std::string_view usage =
      R"(send {"metric": "name", "labels": {"k": "v"}, "points": [[time_ms, value], ...]})";
  const auto* o = body.if_object();
  const auto* metric = o ? o->if_contains("metric") : nullptr;
  const auto* points = o ? o->if_contains("points") : nullptr;
  if (metric == nullptr || !metric->is_string() || points == nullptr || !points->is_array())
    return bad_request(usage);
  std::vector<tsdb::label> labels;
  if (const auto* l = o->if_contains("labels"); l != nullptr) {
    if (!l->is_object())
      return bad_request(std::string("labels must be an object of strings: ") + std::string(usage));
    for (const auto& [k, v] : l->as_object()) {
      if (!v.is_string()) return bad_request("label values must be strings");
      labels.push_back({std::string(k), std::string(v.as_string())});
    }
  }
  std::vector<std::int64_t> times;
  std::vector<double> values;
  for (const auto& p : points->as_array()) {
    const auto* pair = p.if_array();
    if (pair == nullptr || pair->size() != 2 || !pair->at(0).is_number() || !pair->at(1).is_number())
      return bad_request("each point is [time_ms, value] with numbers");
    boost::system::error_code ec;
    const auto t = pair->at(0).to_number<std::int64_t>(ec);
    if (ec) return bad_request("times are integers (milliseconds since 1970)");
    times.push_back(t);
    values.push_back(pair->at(1).to_number<double>());
  }
  std::lock_guard guard(shared.lock);
  auto id = shared.store.series(std::string_view(metric->as_string()), labels);
  if (!id) return net::error_response(net::status::bad_request, id.error());
  if (auto r = shared.store.buffer(*id, times, values); !r)
    return net::error_response(net::status::conflict, r.error());
  if (auto r = shared.store.flush(); !r)
    return net::error_response(net::status::internal_server_error, r.error());
  return net::json_response(boost::json::object{{"series", *id}, {"accepted", times.size()}},
                            net::status::created);
}

net::response query(shared_store& shared, const net::request& req) {
  static constexpr std::string_view usage =
      "pass series, from, to (ms) and step (ms) as integers, with to > from and step > 0";
  const auto series = read_int(req, "series");
  const auto from = read_int(req, "from");
  const auto to = read_int(req, "to");
  const auto step = read_int(req, "step");
  if (!series.value || !from.value || !to.value || !step.value) return bad_request(usage);
  const auto fill = req.query_param("fill").value_or("none");
  if (fill != "none" && fill != "locf" && fill != "linear")
    return bad_request("fill must be none, locf or linear, got \"" + std::string(fill) + "\"");
  const auto max_gap = read_int(req, "max_gap");
  if (max_gap.refused) return *max_gap.refused;
  if (max_gap.value.value_or(0) < 0) {
    return bad_request("max_gap must be 0 (no limit) or a positive number of buckets, got " +
                       std::to_string(*max_gap.value));
  }
  // The store refuses what makes no buckets (errc::invalid_range: step <= 0, to <= from, too many
  // buckets, a start before INT64_MIN), with exact arithmetic over all of int64: answered 400.
  tsdb::query_plan plan;
  std::vector<tsdb::bucket> buckets;
  {
    std::lock_guard guard(shared.lock);
    auto found = shared.store.aggregate(*series.value,
                                        {.from = *from.value, .to = *to.value, .width = *step.value}, &plan);
    if (!found) return net::error_response(net::status::bad_request, found.error());
    buckets = std::move(*found);
  }
  std::vector<double> avg;
  avg.reserve(buckets.size());
  for (const auto& b : buckets) avg.push_back(b.avg());
  const auto how =
      fill == "locf" ? tsdb::fill::locf : (fill == "linear" ? tsdb::fill::linear : tsdb::fill::none);
  const auto filled = tsdb::gapfill(avg, how, static_cast<std::size_t>(max_gap.value.value_or(0)));
  boost::json::array rows;
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    const auto& b = buckets[i];
    rows.push_back({{"start", b.start},
                    {"count", b.count},
                    {"avg", number_or_null(filled[i])},
                    {"min", b.count ? number_or_null(b.min) : nullptr},
                    {"max", b.count ? number_or_null(b.max) : nullptr},
                    {"stddev", number_or_null(b.stddev())}});
  }
  return net::json_response(boost::json::object{{"buckets", rows},
                                                {"plan",
                                                 {{"rollup", plan.rollup},
                                                  {"blocks_decoded", plan.blocks_decoded},
                                                  {"blocks_summarized", plan.blocks_summarized},
                                                  {"rollup_rows", plan.rollup_rows}}}});
}

}  // namespace

authorize_fn default_authorization(std::string write_token) {
  return [token = std::move(write_token)](const net::request& req, access wanted) {
    return wanted == access::read || net::local_or_token(req, token);
  };
}

void mount(net::server& server, tsdb::store& store, options opts) {
  auto authorize = std::make_shared<const authorize_fn>(
      opts.authorize ? std::move(opts.authorize) : default_authorization(std::move(opts.write_token)));
  auto shared = std::make_shared<shared_store>(store);
  const auto fallback = opts.default_series;
  const auto readable = [&](net::handler h) { return guarded(authorize, access::read, std::move(h)); };

  server.post("/api/tsdb/ingest",
              guarded(authorize, access::write,
                      net::json_handler([shared](const net::request&, const boost::json::value& body) {
                        return ingest(*shared, body);
                      })));

  server.get("/api/tsdb/series", readable([shared](const net::request& req) {
               const auto metric = req.query_param("metric");
               if (!metric) return bad_request("pass ?metric=name");
               std::lock_guard guard(shared->lock);
               auto found = shared->store.select(*metric);
               if (!found) return net::error_response(net::status::bad_request, found.error());
               boost::json::array list;
               for (const auto& s : *found) {
                 boost::json::object labels;
                 for (const auto& l : s.labels) labels[l.name] = l.value;
                 list.push_back({{"id", s.id}, {"metric", s.metric}, {"labels", labels}});
               }
               return net::json_response(boost::json::object{{"series", list}});
             }));

  server.get("/api/tsdb/query", readable([shared](const net::request& req) { return query(*shared, req); }));

  server.get("/api/tsdb/plot", readable([shared, fallback](const net::request& req) {
               auto asked = read_plot_request(req, fallback);
               if (auto* refused = std::get_if<net::response>(&asked)) return std::move(*refused);
               const auto& plot = std::get<plot_request>(asked);
               std::vector<std::int64_t> t;
               std::vector<double> v;
               if (auto read = read_whole_series(*shared, plot.series, t, v); !read) {
                 return net::error_response(net::status::bad_request, read.error());
               }
               boost::json::array lttb;
               for (const auto i : tsdb::lttb(t, v, plot.points))
                 lttb.push_back({t[i], number_or_null(v[i])});
               return net::json_response(boost::json::object{{"raw_points", t.size()}, {"lttb", lttb}});
             }));

  server.get("/tsdb", readable([shared, fallback](const net::request& req) {
               auto asked = read_plot_request(req, fallback);
               if (auto* refused = std::get_if<net::response>(&asked)) return std::move(*refused);
               const auto& plot = std::get<plot_request>(asked);
               std::vector<std::int64_t> t;
               std::vector<double> v;
               // A series that cannot be read is drawn as an empty plot, as one with no points.
               if (!read_whole_series(*shared, plot.series, t, v)) {
                 t.clear();
                 v.clear();
               }
               return net::text_response(detail::plot_page(t, v, plot.points, describe(*shared, plot.series)),
                                         net::status::ok, "text/html; charset=utf-8");
             }));
}

}  // namespace keel::tsdb_http
