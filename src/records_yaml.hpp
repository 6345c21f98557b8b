#pragma once
/// Reading a `records` option (a list of mappings, tls.certificates) from YAML: the config file's
/// node, or the text of a command-line argument.

#include <string>

#include <yaml-cpp/yaml.h>

#include "netserver/options.hpp"

namespace netserver {

/// Converts `node` (a sequence of mappings, or nothing) for the records option `option`; each
/// entry's `where` is `file`:line:column ("" for the command line). Returns "" with `out` set, or
/// what is wrong with `at` set to where it is.
std::string records_from_yaml(const Option& option, const YAML::Node& node, const std::string& file, Value& out,
                              YAML::Mark& at);

}  // namespace netserver
