#include "netserver/options.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "records_yaml.hpp"

namespace netserver {

namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

Duration from_seconds(double seconds) {
  if (!(seconds > 0)) return Duration::zero();
  const std::chrono::duration<double> wanted(seconds);
  if (wanted >= std::chrono::duration<double>(forever)) return forever;
  return std::chrono::duration_cast<Duration>(wanted);
}

double to_seconds(Duration duration) {
  if (duration == forever) return std::numeric_limits<double>::infinity();
  return std::chrono::duration<double>(duration).count();
}

namespace {

bool has_bounds(double bound) {
  return bound != std::numeric_limits<double>::lowest() && bound != std::numeric_limits<double>::max();
}

std::string format_number(double number) { return fmt::format("{}", number); }

std::string range_text(const Option& option) {
  const bool low = has_bounds(option.min), high = has_bounds(option.max);
  if (low && high) return fmt::format(" from {} to {}", format_number(option.min), format_number(option.max));
  if (low) return fmt::format(" of at least {}", format_number(option.min));
  if (high) return fmt::format(" of at most {}", format_number(option.max));
  return "";
}

// Splits "12.5ms" into the number and its unit suffix.
bool split_number(std::string_view text, double& number, std::string& unit) {
  const char* begin = text.data();
  const char* end = begin + text.size();
  auto [stop, error] = std::from_chars(begin, end, number);
  if (error != std::errc() || stop == begin) return false;
  unit = lower(trim(std::string_view(stop, static_cast<std::size_t>(end - stop))));
  return std::isfinite(number);
}

bool parse_boolean(std::string_view text, Value& out) {
  static const std::array<std::string_view, 4> yes{"true", "yes", "on", "1"};
  static const std::array<std::string_view, 4> no{"false", "no", "off", "0"};
  const std::string word = lower(text);
  if (std::find(yes.begin(), yes.end(), word) != yes.end()) { out = true; return true; }
  if (std::find(no.begin(), no.end(), word) != no.end()) { out = false; return true; }
  return false;
}

bool parse_integer(std::string_view text, Value& out) {
  std::int64_t number = 0;
  const char* end = text.data() + text.size();
  auto [stop, error] = std::from_chars(text.data() + (text.starts_with('+') ? 1 : 0), end, number);
  if (error != std::errc() || stop != end) return false;
  out = number;
  return true;
}

bool parse_seconds(std::string_view text, Value& out) {
  double number = 0;
  std::string unit;
  if (!split_number(text, number, unit)) return false;
  if (unit == "ms") number /= 1000.0;
  else if (unit == "m" || unit == "min") number *= 60.0;
  else if (unit == "h") number *= 3600.0;
  else if (!unit.empty() && unit != "s") return false;
  out = number;
  return true;
}

bool parse_bytes(std::string_view text, Value& out) {
  double number = 0;
  std::string unit;
  if (!split_number(text, number, unit)) return false;
  if (!unit.empty() && unit.back() == 'b') unit.pop_back();         // "KB", "KiB" -> "k", "ki"
  if (!unit.empty() && unit.back() == 'i') unit.pop_back();
  double scale = 1;
  if (unit == "k") scale = 1024.0;
  else if (unit == "m") scale = 1024.0 * 1024.0;
  else if (unit == "g") scale = 1024.0 * 1024.0 * 1024.0;
  else if (!unit.empty()) return false;
  const double bytes = number * scale;
  if (bytes != std::floor(bytes) || bytes > 9.0e18 || bytes < -9.0e18) return false;
  out = static_cast<std::int64_t>(bytes);
  return true;
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> items;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    if (!item.empty()) items.emplace_back(item);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return items;
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("prot" ~ "port").
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

bool needs_quotes(std::string_view text) {
  if (text.empty()) return true;
  const std::string_view special = ":#[]{},&*!|>'\"%@`";
  return std::any_of(text.begin(), text.end(), [&](char c) {
    return special.find(c) != std::string_view::npos || std::iscntrl(static_cast<unsigned char>(c));
  }) || text.front() == ' ' || text.front() == '-' || text.front() == '?';
}

// A YAML double-quoted scalar that reads back as `text`: control characters are escaped, since
// YAML folds a raw line break inside quotes into a space.
std::string quote(std::string_view text) {
  if (!needs_quotes(text)) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (std::iscntrl(static_cast<unsigned char>(c))) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

}  // namespace

std::string_view trim(std::string_view text) {
  const std::string_view blanks = " \t\r\n";
  const std::size_t first = text.find_first_not_of(blanks);
  if (first == std::string_view::npos) return {};
  const std::size_t last = text.find_last_not_of(blanks);
  return text.substr(first, last - first + 1);
}

namespace {
Option make(std::string key, ValueType type, Value fallback, std::string help, double min, double max) {
  Option option;
  option.key = std::move(key);
  option.type = type;
  option.fallback = std::move(fallback);
  option.help = std::move(help);
  option.min = min;
  option.max = max;
  return option;
}
constexpr double lowest = std::numeric_limits<double>::lowest();
constexpr double highest = std::numeric_limits<double>::max();
}  // namespace

Option Option::flag(std::string key, bool fallback, std::string help) {
  return make(std::move(key), ValueType::boolean, fallback, std::move(help), lowest, highest);
}
Option Option::integer(std::string key, std::int64_t fallback, double min, double max, std::string help) {
  return make(std::move(key), ValueType::integer, fallback, std::move(help), min, max);
}
Option Option::duration(std::string key, double fallback, double min, double max, std::string help) {
  return make(std::move(key), ValueType::seconds, fallback, std::move(help), min, max);
}
Option Option::size(std::string key, std::int64_t fallback, double min, double max, std::string help) {
  return make(std::move(key), ValueType::bytes, fallback, std::move(help), min, max);
}
Option Option::text(std::string key, std::string fallback, std::string help) {
  return make(std::move(key), ValueType::string, std::move(fallback), std::move(help), lowest, highest);
}
Option Option::list(std::string key, std::vector<std::string> fallback, std::string help) {
  return make(std::move(key), ValueType::string_list, std::move(fallback), std::move(help), lowest, highest);
}
Option Option::records(std::string key, std::vector<std::string> fields, std::string help) {
  Option option = make(std::move(key), ValueType::records, std::vector<Record>{}, std::move(help), lowest, highest);
  option.fields = std::move(fields);
  return option;
}
Option&& Option::with_choices(std::vector<std::string> allowed) && {
  choices = std::move(allowed);
  return std::move(*this);
}
Option&& Option::with_check(std::function<std::string(const Value&)> function) && {
  check = std::move(function);
  return std::move(*this);
}

Option&& Option::as_secret() && {
  secret = true;
  return std::move(*this);
}

Option& Options::add(Option option) {
  if (Option* existing = find_mutable(option.key)) {
    *existing = std::move(option);
    return *existing;
  }
  return options_.emplace_back(std::move(option));
}

Option* Options::find_mutable(std::string_view key) {
  auto it = std::find_if(options_.begin(), options_.end(), [&](const Option& o) { return o.key == key; });
  return it == options_.end() ? nullptr : &*it;
}

const Option* Options::find(std::string_view key) const {
  return const_cast<Options*>(this)->find_mutable(key);
}

void Options::set_default(std::string_view key, Value value) {
  Option* option = find_mutable(key);
  if (!option) throw std::invalid_argument(fmt::format("set_default: unknown key '{}'", key));
  const std::string problem = validate_value(*option, value);
  if (!problem.empty()) throw std::invalid_argument(fmt::format("set_default: {}: {}", key, problem));
  option->fallback = std::move(value);
}

bool Options::is_block(std::string_view block) const {
  return std::any_of(options_.begin(), options_.end(), [&](const Option& o) {
    return o.key.size() > block.size() && o.key.starts_with(block) && o.key[block.size()] == '.';
  });
}

std::string Options::nearest(std::string_view key) const {
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, key.size() / 3) + 1;
  auto consider = [&](std::string_view candidate) {
    const std::size_t distance = edit_distance(key, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  };
  for (const Option& option : options_) {
    consider(option.key);
    if (const std::size_t dot = option.key.find('.'); dot != std::string::npos)
      consider(std::string_view(option.key).substr(0, dot));  // a block name: "prefork"
  }
  return best;
}

std::string describe_type(const Option& option) {
  switch (option.type) {
    case ValueType::boolean: return "true or false";
    case ValueType::integer: return "an integer" + range_text(option);
    case ValueType::seconds: return "a duration in seconds (e.g. 30, 1.5, 500ms)" + range_text(option);
    case ValueType::bytes: return "a size in bytes (e.g. 65536, 64K, 1M)" + range_text(option);
    case ValueType::string_list: return "a list of strings";
    case ValueType::records: return fmt::format("a list of mappings of {}", fmt::join(option.fields, ", "));
    case ValueType::string:
      if (!option.choices.empty()) return "one of: " + fmt::format("{}", fmt::join(option.choices, ", "));
      return "a string";
  }
  return "a value";
}

std::string validate_value(const Option& option, const Value& value) {
  double number = 0;
  bool numeric = true;
  if (auto* i = std::get_if<std::int64_t>(&value)) number = static_cast<double>(*i);
  else if (auto* d = std::get_if<double>(&value)) number = *d;
  else numeric = false;
  if (numeric && (number < option.min || number > option.max))
    return fmt::format("expected {}, got {}", describe_type(option), format_value(value));
  if (auto* s = std::get_if<std::string>(&value); s && !option.choices.empty() &&
      std::find(option.choices.begin(), option.choices.end(), *s) == option.choices.end())
    return fmt::format("expected {}, got \"{}\"", describe_type(option), *s);
  return option.check ? option.check(value) : std::string();
}

std::string parse_value(const Option& option, std::string_view raw, Value& out) {
  const std::string_view text = trim(raw);
  bool ok = true;
  switch (option.type) {
    case ValueType::boolean: ok = parse_boolean(text, out); break;
    case ValueType::integer: ok = parse_integer(text, out); break;
    case ValueType::seconds: ok = parse_seconds(text, out); break;
    case ValueType::bytes: ok = parse_bytes(text, out); break;
    case ValueType::string: out = std::string(text); break;
    case ValueType::string_list: out = split_list(text); break;
    case ValueType::records: {  // YAML flow text: [{cert_file: a.pem, key_file: a.key}]
      YAML::Node node;
      try {
        node = YAML::Load(std::string(text));
      } catch (const YAML::Exception& e) {
        return fmt::format("expected {} in YAML flow style ([{{{}: ...}}]): {}", describe_type(option), option.fields.front(),
                           e.msg);
      }
      YAML::Mark at;
      if (std::string problem = records_from_yaml(option, node, "", out, at); !problem.empty()) return problem;
      break;
    }
  }
  if (!ok) return fmt::format("expected {}, got \"{}\"", describe_type(option), text);
  return validate_value(option, out);
}

std::string format_value(const Value& value) {
  struct Formatter {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return format_number(d); }
    std::string operator()(const std::string& s) const { return quote(s); }
    std::string operator()(const std::vector<std::string>& list) const {
      std::vector<std::string> quoted;
      for (const std::string& item : list) quoted.push_back(quote(item));
      return fmt::format("[{}]", fmt::join(quoted, ", "));
    }
    std::string operator()(const std::vector<Record>& records) const {
      std::vector<std::string> entries;
      for (const Record& record : records) {
        std::vector<std::string> fields;
        for (const auto& [name, texts] : record.fields)
          fields.push_back(fmt::format("{}: {}", name, texts.size() == 1 ? quote(texts.front()) : (*this)(texts)));
        entries.push_back(fmt::format("{{{}}}", fmt::join(fields, ", ")));
      }
      return fmt::format("[{}]", fmt::join(entries, ", "));
    }
  };
  return std::visit(Formatter{}, value);
}

std::string Record::text(std::string_view field) const {
  const auto found = fields.find(field);
  return found == fields.end() || found->second.empty() ? std::string() : found->second.front();
}

std::string records_from_yaml(const Option& option, const YAML::Node& node, const std::string& file, Value& out,
                              YAML::Mark& at) {
  at = node.Mark();
  std::vector<Record> records;
  if (node.IsNull()) {
    out = std::move(records);
    return "";
  }
  const std::string required = option.fields.empty() ? std::string() : option.fields.front();
  if (!node.IsSequence()) return fmt::format("expected {}, got a single value", describe_type(option));
  for (const YAML::Node& entry : node) {
    at = entry.Mark();
    if (!entry.IsMap()) return fmt::format("expected {}: each entry is a mapping ({}: FILE, ...)", describe_type(option), required);
    Record record;
    if (!file.empty()) record.where = fmt::format("{}:{}:{}", file, at.line + 1, at.column + 1);
    for (const auto& pair : entry) {
      at = pair.first.Mark();
      const std::string name(pair.first.IsScalar() ? trim(pair.first.Scalar()) : std::string_view());
      if (std::find(option.fields.begin(), option.fields.end(), name) == option.fields.end())
        return fmt::format("unknown field '{}' in an entry (the fields are {})", name, fmt::join(option.fields, ", "));
      if (record.fields.count(name)) return fmt::format("field '{}' given twice in one entry", name);
      std::vector<std::string>& texts = record.fields[name];
      at = pair.second.Mark();
      if (pair.second.IsScalar()) {
        texts.emplace_back(trim(pair.second.Scalar()));
        continue;
      }
      if (!pair.second.IsSequence()) return fmt::format("field '{}': expected a text or a list of texts", name);
      for (const YAML::Node& item : pair.second) {
        if (!item.IsScalar()) return fmt::format("field '{}': expected a text or a list of texts", name);
        texts.emplace_back(trim(item.Scalar()));
      }
    }
    at = entry.Mark();
    if (!required.empty() && record.text(required).empty()) return fmt::format("an entry without {}", required);
    records.push_back(std::move(record));
  }
  at = node.Mark();
  out = std::move(records);
  return validate_value(option, out);
}

}  // namespace netserver
