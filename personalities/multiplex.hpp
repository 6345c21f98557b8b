#pragma once
/// Multiplex: one process, one event loop, every client at once. Accepting never waits for a
/// session and no session waits for another -- so handler callbacks must return quickly: while
/// one runs, every other client of the process waits.

#include "netserver/personality.hpp"

namespace netserver {

class Multiplex : public Personality {
 public:
  /// Registry entry: name "multiplex"; adds the top-level key max_connections.
  static PersonalityInfo info();
  explicit Multiplex(std::size_t max_connections) : max_connections_(max_connections) {}
  void loop(Server& server) override;

 private:
  std::size_t max_connections_;
};

}  // namespace netserver
