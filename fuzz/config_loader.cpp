// The YAML config and command-line loader. Input: YAML text, then after the first NUL byte the
// command-line arguments, NUL-separated. Any outcome but a clean load or a ConfigError is a bug;
// a configuration that loads dumps (--check-config) to YAML that loads back to the same values.

#include <cstdint>
#include <string>
#include <vector>

#include <netserver/netserver.hpp>

#include "fuzz_check.hpp"

namespace {

class NullHandler : public netserver::LineHandler {
  void on_line(netserver::Session&, std::string_view) override {}
};

const netserver::Options& schema() {
  static netserver::Server server("fuzz", std::make_shared<NullHandler>());  // every personality's keys
  return server.options();
}

std::vector<std::string> split_arguments(std::string_view text) {
  std::vector<std::string> arguments{"fuzz"};
  while (!text.empty()) {
    const std::size_t end = text.find('\0');
    arguments.emplace_back(text.substr(0, end));
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  }
  return arguments;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string yaml(input.substr(0, nul));
  const std::vector<std::string> arguments =
      split_arguments(nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1));
  std::vector<const char*> argv;
  for (const std::string& argument : arguments) argv.push_back(argument.c_str());
  try {
    netserver::CommandLine command_line =
        netserver::CommandLine::parse(static_cast<int>(argv.size()), argv.data(), schema());
    command_line.config_file.clear();  // the YAML comes from the input, never from a file it names
    netserver::Config config(schema());
    config.load_yaml(yaml, "fuzz.yaml");
    netserver::Config overridden = netserver::Config::load(schema(), command_line);
    netserver::Config again(schema());
    again.load_yaml(config.dump(), "dump.yaml");  // must not throw: the dump is valid YAML
    for (const netserver::Option& option : schema().all()) FUZZ_CHECK(again.value(option.key) == config.value(option.key));
  } catch (const netserver::ConfigError&) {
  }
  return 0;
}
