#pragma once
/// Pool: the PreFork parent's decisions (and those of the fixed crew of Multiplex workers) -- how
/// many children to spawn, which to retire, what a child's exit means -- taken from the
/// Supervisor's process table and answered as Decisions: no processes here, so every rule is
/// unit-testable.
///
/// Vocabulary (gunicorn's and Net::Server's): manage_pool, retire_spares, boot failures. A child
/// is "starting" until it first reports idle, then idle or busy; a child asked to leave is
/// "retiring" and exits once it is idle -- a busy child is never interrupted.

#include <cstddef>
#include <string>

#include "supervisor.hpp"

namespace netserver {

/// The pool's bounds (Net::Server::PreFork's names and defaults).
struct PoolLimits {
  std::size_t min_servers = 5;        ///< children kept alive at least
  std::size_t max_servers = 50;       ///< children alive at most (retiring ones included)
  std::size_t min_spare_servers = 2;  ///< idle children wanted at least
  std::size_t max_spare_servers = 10; ///< idle children kept at most
};

class Pool : public ChildPolicy {
 public:
  /// Children that die before reporting ready this many times in a row stop the pool.
  static constexpr std::size_t boot_failure_limit = 5;
  /// What TTOU never goes below: one child, or the port would stay open with nobody serving it.
  static constexpr std::size_t least_servers = 1;

  explicit Pool(PoolLimits limits) : limits_(limits) {}

  /// The first min_servers children (and the spares wanted).
  Decisions start(const ProcessTable& table) override { return manage_pool(table); }
  /// After an idle/busy report: spawns to keep min_spare_servers idle.
  Decisions changed(const ProcessTable& table, const ChildProcess& child, bool became_ready) override;
  /// A child ended: replaced as the bounds ask; early deaths count as boot failures.
  Decisions exited(const ProcessTable& table, const ChildProcess& child, int wait_status) override;
  /// The periodic check: retires idle children above max_spare_servers (never below
  /// min_servers) and spawns what an earlier failed fork left missing.
  Decisions check(const ProcessTable& table) override;
  /// Clients have been waiting in the listen queue for a while although children count as
  /// idle: some "idle" children do not take them (stopped, stuck). One more child while
  /// max_servers allows; nothing when no child counts as idle (then the pool is simply full).
  Decisions clients_waiting(const ProcessTable& table, std::size_t waiting);
  /// TTIN: one child more (min_servers and max_servers + 1).
  Decisions grow(const ProcessTable& table) override;
  /// TTOU: one child less (min_servers and max_servers - 1, one child retired), never below
  /// least_servers (warned).
  Decisions shrink(const ProcessTable& table) override;
  /// "7 children: 2 busy, 5 idle", for systemd's STATUS.
  std::string status(const ProcessTable& table) const override;
  /// Why the pool gave up (children cannot start); empty while healthy.
  const std::string& failure() const override { return failure_; }
  /// The current bounds (TTIN/TTOU change them).
  const PoolLimits& limits() const { return limits_; }

 private:
  Decisions manage_pool(const ProcessTable& table) const;
  std::vector<pid_t> spares_to_retire(const ProcessTable& table) const;
  void note_boot_failure(const ChildProcess& child, int wait_status);

  PoolLimits limits_;
  std::size_t boot_failures_ = 0;
  std::string failure_;
};

}  // namespace netserver
