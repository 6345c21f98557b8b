#include "netserver/config.hpp"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "netserver/errors.hpp"
#include "records_yaml.hpp"
#include "redact.hpp"

namespace netserver {

namespace {

// A secret as the dump shows it: that it is set, never what it is (a quoted "***" loads back as
// text, so a dumped file still parses).
std::string shown_secret(const Value& value) {
  const auto* text = std::get_if<std::string>(&value);
  return text && text->empty() ? "\"\"" : "\"***\"";
}

}  // namespace

std::string without_passwords(std::string_view text) {
  std::string out;
  for (;;) {
    const std::size_t scheme = text.find("://");
    if (scheme == std::string_view::npos) break;
    const std::size_t start = scheme + 3;
    const std::size_t end = std::min(text.find_first_of(" \t\r\n\"'", start), text.size());
    const std::size_t at = text.substr(0, end).rfind('@');
    if (at == std::string_view::npos || at < start) {
      out.append(text.substr(0, start));
      text.remove_prefix(start);
      continue;
    }
    const std::size_t colon = text.substr(start, at - start).find(':');
    out.append(text.substr(0, colon == std::string_view::npos ? start : start + colon + 1));
    out.append("***");
    text.remove_prefix(at);
  }
  out.append(text);
  return out;
}

namespace {


std::string position(const std::string& file, const YAML::Mark& mark) {
  return fmt::format("{}:{}:{}", file, mark.line + 1, mark.column + 1);
}

std::string unknown_key_text(const Options& options, const std::string& key) {
  const std::string suggestion = options.nearest(key);
  if (suggestion.empty()) return fmt::format("unknown key '{}'", key);
  return fmt::format("unknown key '{}'; did you mean '{}'?", key, suggestion);
}

const char* node_kind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "a scalar";
  }
}

// Converts one YAML value for `option`; returns "" or what is wrong.
std::string convert(const Option& option, const YAML::Node& node, Value& out) {
  if (option.type == ValueType::string_list && node.IsSequence()) {
    std::vector<std::string> items;
    for (const YAML::Node& item : node) {
      if (!item.IsScalar()) return fmt::format("expected {}, got {} in the list", describe_type(option), node_kind(item));
      items.emplace_back(trim(item.Scalar()));
    }
    out = std::move(items);
    return validate_value(option, out);
  }
  if (!node.IsScalar()) return fmt::format("expected {}, got {}", describe_type(option), node_kind(node));
  return parse_value(option, node.Scalar(), out);
}

// Line `line` (0-based) of `text`.
std::string_view line_of(std::string_view text, int line) {
  for (int i = 0; i < line; ++i) {
    const std::size_t end = text.find('\n');
    if (end == std::string_view::npos) return {};
    text.remove_prefix(end + 1);
  }
  return text.substr(0, text.find('\n'));
}

// A flow list whose entries hold YAML syntax ([tls://[::]:8443, 127.0.0.1:8000]): quoting the
// whole list would make it one entry, so the hint quotes each entry.
std::string flow_list_hint(std::string_view list) {
  std::string quoted;
  std::string_view rest = list.substr(1, list.size() - 2);
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string_view entry = trim(rest.substr(0, comma));
    if (!quoted.empty()) quoted += ", ";
    quoted += entry.starts_with('"') || entry.starts_with('\'') ? std::string(entry) : fmt::format("\"{}\"", entry);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return fmt::format(" (inside a [ ] list, '[', ']' and ',' are YAML syntax: quote each entry: [{}])", quoted);
}

// For a syntax error on `line`: when its value starts with a character YAML reserves (host: *,
// - [::1]:8000), the hint to quote it; else "". Those values parse as an alias or a flow list.
std::string quoting_hint(std::string_view text, int line) {
  std::string_view value = trim(line_of(text, line));
  while (value.starts_with("- ")) value = trim(value.substr(2));
  if (value.empty() || std::string_view("*&[{!@`").find(value.front()) == std::string_view::npos) {
    const std::size_t colon = value.find(": ");
    if (colon == std::string_view::npos) return "";
    value = trim(value.substr(colon + 2));
    if (value.empty() || std::string_view("*&[{!@`").find(value.front()) == std::string_view::npos) return "";
  }
  const std::size_t comment = value.find(" #");
  value = trim(value.substr(0, comment));
  if (value.size() > 2 && value.front() == '[' && value.back() == ']' && value.find(',') != std::string_view::npos)
    return without_passwords(flow_list_hint(value));
  return without_passwords(fmt::format(" (a value starting with '{}' is YAML syntax: if {} is meant as text, quote it: \"{}\")",
                                       value.front(), value, value));
}

}  // namespace

namespace {

// The origin as one line of text: an argument typed with a newline in it must not put a line of
// its own into --check-config's dump (or into a log line).
std::string one_line(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (byte < 0x20 || byte == 0x7f) out += fmt::format("\\x{:02x}", byte);
    else out += c;
  }
  return out;
}

}  // namespace

std::string Origin::describe() const {
  switch (kind) {
    case Kind::built_in: return "default";
    case Kind::file: return one_line(where);
    case Kind::command_line: return "command line " + one_line(where);
  }
  return one_line(where);
}

Config::Config(const Options& options) : options_(&options) {
  for (const Option& option : options.all()) entries_[option.key] = Entry{option.fallback, Origin{}};
}

Config Config::load(const Options& options, const CommandLine& command_line) {
  Config config(options);
  if (!command_line.config_file.empty()) config.load_file(command_line.config_file);
  config.apply(command_line);
  return config;
}

void Config::load_file(const std::string& path) {
  file_ = path;
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored))  // ifstream opens a directory and reads nothing
    throw ConfigError(fmt::format("cannot read config file '{}': it is a directory", path));
  std::ifstream in(path);
  if (!in) throw ConfigError(system_error_text(fmt::format("cannot read config file '{}'", path), errno));
  std::stringstream text;
  text << in.rdbuf();
  load_yaml(text.str(), path);
}

void Config::load_yaml(const std::string& text, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}: YAML syntax error: {}{}", position(path, e.mark), e.msg,
                                  quoting_hint(text, e.mark.line)));
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) throw ConfigError(position(path, root.Mark()) + ": expected a mapping of keys to values");

  // Walks one mapping; `prefix` is "" at the top and "prefork." inside a block. `seen` spans the
  // whole file: "prefork.max_servers: 10" and a "prefork:" block setting max_servers collide.
  std::map<std::string, YAML::Mark> seen;
  auto walk = [&](auto&& self, const YAML::Node& map, const std::string& prefix) -> void {
    for (const auto& pair : map) {
      const YAML::Node& key_node = pair.first;
      const YAML::Node& value_node = pair.second;
      if (!key_node.IsScalar()) throw ConfigError(position(path, key_node.Mark()) + ": keys must be plain names");
      const std::string key = prefix + std::string(trim(key_node.Scalar()));
      if (auto [it, fresh] = seen.emplace(key, key_node.Mark()); !fresh)
        throw ConfigError(fmt::format("{}: duplicate key '{}' (first set at line {})", position(path, key_node.Mark()),
                                      key, it->second.line + 1));
      if (const Option* option = options_->find(key)) {
        Value value;
        YAML::Mark at = value_node.Mark();
        const std::string problem = option->type == ValueType::records
                                        ? records_from_yaml(*option, value_node, path, value, at)
                                        : convert(*option, value_node, value);
        if (!problem.empty()) throw ConfigError(fmt::format("{}: {}: {}", position(path, at), key, problem));
        set(key, std::move(value), Origin{Origin::Kind::file, position(path, value_node.Mark())});
      } else if (options_->is_block(key)) {
        if (value_node.IsNull()) continue;
        if (!value_node.IsMap())
          throw ConfigError(fmt::format("{}: {}: expected a mapping of {} options, got {}",
                                        position(path, value_node.Mark()), key, key, node_kind(value_node)));
        self(self, value_node, key + ".");
      } else {
        throw ConfigError(position(path, key_node.Mark()) + ": " + unknown_key_text(*options_, key));
      }
    }
  };
  walk(walk, root, "");
}

void Config::apply(const CommandLine& command_line) {
  std::set<std::string> lists_from_command_line;
  for (const CommandLine::Override& o : command_line.overrides) {
    const Option* option = options_->find(o.key);
    // As errors and --check-config show it; a secret's value never.
    // A mistyped secret key (the nearest known key is a secret) is masked too.
    const Option* meant = option ? option : options_->find(options_->nearest(o.key));
    const std::string shown = meant && meant->secret ? "--" + o.key + "=***" : without_passwords(o.argument);
    if (!option) {
      if (options_->is_block(o.key))
        throw ConfigError(fmt::format("command line: {}: '{}' is a block; set its keys as --{}.KEY=VALUE",
                                      shown, o.key, o.key));
      throw ConfigError(fmt::format("command line: {}: {} (see --help)", shown, unknown_key_text(*options_, o.key)));
    }
    Value value;
    // Never YAML: --listen=[::1]:8000 is an address, not a flow list (repeat the flag or use commas).
    std::string problem = parse_value(*option, o.value, value);
    if (problem.empty() && option->type == ValueType::string_list && !lists_from_command_line.insert(o.key).second) {
      // A repeated list key accumulates: --listen=a --listen=b.
      auto items = std::get<std::vector<std::string>>(entry(o.key).value);
      const auto& more = std::get<std::vector<std::string>>(value);
      items.insert(items.end(), more.begin(), more.end());
      value = std::move(items);
      problem = validate_value(*option, value);
    }
    if (!problem.empty() && option->secret) throw ConfigError(fmt::format("command line: {}: {}", shown, problem));
    if (!problem.empty()) throw ConfigError(without_passwords(fmt::format("command line: {}: {}", shown, problem)));
    set(o.key, std::move(value), Origin{Origin::Kind::command_line, shown});
  }
}

const Config::Entry& Config::entry(std::string_view key) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) throw std::logic_error(fmt::format("config: unknown key '{}'", key));
  return it->second;
}

void Config::set(std::string_view key, Value value, Origin origin) {
  if (!options_->find(key)) throw std::logic_error(fmt::format("config: unknown key '{}'", key));
  entries_[std::string(key)] = Entry{std::move(value), std::move(origin)};
}

const Value& Config::value(std::string_view key) const { return entry(key).value; }
const Origin& Config::origin(std::string_view key) const { return entry(key).origin; }

namespace {
template <class T>
const T& typed(const Value& value, std::string_view key) {
  if (const T* v = std::get_if<T>(&value)) return *v;
  throw std::logic_error(fmt::format("config: key '{}' read as the wrong type", key));
}
}  // namespace

bool Config::boolean(std::string_view key) const { return typed<bool>(value(key), key); }
std::int64_t Config::integer(std::string_view key) const { return typed<std::int64_t>(value(key), key); }
double Config::seconds(std::string_view key) const { return typed<double>(value(key), key); }
Duration Config::duration(std::string_view key) const { return from_seconds(seconds(key)); }
std::int64_t Config::bytes(std::string_view key) const { return typed<std::int64_t>(value(key), key); }
const std::string& Config::string(std::string_view key) const { return typed<std::string>(value(key), key); }
const std::vector<std::string>& Config::list(std::string_view key) const {
  return typed<std::vector<std::string>>(value(key), key);
}
const std::vector<Record>& Config::records(std::string_view key) const { return typed<std::vector<Record>>(value(key), key); }

std::string Config::describe(std::string_view key) const {
  const Entry& e = entry(key);
  const Option* option = options_->find(key);
  return fmt::format("{} = {} ({})", key, option && option->secret ? shown_secret(e.value) : without_passwords(format_value(e.value)),
                     e.origin.describe());
}

std::string Config::dump() const {
  std::string out = fmt::format("# effective configuration: defaults < {} < command line\n",
                                file_.empty() ? "(no config file)" : file_);
  std::set<std::string> blocks_done;
  auto line = [&](const std::string& indent, std::string_view name, const Option& option) {
    const Entry& e = entry(option.key);
    const std::string value = option.secret ? shown_secret(e.value) : without_passwords(format_value(e.value));
    out += fmt::format("{}{}: {}  # {}\n", indent, name, value, e.origin.describe());
  };
  for (const Option& option : options_->all()) {
    const std::size_t dot = option.key.find('.');
    if (dot == std::string::npos) {
      line("", option.key, option);
      continue;
    }
    const std::string block = option.key.substr(0, dot);
    if (!blocks_done.insert(block).second) continue;
    out += block + ":\n";
    for (const Option& member : options_->all())
      if (member.key.starts_with(block + ".")) line("  ", std::string_view(member.key).substr(dot + 1), member);
  }
  return out;
}

}  // namespace netserver
