#pragma once
// The line commands of the test-only probe servers (probe_server, sequential_probe): "NAME ARGUMENT".

#include <charconv>
#include <string_view>

namespace probe {

struct Command {
  std::string_view name;      ///< the first word
  std::string_view argument;  ///< the rest after one space; empty when there is none
};

/// Splits a probe line at its first space.
inline Command parse(std::string_view line) {
  const std::size_t space = line.find(' ');
  return {line.substr(0, space), space == std::string_view::npos ? std::string_view() : line.substr(space + 1)};
}

/// The number an argument starts with; 0 when it starts with none.
inline double number(std::string_view text) {
  double value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

}  // namespace probe
