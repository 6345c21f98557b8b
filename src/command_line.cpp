#include <algorithm>

#include <fmt/format.h>

#include "netserver/config.hpp"
#include "netserver/errors.hpp"
#include "redact.hpp"

namespace netserver {

namespace {

std::string normalise_key(std::string_view key) {
  std::string out(key);
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

[[noreturn]] void fail(const std::string& argument, const std::string& problem) {
  throw ConfigError(without_passwords(fmt::format("command line: {}: {} (see --help)", argument, problem)));
}

}  // namespace

CommandLine CommandLine::parse(int argc, const char* const* argv, const Options& options) {
  CommandLine result;
  result.program = argc > 0 ? argv[0] : "server";
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "-h" || argument == "--help") { result.help = true; continue; }
    if (argument == "-V" || argument == "--version") { result.version = true; continue; }
    if (argument == "--check-config" || argument == "--check_config") { result.check_config = true; continue; }
    if (!argument.starts_with("--") || argument.size() == 2) {
      if (argument == "-c" && i + 1 < argc) {
        if (argv[i + 1][0] == '\0') fail("-c \"\"", "needs a file name (-c FILE)");
        result.config_file = argv[++i];
        continue;
      }
      fail(argument, "unexpected argument; options look like --key=value");
    }
    const std::size_t equals = argument.find('=');
    const std::string key = normalise_key(argument.substr(2, equals == std::string::npos ? std::string::npos : equals - 2));
    std::string value;
    std::string shown = argument;
    const Option* option = options.find(key);
    if (equals != std::string::npos) {
      value = argument.substr(equals + 1);
    } else if (option && option->type == ValueType::boolean) {
      value = "true";
    } else if (i + 1 < argc && !std::string_view(argv[i + 1]).starts_with("--")) {
      value = argv[++i];
      shown += " " + value;
    } else if (key == "config" || option) {
      fail(argument, "needs a value (--" + key + "=VALUE)");
    }
    if (key == "config") {
      if (value.empty()) fail(shown, "needs a file name (--config=FILE)");  // not "no file": defaults would bind everywhere
      result.config_file = value;
      continue;
    }
    result.overrides.push_back({key, value, shown});
  }
  return result;
}

}  // namespace netserver
