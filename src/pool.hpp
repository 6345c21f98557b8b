#pragma once
/// Pool: the PreFork parent's bookkeeping and decisions -- how many children to spawn, which to
/// retire, what a child's exit means -- apart from the system calls that carry them out, which
/// sit behind ProcessControl (fork/kill through the Supervisor, a fake in unit tests).
///
/// Vocabulary (gunicorn's and Net::Server's): spawn_children, retire_spares, reap (child_exited),
/// manage_pool. A child is "starting" until it first reports idle, then idle or busy; a child
/// asked to leave is "retiring" and exits once it is idle -- a busy child is never interrupted.

#include <sys/types.h>

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "supervisor.hpp"

namespace netserver {

/// The pool's bounds (Net::Server::PreFork's names and defaults).
struct PoolLimits {
  std::size_t min_servers = 5;        ///< children kept alive at least
  std::size_t max_servers = 50;       ///< children alive at most (retiring ones included)
  std::size_t min_spare_servers = 2;  ///< idle children wanted at least
  std::size_t max_spare_servers = 10; ///< idle children kept at most
};

enum class ChildState { starting, idle, busy, retiring };

/// PreFork's policy (and the fixed crew of Multiplex workers: min = max, no spares).
class Pool final : public ChildPolicy {
 public:
  /// Children that die before reporting ready this many times in a row stop the pool.
  static constexpr std::size_t boot_failure_limit = 5;

  Pool(PoolLimits limits, ProcessControl& control);

  /// Spawns the first min_servers children.
  void start() override;
  /// A child reported it waits for a client.
  void child_idle(pid_t pid);
  /// A child reported it serves a client.
  void child_busy(pid_t pid);
  /// A child was reaped with waitpid's `wait_status`. Unknown pids are ignored.
  void child_exited(pid_t pid, int wait_status) override;
  /// The periodic check: retires idle children above max_spare_servers (never below
  /// min_servers) and spawns what an earlier failed fork left missing.
  void check() override;
  /// TTIN: one child more (min_servers and max_servers + 1).
  void grow() override;
  /// TTOU: one child less (min_servers and max_servers - 1, one child retired).
  void shrink() override;
  /// Stops spawning and asks every child to finish (TERM) or kills them (KILL).
  void stop(int signal) override;
  /// Spawns again after stop() (a restart that could not exec).
  void resume() override;
  /// Takes children of a previous image (after a restart): they are leaving and are waited
  /// for, but take none of this pool's slots -- a long session there must not starve the new pool.
  void adopt_leaving(const std::vector<pid_t>& pids) override;

  /// Children alive (not yet reaped), retiring and adopted ones included.
  std::size_t size() const { return children_.size() + adopted_.size(); }
  /// Children in `state`.
  std::size_t count(ChildState state) const;
  /// The pids alive, adopted ones included.
  std::vector<pid_t> pids() const override;
  /// True after stop().
  bool stopping() const { return stopping_; }
  /// Why the pool gave up (children cannot start); empty while healthy.
  const std::string& failure() const override { return failure_; }
  /// The current bounds (TTIN/TTOU change them).
  const PoolLimits& limits() const { return limits_; }

 private:
  struct Child {
    ChildState state = ChildState::starting;
    bool ready = false;  // has reported idle at least once
  };
  void manage_pool();
  void retire_spares();
  void spawn_children(std::size_t count);
  void retire(pid_t pid);
  void note_boot_failure(pid_t pid, int wait_status);

  PoolLimits limits_;
  ProcessControl& control_;
  std::map<pid_t, Child> children_;
  std::set<pid_t> adopted_;  // the previous image's children, on their way out
  bool stopping_ = false;
  std::size_t boot_failures_ = 0;
  std::string failure_;
};

}  // namespace netserver
