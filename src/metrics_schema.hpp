#pragma once
/// The metrics schema: every series the server's processes count, decided before anything forks.
/// A series is one cell in each process's row of the shared table (metrics_store.hpp); the
/// schema says which cell is which series, how /metrics names it and how rows are merged.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "netserver/metrics.hpp"

namespace netserver {

/// What a family's series count.
enum class MetricType : std::uint8_t { counter, gauge };

/// Series of one name: its type, help line and label names.
struct MetricFamily {
  std::string name;
  std::string help;
  MetricType type = MetricType::counter;
  GaugeMerge merge = GaugeMerge::sum;  ///< gauges only
  std::vector<std::string> label_names;
};

/// One series: its family and label values. `labels` is the exposition's `{name="value",...}`
/// text, escaped ("" without labels); name + labels identify a series across restarts.
struct MetricSeries {
  std::uint32_t family = 0;
  std::string labels;
};

/// The value a min or max gauge holds in a process that never set it: it takes no part in the merge.
inline constexpr std::int64_t unset_gauge = INT64_MIN;

/// Families and series in registration order. Cell 0 of a row is the sink of unregistered
/// handles; series i lives in cell i + 1.
class MetricsSchema {
 public:
  /// Cells a row can have (series + the sink); registering more throws.
  static constexpr std::size_t max_cells = 1 << 14;

  /// The schema of this process: what register_counter / register_gauge add to, and the
  /// toolkit's own series (metrics_engine.hpp).
  static MetricsSchema& global();

  /// Adds a counter series. `toolkit` allows the reserved prefixes netserver_ and process_.
  /// Throws as register_counter documents.
  Counter counter(std::string_view name, std::string_view help, const MetricLabels& labels = {}, bool toolkit = false);
  /// Adds a gauge series. Throws as register_gauge documents.
  Gauge gauge(std::string_view name, std::string_view help, const MetricLabels& labels = {},
              GaugeMerge merge = GaugeMerge::sum, bool toolkit = false);

  /// No more registrations from now on (a store was laid out for the schema).
  void freeze() { frozen_ = true; }
  /// True after freeze().
  bool frozen() const { return frozen_; }

  const std::vector<MetricFamily>& families() const { return families_; }
  const std::vector<MetricSeries>& series() const { return series_; }
  /// The cell of series `series_index`.
  static std::uint32_t cell_of(std::size_t series_index) { return static_cast<std::uint32_t>(series_index + 1); }
  /// Cells in a row: the series and the sink.
  std::size_t cells() const { return series_.size() + 1; }

  /// What the cells of a process that has counted nothing hold: 0, or unset_gauge for min and max gauges.
  std::int64_t initial_value(std::uint32_t cell) const;

 private:
  std::uint32_t add(MetricType type, std::string_view name, std::string_view help, const MetricLabels& labels,
                    GaugeMerge merge, bool toolkit);
  std::uint32_t family_for(MetricType type, std::string_view name, std::string_view help,
                           const std::vector<std::string>& label_names, GaugeMerge merge);

  std::vector<MetricFamily> families_;
  std::vector<MetricSeries> series_;
  bool frozen_ = false;
};

/// True for a Prometheus metric name: [a-zA-Z_:][a-zA-Z0-9_:]*.
bool is_metric_name(std::string_view name);
/// True for a Prometheus label name: [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__".
bool is_label_name(std::string_view name);
/// A label value escaped for the text format: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);
/// A help text escaped for the text format: backslash and newline.
std::string escape_help(std::string_view help);
/// `{a="x",b="y"}` for these labels, escaped; "" for none.
std::string format_labels(const MetricLabels& labels);

namespace detail {
/// The row this process writes before a store exists (and after, in a process without a slot).
std::atomic<std::int64_t>* preliminary_cells();
}  // namespace detail

}  // namespace netserver
