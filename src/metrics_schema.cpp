#include "metrics_schema.hpp"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace netserver {

namespace {

std::atomic<std::int64_t> preliminary_row[MetricsSchema::max_cells];

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view type_name(MetricType type) { return type == MetricType::counter ? "counter" : "gauge"; }

void check_name(MetricType type, std::string_view name, std::string_view help, bool toolkit) {
  if (!is_metric_name(name))
    throw std::invalid_argument(fmt::format("metric name \"{}\": expected [a-zA-Z_:][a-zA-Z0-9_:]*", name));
  const bool reserved = name.starts_with("netserver_") || name.starts_with("process_");
  if (reserved && !toolkit)
    throw std::invalid_argument(fmt::format("metric name \"{}\": netserver_ and process_ are the toolkit's", name));
  if ((type == MetricType::counter) != name.ends_with("_total"))
    throw std::invalid_argument(fmt::format("metric name \"{}\": a counter's name ends in _total, a gauge's does not",
                                            name));
  if (help.empty() || help.find('\n') != std::string_view::npos)
    throw std::invalid_argument(fmt::format("metric \"{}\": the help text is one non-empty line", name));
}

std::vector<std::string> label_names_of(std::string_view metric, const MetricLabels& labels) {
  std::vector<std::string> names;
  for (const auto& [name, value] : labels) {
    if (!is_label_name(name) || name == "le" || name == "quantile")
      throw std::invalid_argument(fmt::format("metric \"{}\": bad label name \"{}\"", metric, name));
    if (std::find(names.begin(), names.end(), name) != names.end())
      throw std::invalid_argument(fmt::format("metric \"{}\": label \"{}\" given twice", metric, name));
    names.push_back(name);
  }
  return names;
}

}  // namespace

namespace detail {
std::atomic<std::int64_t>* metric_cells = preliminary_row;
std::atomic<std::int64_t>* preliminary_cells() { return preliminary_row; }
}  // namespace detail

bool is_metric_name(std::string_view name) {
  if (name.empty() || !(is_name_start(name[0]) || name[0] == ':')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return is_name_start(c) || is_digit(c) || c == ':'; });
}

bool is_label_name(std::string_view name) {
  if (name.empty() || !is_name_start(name[0]) || name.starts_with("__")) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return is_name_start(c) || is_digit(c); });
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_labels(const MetricLabels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (const auto& [name, value] : labels) {
    if (out.size() > 1) out += ',';
    out += fmt::format("{}=\"{}\"", name, escape_label_value(value));
  }
  return out + "}";
}

MetricsSchema& MetricsSchema::global() {
  static MetricsSchema schema;
  return schema;
}

Counter MetricsSchema::counter(std::string_view name, std::string_view help, const MetricLabels& labels, bool toolkit) {
  return Counter(detail::CellIndex{add(MetricType::counter, name, help, labels, GaugeMerge::sum, toolkit)});
}

Gauge MetricsSchema::gauge(std::string_view name, std::string_view help, const MetricLabels& labels, GaugeMerge merge,
                           bool toolkit) {
  const std::uint32_t cell = add(MetricType::gauge, name, help, labels, merge, toolkit);
  if (this == &global()) preliminary_row[cell].store(initial_value(cell), std::memory_order_relaxed);
  return Gauge(detail::CellIndex{cell});
}

std::int64_t MetricsSchema::initial_value(std::uint32_t cell) const {
  if (cell == 0 || cell > series_.size()) return 0;
  const MetricFamily& family = families_[series_[cell - 1].family];
  return family.type == MetricType::gauge && family.merge != GaugeMerge::sum ? unset_gauge : 0;
}

std::uint32_t MetricsSchema::add(MetricType type, std::string_view name, std::string_view help,
                                 const MetricLabels& labels, GaugeMerge merge, bool toolkit) {
  if (frozen_)
    throw std::logic_error(fmt::format("metric \"{}\" registered after the server laid out its metrics table: "
                                       "register every metric before (in main, a handler's constructor or a hook "
                                       "up to post_bind_hook)",
                                       name));
  check_name(type, name, help, toolkit);
  const std::uint32_t family = family_for(type, name, help, label_names_of(name, labels), merge);
  MetricSeries series{family, format_labels(labels)};
  for (const MetricSeries& known : series_)
    if (known.family == family && known.labels == series.labels)
      throw std::invalid_argument(fmt::format("metric series {}{} registered twice", name, series.labels));
  if (cells() >= max_cells)
    throw std::invalid_argument(fmt::format("metric \"{}\": more than {} series", name, max_cells - 1));
  series_.push_back(std::move(series));
  return cell_of(series_.size() - 1);
}

std::uint32_t MetricsSchema::family_for(MetricType type, std::string_view name, std::string_view help,
                                        const std::vector<std::string>& label_names, GaugeMerge merge) {
  for (std::uint32_t i = 0; i < families_.size(); ++i) {
    const MetricFamily& family = families_[i];
    if (family.name != name) continue;
    if (family.type != type || family.help != help || family.label_names != label_names || family.merge != merge)
      throw std::invalid_argument(fmt::format("metric \"{}\" registered again as a {} with other help, labels or "
                                              "merge than the first time",
                                              name, type_name(type)));
    return i;
  }
  families_.push_back({std::string(name), std::string(help), type, merge, label_names});
  return static_cast<std::uint32_t>(families_.size() - 1);
}

Counter register_counter(std::string_view name, std::string_view help, const MetricLabels& labels) {
  return MetricsSchema::global().counter(name, help, labels);
}

Gauge register_gauge(std::string_view name, std::string_view help, const MetricLabels& labels, GaugeMerge merge) {
  return MetricsSchema::global().gauge(name, help, labels, merge);
}

}  // namespace netserver
