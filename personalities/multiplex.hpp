#pragma once
/// Multiplex: one event loop serving every client at once. Accepting never waits for a session
/// and no session waits for another -- so handler callbacks must return quickly: while one runs,
/// every other client of the process waits.
///
/// With `multiplex.workers: N` (N > 1, or `auto`: one per core) the parent binds and a Supervisor
/// keeps N such event-loop processes on the shared listeners (nginx's model); each worker holds
/// its own clients, up to max_connections each.

#include <cstddef>

#include "netserver/personality.hpp"

namespace netserver {

class Multiplex : public Personality {
 public:
  /// The settings of the top-level key max_connections and the `multiplex:` block.
  struct Settings {
    std::size_t max_connections = 10000;  ///< clients served at once, per worker
    std::size_t workers = 1;              ///< event-loop processes (1: this process serves)
  };
  /// Registry entry: name "multiplex"; adds max_connections and multiplex.workers.
  static PersonalityInfo info();
  explicit Multiplex(Settings settings) : settings_(settings) {}
  void loop(Server& server) override;

 private:
  Settings settings_;
};

}  // namespace netserver
