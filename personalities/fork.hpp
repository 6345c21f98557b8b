#pragma once
/// Fork (Net::Server::Fork): the parent accepts, and forks one child per client; the child serves
/// that one session (handler code may block) and exits. At most `fork.max_servers` children at
/// once: at the limit the parent stops accepting and clients wait in the kernel's backlog.

#include <cstddef>

#include "netserver/personality.hpp"

namespace netserver {

class Fork : public Personality {
 public:
  /// The `fork:` block.
  struct Settings {
    std::size_t max_servers = 256;  ///< children (clients served) at once; Net::Server's default
  };
  /// Registry entry: name "fork", the `fork:` block.
  static PersonalityInfo info();
  explicit Fork(Settings settings) : settings_(settings) {}
  void loop(Server& server) override;

 private:
  Settings settings_;
};

}  // namespace netserver
