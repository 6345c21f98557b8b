#pragma once
/// The sessions alive in this process. A broadcast walks it, so it reaches exactly the clients
/// this process serves: everyone under Multiplex, only yourself under Single and PreFork.

#include <cstddef>
#include <memory>
#include <string_view>
#include <vector>

#include "netserver/session.hpp"

namespace netserver {

/// The sessions alive in this process (not across processes: that is what a bus is for). The
/// engine adds and removes them; handlers walk them.
class Registry {
 public:
  /// Number of open sessions.
  std::size_t size() const { return sessions_.size(); }
  /// Calls f(Session&) for every open session.
  template <class F>
  void for_each(F&& f) const {
    for (std::size_t i = 0; i < sessions_.size(); ++i)
      if (sessions_[i]->is_open()) f(*sessions_[i]);
  }
  /// Sends `bytes` to every open session except `except`.
  void broadcast(std::string_view bytes, const Session* except = nullptr) const;

 protected:
  Registry() = default;
  ~Registry() = default;
  std::vector<std::shared_ptr<Session>> sessions_;  ///< owned until they end
};

}  // namespace netserver
