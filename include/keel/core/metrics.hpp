#pragma once
/// @file keel/core/metrics.hpp
/// @brief Counters, gauges and histograms with labels, exposed in the Prometheus text format.
///
/// The hot path is lock-free: resolve a labelled child once and keep the reference, then each
/// `inc()` / `observe()` is an atomic add.
/// @code
/// auto& requests = registry.add_counter("jobs_done_total", "Jobs finished.", {"queue"});
/// auto& done = requests.labels({"email"});   // a map lookup, once
/// done.inc();                                // one atomic add, from any thread
/// @endcode
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::metrics {

/// A monotonically increasing count.
class counter {
 public:
  /// Adds `n`.
  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  /// The current count.
  [[nodiscard]] std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

/// A value that goes up and down (open connections, queue depth).
class gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void inc(double d = 1) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  void dec(double d = 1) noexcept { value_.fetch_add(-d, std::memory_order_relaxed); }
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

/// Counts of observations in buckets with fixed upper bounds, plus their sum.
class histogram {
 public:
  /// `bounds` must outlive the histogram (its family owns them).
  explicit histogram(std::span<const double> bounds);

  /// Records `v` in the first bucket whose upper bound is >= v (or in +Inf).
  void observe(double v) noexcept;

  /// Per-bucket counts, not cumulative; the last one is the +Inf bucket.
  [[nodiscard]] std::vector<std::uint64_t> bucket_counts() const;
  /// The number of observations.
  [[nodiscard]] std::uint64_t count() const noexcept;
  /// The sum of observations.
  [[nodiscard]] double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }
  /// The upper bounds, without +Inf.
  [[nodiscard]] std::span<const double> bounds() const noexcept { return bounds_; }

 private:
  std::span<const double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

/// The Prometheus default buckets, in seconds: 5 ms to 10 s.
[[nodiscard]] std::vector<double> default_buckets();

namespace detail {
/// What every family can do for the registry.
class family_base {
 public:
  virtual ~family_base() = default;
  family_base() = default;
  family_base(const family_base&) = delete;
  family_base& operator=(const family_base&) = delete;
  /// Appends HELP, TYPE and the samples in the text format 0.0.4.
  virtual void expose(std::string& out) const = 0;
};
}  // namespace detail

/// All children of one metric name: one per combination of label values.
template <class Metric>
class family final : public detail::family_base {
 public:
  family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds);
  ~family() override;

  /// The child for these label values, one per label name in order; created on first use.
  /// The reference stays valid as long as the registry. Throws std::invalid_argument when the
  /// number of values differs from the number of label names.
  [[nodiscard]] Metric& labels(std::initializer_list<std::string_view> values);
  /// As above, for values held in a container.
  [[nodiscard]] Metric& labels(std::span<const std::string_view> values);
  /// The only child of a family without labels.
  [[nodiscard]] Metric& get() { return labels(std::span<const std::string_view>{}); }
  /// Stops exposing the child for these label values, for a series that ended (a queue that
  /// emptied, a peer that left), so label sets that come and go do not pile up in the output.
  /// The child keeps its value and references to it stay valid; labels() with the same values
  /// exposes it again. Values no child has are ignored.
  void hide(std::span<const std::string_view> values);
  void hide(std::initializer_list<std::string_view> values) {
    hide(std::span<const std::string_view>(values.begin(), values.size()));
  }
  /// The number of children exposed (not hidden).
  [[nodiscard]] std::size_t exposed_children() const;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const std::vector<std::string>& label_names() const noexcept { return label_names_; }
  void expose(std::string& out) const override;

 private:
  struct children;
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  std::vector<double> bounds_;
  std::unique_ptr<children> children_;
};

using counter_family = family<counter>;
using gauge_family = family<gauge>;
using histogram_family = family<histogram>;

extern template class family<counter>;
extern template class family<gauge>;
extern template class family<histogram>;

/// A set of metric families and their exposition. Thread-safe.
class registry {
 public:
  registry();
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  /// The counter family `name`, created on first use. Names follow Prometheus rules
  /// (`[a-zA-Z_:][a-zA-Z0-9_:]*`, counters end in `_total` by convention); a bad name, or the
  /// same name with another type or labels, throws std::invalid_argument.
  counter_family& add_counter(std::string_view name, std::string_view help,
                              std::vector<std::string> label_names = {});
  /// The gauge family `name`, created on first use; rules as for add_counter.
  gauge_family& add_gauge(std::string_view name, std::string_view help,
                          std::vector<std::string> label_names = {});
  /// The histogram family `name`, created on first use. `bounds` must be strictly increasing
  /// and finite; "le" is not a valid label name.
  histogram_family& add_histogram(std::string_view name, std::string_view help,
                                  std::vector<std::string> label_names = {},
                                  std::vector<double> bounds = default_buckets());

  /// Every family in the Prometheus text exposition format 0.0.4, in registration order.
  [[nodiscard]] std::string expose() const;

 private:
  struct entry;
  template <class Metric>
  family<Metric>& add(std::string_view type, std::string_view name, std::string_view help,
                      std::vector<std::string> label_names, std::vector<double> bounds);
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<entry>> entries_;
};

/// The Content-Type of `registry::expose()` output.
inline constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace keel::metrics
