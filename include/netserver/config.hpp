#pragma once
/// The effective configuration: defaults < YAML file < command line, each value remembering where
/// it came from so that errors and --check-config can say so.

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "netserver/options.hpp"

namespace netserver {

/// Where a value came from.
struct Origin {
  /// The three sources, from weakest to strongest.
  enum class Kind { built_in, file, command_line };
  Kind kind = Kind::built_in;  ///< which source set the value
  std::string where;  ///< "conf/echo.yaml:3:7" for a file, the argument for the command line
  /// "default", "conf/echo.yaml:3:7" or "command line --port=9000".
  std::string describe() const;
};

/// The parsed command line: the commands, the config file, and the key overrides in order.
struct CommandLine {
  /// One `--key=value` (or `--key value`, or a bare boolean `--key`).
  struct Override {
    std::string key;       ///< normalised: dashes become underscores
    std::string value;     ///< raw text
    std::string argument;  ///< as typed, for error messages
  };
  std::string program;      ///< argv[0]
  std::string config_file;  ///< --config FILE (empty: none)
  bool check_config = false;  ///< --check-config
  bool help = false;          ///< --help / -h
  bool version = false;       ///< --version / -V
  std::vector<Override> overrides;  ///< --key=value in the order given (the last one wins)

  /// Parses argv against the schema (which knows which keys are booleans). Throws ConfigError.
  static CommandLine parse(int argc, const char* const* argv, const Options& options);
};

/// The effective configuration. Typed getters throw std::logic_error for an unknown key or a
/// key of another type: that is a programming error, not a user's.
class Config {
 public:
  /// Defaults only.
  explicit Config(const Options& options);
  /// Defaults, then the YAML file named on the command line, then the command-line overrides.
  /// Throws ConfigError naming file:line:column (or the argument) and what is wrong.
  static Config load(const Options& options, const CommandLine& command_line);
  /// Reads YAML `text` over the values set so far, as the contents of the config file `name`
  /// (errors name `name`:line:column). What load() does with the file; fuzzers call it with
  /// arbitrary bytes. Throws ConfigError.
  void load_yaml(const std::string& text, const std::string& name);

  bool boolean(std::string_view key) const;                           ///< a boolean key
  std::int64_t integer(std::string_view key) const;                   ///< an integer key
  double seconds(std::string_view key) const;                         ///< a seconds key, as a number
  Duration duration(std::string_view key) const;                      ///< a seconds key, as a Duration
  std::int64_t bytes(std::string_view key) const;                     ///< a bytes key
  const std::string& string(std::string_view key) const;              ///< a string key
  const std::vector<std::string>& list(std::string_view key) const;   ///< a string_list key
  const std::vector<Record>& records(std::string_view key) const;     ///< a records key
  const Value& value(std::string_view key) const;                     ///< any key
  const Origin& origin(std::string_view key) const;                   ///< where the value came from
  /// "prefork.max_servers = 12 (conf.yaml:5:3)", for consistency errors between keys.
  std::string describe(std::string_view key) const;
  /// Sets a value (validated by the caller); used by loading and by tests.
  void set(std::string_view key, Value value, Origin origin);
  /// The config file that was read ("" when none).
  const std::string& file() const { return file_; }
  /// The effective configuration as YAML that loads back to the same values, each key
  /// commented with its origin.
  std::string dump() const;
  /// The schema this configuration follows.
  const Options& options() const { return *options_; }

 private:
  struct Entry {
    Value value;
    Origin origin;
  };
  const Entry& entry(std::string_view key) const;
  void load_file(const std::string& path);
  void apply(const CommandLine& command_line);

  const Options* options_;
  std::map<std::string, Entry, std::less<>> entries_;
  std::string file_;
};

}  // namespace netserver
