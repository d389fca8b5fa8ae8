#include <keel/core/metrics.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <shared_mutex>
#include <stdexcept>
#include <typeinfo>

namespace keel::metrics {
namespace {

bool valid_name(std::string_view name, bool metric) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (metric && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return metric || !name.starts_with("__");
}

// HELP text escapes backslash and newline; label values also escape the double quote.
void append_escaped(std::string& out, std::string_view text, bool quote) {
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out.push_back(c);
    }
  }
}

void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buffer[32];
    const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
    out.append(buffer, end);
  }
}

void append_number(std::string& out, std::uint64_t v) {
  char buffer[24];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  out.append(buffer, end);
}

// {a="x",b="y"} plus an optional extra label (le for histogram buckets).
void append_labels(std::string& out, const std::vector<std::string>& names,
                   const std::vector<std::string>& values, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out.push_back('{');
  bool first = true;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!first) out.push_back(',');
    first = false;
    out += names[i];
    out += "=\"";
    append_escaped(out, values[i], true);
    out.push_back('"');
  }
  if (!extra_name.empty()) {
    if (!first) out.push_back(',');
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out.push_back('"');
  }
  out.push_back('}');
}

// Orders label-value keys and lets lookups use string_views without building a key.
struct label_less {
  using is_transparent = void;
  template <class A, class B>
  bool operator()(const A& a, const B& b) const noexcept {
    return std::lexicographical_compare(
        a.begin(), a.end(), b.begin(), b.end(),
        [](const auto& x, const auto& y) { return std::string_view(x) < std::string_view(y); });
  }
};

template <class Metric>
std::unique_ptr<Metric> make_metric(std::span<const double> bounds) {
  if constexpr (std::is_same_v<Metric, histogram>) {
    return std::make_unique<histogram>(bounds);
  } else {
    (void)bounds;
    return std::make_unique<Metric>();
  }
}

template <class Metric>
constexpr std::string_view type_name() {
  if constexpr (std::is_same_v<Metric, counter>) return "counter";
  if constexpr (std::is_same_v<Metric, gauge>) return "gauge";
  if constexpr (std::is_same_v<Metric, histogram>) return "histogram";
}

}  // namespace

histogram::histogram(std::span<const double> bounds)
    : bounds_(bounds), buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds.size() + 1)) {}

void histogram::observe(double v) noexcept {
  // Buckets are few (about ten); a linear scan beats a binary search at this size.
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<std::uint64_t> histogram::bucket_counts() const {
  std::vector<std::uint64_t> out(bounds_.size() + 1);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

std::uint64_t histogram::count() const noexcept {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) total += buckets_[i].load(std::memory_order_relaxed);
  return total;
}

std::vector<double> default_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

template <class Metric>
struct family<Metric>::children {
  struct child {
    std::unique_ptr<Metric> metric;
    bool hidden = false;  // hide(): kept (references stay valid) but not exposed
  };
  mutable std::shared_mutex mutex;
  std::map<std::vector<std::string>, child, label_less> by_labels;
};

template <class Metric>
family<Metric>::family(std::string name, std::string help, std::vector<std::string> label_names,
                       std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)),
      children_(std::make_unique<children>()) {}

template <class Metric>
family<Metric>::~family() = default;

template <class Metric>
Metric& family<Metric>::labels(std::initializer_list<std::string_view> values) {
  return labels(std::span<const std::string_view>(values.begin(), values.size()));
}

template <class Metric>
Metric& family<Metric>::labels(std::span<const std::string_view> values) {
  if (values.size() != label_names_.size()) {
    throw std::invalid_argument("keel::metrics: " + name_ + " has " + std::to_string(label_names_.size()) +
                                " labels but " + std::to_string(values.size()) + " values were given");
  }
  {
    std::shared_lock lock(children_->mutex);
    const auto it = children_->by_labels.find(values);
    if (it != children_->by_labels.end() && !it->second.hidden) return *it->second.metric;
  }
  std::unique_lock lock(children_->mutex);
  const auto it = children_->by_labels.find(values);
  if (it != children_->by_labels.end()) {
    it->second.hidden = false;
    return *it->second.metric;
  }
  std::vector<std::string> key(values.begin(), values.end());
  auto& slot = children_->by_labels[std::move(key)];
  slot.metric = make_metric<Metric>(bounds_);
  return *slot.metric;
}

template <class Metric>
void family<Metric>::hide(std::span<const std::string_view> values) {
  std::unique_lock lock(children_->mutex);
  if (const auto it = children_->by_labels.find(values); it != children_->by_labels.end())
    it->second.hidden = true;
}

template <class Metric>
std::size_t family<Metric>::exposed_children() const {
  std::shared_lock lock(children_->mutex);
  return static_cast<std::size_t>(std::count_if(children_->by_labels.begin(), children_->by_labels.end(),
                                                [](const auto& entry) { return !entry.second.hidden; }));
}

template <class Metric>
void family<Metric>::expose(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out.push_back(' ');
  append_escaped(out, help_, false);
  out += "\n# TYPE ";
  out += name_;
  out.push_back(' ');
  out += type_name<Metric>();
  out.push_back('\n');
  std::shared_lock lock(children_->mutex);
  for (const auto& [values, child] : children_->by_labels) {
    if (child.hidden) continue;
    const auto& metric = child.metric;
    if constexpr (std::is_same_v<Metric, histogram>) {
      const auto counts = metric->bucket_counts();
      std::uint64_t cumulative = 0;
      std::string le;
      for (std::size_t i = 0; i < counts.size(); ++i) {
        cumulative += counts[i];
        le.clear();
        if (i < bounds_.size()) {
          append_number(le, bounds_[i]);
        } else {
          le = "+Inf";
        }
        out += name_;
        out += "_bucket";
        append_labels(out, label_names_, values, "le", le);
        out.push_back(' ');
        append_number(out, cumulative);
        out.push_back('\n');
      }
      out += name_;
      out += "_sum";
      append_labels(out, label_names_, values);
      out.push_back(' ');
      append_number(out, metric->sum());
      out.push_back('\n');
      // _count is the +Inf bucket, so the two always agree even while observations race.
      out += name_;
      out += "_count";
      append_labels(out, label_names_, values);
      out.push_back(' ');
      append_number(out, cumulative);
      out.push_back('\n');
    } else {
      out += name_;
      append_labels(out, label_names_, values);
      out.push_back(' ');
      append_number(out, metric->value());
      out.push_back('\n');
    }
  }
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

struct registry::entry {
  std::string name;
  std::string_view type;
  std::vector<std::string> label_names;
  std::vector<double> bounds;
  std::unique_ptr<detail::family_base> family;
};

registry::registry() = default;
registry::~registry() = default;

template <class Metric>
family<Metric>& registry::add(std::string_view type, std::string_view name, std::string_view help,
                              std::vector<std::string> label_names, std::vector<double> bounds) {
  if (!valid_name(name, true)) {
    throw std::invalid_argument("keel::metrics: '" + std::string(name) +
                                "' is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
  }
  for (const auto& label : label_names) {
    if (!valid_name(label, false) || (type == "histogram" && label == "le")) {
      throw std::invalid_argument("keel::metrics: '" + label + "' is not a valid label name for " +
                                  std::string(name));
    }
  }
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      throw std::invalid_argument("keel::metrics: the buckets of " + std::string(name) +
                                  " must be finite and strictly increasing");
    }
  }
  std::lock_guard lock(mutex_);
  for (const auto& e : entries_) {
    if (e->name != name) continue;
    if (e->type != type || e->label_names != label_names || e->bounds != bounds) {
      throw std::invalid_argument("keel::metrics: " + std::string(name) +
                                  " is already registered with another type, labels or buckets");
    }
    return static_cast<family<Metric>&>(*e->family);
  }
  auto created = std::make_unique<family<Metric>>(std::string(name), std::string(help), label_names, bounds);
  auto& result = *created;
  entries_.push_back(std::make_unique<entry>(entry{.name = std::string(name),
                                                   .type = type,
                                                   .label_names = std::move(label_names),
                                                   .bounds = std::move(bounds),
                                                   .family = std::move(created)}));
  return result;
}

counter_family& registry::add_counter(std::string_view name, std::string_view help,
                                      std::vector<std::string> label_names) {
  return add<counter>("counter", name, help, std::move(label_names), {});
}

gauge_family& registry::add_gauge(std::string_view name, std::string_view help,
                                  std::vector<std::string> label_names) {
  return add<gauge>("gauge", name, help, std::move(label_names), {});
}

histogram_family& registry::add_histogram(std::string_view name, std::string_view help,
                                          std::vector<std::string> label_names, std::vector<double> bounds) {
  return add<histogram>("histogram", name, help, std::move(label_names), std::move(bounds));
}

std::string registry::expose() const {
  std::string out;
  std::lock_guard lock(mutex_);
  for (const auto& e : entries_) e->family->expose(out);
  return out;
}

}  // namespace keel::metrics
