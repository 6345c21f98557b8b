#pragma once
/// The configuration schema: every key a server understands, its type, default and limits.
/// Core keys, each personality's block (`prefork.max_servers`) and an application's own keys all
/// live in one Options table, so unknown keys are caught and the nearest valid key suggested.

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace netserver {

/// How netserver passes a length of time: a steady-clock duration. Write it with the chrono
/// literals (`5s`, `500ms`); from a number of seconds with from_seconds().
using Duration = std::chrono::steady_clock::duration;
/// A timeout that never expires.
inline constexpr Duration forever = Duration::max();
/// `seconds` (fractions allowed) as a Duration; infinity and anything past what a Duration
/// holds become `forever`, negative values zero.
Duration from_seconds(double seconds);
/// A Duration as fractional seconds (for messages); `forever` is infinity.
double to_seconds(Duration duration);

/// The kinds of value a key can hold.
enum class ValueType {
  boolean,      ///< true/false (also yes/no, on/off, 1/0)
  integer,      ///< whole number within [min, max]
  seconds,      ///< duration, fractional seconds allowed, optional unit: 1.5, 500ms, 2m
  bytes,        ///< size, optional binary unit: 65536, 64K, 1MiB
  string,       ///< text, trimmed; restricted to `choices` when those are given
  string_list,  ///< list of texts: a YAML sequence, or comma-separated on the command line
  records,      ///< list of mappings with named fields (tls.certificates): YAML, also on the command line
};

/// One entry of a `records` key: its fields by name, each a list of texts (a scalar field holds
/// one), and where it was written, for errors about it.
struct Record {
  std::map<std::string, std::vector<std::string>, std::less<>> fields;  ///< field name -> its texts
  std::string where;  ///< "conf.yaml:7:5" (empty when given on the command line)
  /// The field's only text, or "" when it is not set.
  std::string text(std::string_view field) const;
  /// Equal fields (where they were written does not count, as a Value's origin does not).
  bool operator==(const Record& other) const { return fields == other.fields; }
};

/// A configuration value. seconds are held as double, bytes as int64.
using Value = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>, std::vector<Record>>;

/// One key of the schema.
struct Option {
  std::string key;               ///< full dotted name: "port", "prefork.max_servers"
  ValueType type = ValueType::string;  ///< how text is converted and checked
  Value fallback;                ///< the default
  std::string help;              ///< one line for --help
  double min = std::numeric_limits<double>::lowest();  ///< numeric lower bound (inclusive)
  double max = std::numeric_limits<double>::max();     ///< numeric upper bound (inclusive)
  std::vector<std::string> choices;  ///< allowed strings (empty: any)
  /// Extra validation of a converted value: returns "" when fine, else what is wrong with it.
  std::function<std::string(const Value&)> check;
  /// The field names a `records` entry may use (the first is required).
  std::vector<std::string> fields;
  /// A secret (a key, a password): --check-config's dump, describe() and errors show "***".
  bool secret = false;

  // Makers, one per type: Option::integer("port", 8000, 0, 65535, "TCP port").
  /// A boolean key.
  static Option flag(std::string key, bool fallback, std::string help);
  /// A whole number within [min, max].
  static Option integer(std::string key, std::int64_t fallback, double min, double max, std::string help);
  /// A duration in seconds within [min, max] ("30", "1.5", "500ms", "2m").
  static Option duration(std::string key, double fallback, double min, double max, std::string help);
  /// A size in bytes within [min, max] ("65536", "64K", "1M").
  static Option size(std::string key, std::int64_t fallback, double min, double max, std::string help);
  /// A text key (restrict it with with_choices).
  static Option text(std::string key, std::string fallback, std::string help);
  /// A list of texts (a YAML sequence, or comma-separated on the command line).
  static Option list(std::string key, std::vector<std::string> fallback, std::string help);
  /// A list of mappings whose keys are `fields` (the first one required in every entry), each
  /// field a text or a list of texts; empty by default.
  static Option records(std::string key, std::vector<std::string> fields, std::string help);
  /// Restricts a text option to these values.
  Option&& with_choices(std::vector<std::string> allowed) &&;
  /// Adds a validation function.
  Option&& with_check(std::function<std::string(const Value&)> function) &&;
  /// Marks the value as a secret: never printed.
  Option&& as_secret() &&;
};

/// The schema. Keys keep the order they were added in (for --help and --check-config).
class Options {
 public:
  /// Adds a key; a key added twice replaces the earlier one. Returns the stored option.
  Option& add(Option option);
  /// The option for `key`, or nullptr.
  const Option* find(std::string_view key) const;
  /// Changes the default of an existing key (an application's own defaults). Throws
  /// std::invalid_argument for an unknown key or a value of the wrong type.
  void set_default(std::string_view key, Value value);
  /// True when some key starts with "block." (a personality's or application's block).
  bool is_block(std::string_view block) const;
  /// The valid key closest to `key` by edit distance, or "" when nothing is close.
  std::string nearest(std::string_view key) const;
  /// All options in insertion order.
  const std::vector<Option>& all() const { return options_; }

 private:
  Option* find_mutable(std::string_view key);
  std::vector<Option> options_;
};

/// Converts text (from YAML or the command line) to the option's type and validates it.
/// Returns "" on success (with `out` set), else what is wrong, e.g.
/// `expected an integer from 0 to 65535, got "abc"`.
std::string parse_value(const Option& option, std::string_view text, Value& out);
/// Validates an already converted value (ranges, choices, check). "" when fine.
std::string validate_value(const Option& option, const Value& value);
/// What the option accepts, e.g. "an integer from 0 to 65535".
std::string describe_type(const Option& option);
/// The value as it would be written in YAML ("64K" stays 65536; lists as [a, b]).
std::string format_value(const Value& value);
/// Removes leading and trailing blanks (spaces, tabs, CR, LF).
std::string_view trim(std::string_view text);

}  // namespace netserver
