#pragma once
/// Personalities: the process models a server can run under, chosen by name in the config
/// (`personality: prefork`). A personality is a strategy the Server holds; it owns the loop step
/// and its own config block.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace netserver {

class Config;
class Options;
class Server;

/// A process model. Created after the configuration is loaded; runs Server's loop step.
class Personality {
 public:
  virtual ~Personality() = default;
  /// Serves clients on the server's listeners until told to stop (signals), then returns.
  virtual void loop(Server& server) = 0;
};

/// What the registry knows of a personality.
struct PersonalityInfo {
  std::string name;     ///< as written in the config: "single", "prefork"
  std::string summary;  ///< one line for --help
  /// Adds the personality's own keys (its block, e.g. "prefork.max_servers") to the schema.
  std::function<void(Options&)> add_options;
  /// Creates the personality from a loaded configuration; throws ConfigError when its block is
  /// inconsistent (e.g. max_spare_servers >= max_servers).
  std::function<std::unique_ptr<Personality>(const Config&)> create;
};

/// The personalities a server can be configured with, by name.
class Personalities {
 public:
  /// The ones netserver ships: single, multiplex, prefork.
  static Personalities builtin();
  /// Adds (or replaces) one.
  void add(PersonalityInfo info);
  /// The personality called `name`, or nullptr.
  const PersonalityInfo* find(std::string_view name) const;
  /// Every name, sorted.
  std::vector<std::string> names() const;
  /// All of them, in the order added.
  const std::vector<PersonalityInfo>& all() const { return infos_; }

 private:
  std::vector<PersonalityInfo> infos_;
};

}  // namespace netserver
