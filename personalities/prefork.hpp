#pragma once
/// PreFork: a parent that binds, then keeps a pool of child processes; each child accepts and
/// serves one client at a time (handler code may block). The parent never serves clients: it
/// spawns, retires, reaps and replaces children between the `prefork:` bounds.

#include <cstdint>

#include "netserver/personality.hpp"
#include "pool.hpp"

namespace netserver {

class PreFork : public Personality {
 public:
  /// The `prefork:` block.
  struct Settings {
    PoolLimits limits;
    std::uint64_t max_requests = 1000;  ///< sessions a child serves before it is replaced (0: no limit)
    Duration check_for_waiting = std::chrono::seconds(10);  ///< between checks for idle children to retire
    bool exclusive_accept = true;       ///< EPOLLEXCLUSIVE: one idle child woken per connection
  };
  /// Registry entry: name "prefork", the `prefork:` block, and its consistency checks.
  static PersonalityInfo info();
  explicit PreFork(Settings settings) : settings_(settings) {}
  void loop(Server& server) override;

 private:
  Settings settings_;
};

}  // namespace netserver
