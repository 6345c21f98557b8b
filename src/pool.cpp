#include "pool.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <csignal>

#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "signals.hpp"

namespace netserver {

Pool::Pool(PoolLimits limits, ProcessControl& control) : limits_(limits), control_(control) {}

std::size_t Pool::count(ChildState state) const {
  return static_cast<std::size_t>(
      std::count_if(children_.begin(), children_.end(), [&](const auto& entry) { return entry.second.state == state; }));
}

std::vector<pid_t> Pool::pids() const {
  std::vector<pid_t> pids(adopted_.begin(), adopted_.end());
  for (const auto& [pid, child] : children_) pids.push_back(pid);
  return pids;
}

void Pool::start() { manage_pool(); }

void Pool::child_idle(pid_t pid) {
  auto it = children_.find(pid);
  if (it == children_.end()) return;
  if (!it->second.ready) boot_failures_ = 0;  // children can start after all
  it->second.ready = true;
  if (it->second.state == ChildState::retiring) return;  // still leaving
  it->second.state = ChildState::idle;
  manage_pool();
}

void Pool::child_busy(pid_t pid) {
  auto it = children_.find(pid);
  if (it == children_.end() || it->second.state == ChildState::retiring) return;
  it->second.state = ChildState::busy;
  manage_pool();
}

void Pool::child_exited(pid_t pid, int wait_status) {
  if (adopted_.erase(pid)) return log::info("child {} of the previous image {}", pid, describe_wait_status(wait_status));
  auto it = children_.find(pid);
  if (it == children_.end()) return;
  const Child child = it->second;
  children_.erase(it);
  const bool clean = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
  if (!stopping_ && !child.ready && child.state != ChildState::retiring) {
    note_boot_failure(pid, wait_status);
  } else if (stopping_ || clean) {
    log::info("child {} {}", pid, describe_wait_status(wait_status));
  } else {
    log::warning("child {} {}; replacing it", pid, describe_wait_status(wait_status));
  }
  manage_pool();
}

// A child that dies before it could serve: exit status 3 means it says it cannot start (gunicorn's
// convention), so respawning is pointless; other early deaths stop the pool after a few in a row.
void Pool::note_boot_failure(pid_t pid, int wait_status) {
  log::error("child {} {} before it was ready to serve", pid, describe_wait_status(wait_status));
  ++boot_failures_;
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == exit_status::boot_failed)
    failure_ = fmt::format("child {} could not start (exit status {}); not respawning", pid, exit_status::boot_failed);
  else if (boot_failures_ >= boot_failure_limit)
    failure_ = fmt::format("{} children in a row died at start-up (the last {}); not respawning", boot_failures_,
                           describe_wait_status(wait_status));
}

// Spawns what the bounds ask for: at least min_servers working children, at least
// min_spare_servers of them idle (starting ones count: they will be), never more than max_servers
// alive.
void Pool::manage_pool() {
  if (stopping_ || !failure_.empty()) return;
  const std::size_t working = children_.size() - count(ChildState::retiring);
  const std::size_t idle = count(ChildState::idle) + count(ChildState::starting);
  std::size_t wanted = working < limits_.min_servers ? limits_.min_servers - working : 0;
  if (idle < limits_.min_spare_servers) wanted = std::max(wanted, limits_.min_spare_servers - idle);
  const std::size_t room = limits_.max_servers > children_.size() ? limits_.max_servers - children_.size() : 0;
  spawn_children(std::min(wanted, room));
}

void Pool::spawn_children(std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    const pid_t pid = control_.spawn_child();
    if (pid <= 0) return;  // could not fork now (logged); the next check tries again
    children_[pid] = Child{};
  }
}

void Pool::retire(pid_t pid) {
  children_[pid].state = ChildState::retiring;
  control_.retire_child(pid);
}

void Pool::check() {
  retire_spares();
  manage_pool();
}

void Pool::retire_spares() {
  if (stopping_) return;
  const std::size_t idle = count(ChildState::idle);
  const std::size_t working = children_.size() - count(ChildState::retiring);
  if (idle <= limits_.max_spare_servers || working <= limits_.min_servers) return;
  std::size_t excess = std::min(idle - limits_.max_spare_servers, working - limits_.min_servers);
  log::info("{} idle children, at most {} wanted: retiring {}", idle, limits_.max_spare_servers, excess);
  for (auto& [pid, child] : children_) {
    if (excess == 0) break;
    if (child.state != ChildState::idle) continue;
    retire(pid);
    --excess;
  }
}

void Pool::grow() {
  ++limits_.min_servers;
  ++limits_.max_servers;
  log::notice("TTIN: pool bounds now min_servers {}, max_servers {}", limits_.min_servers, limits_.max_servers);
  manage_pool();
}

void Pool::shrink() {
  if (limits_.min_servers > 0) --limits_.min_servers;
  if (limits_.max_servers > 1) --limits_.max_servers;
  log::notice("TTOU: pool bounds now min_servers {}, max_servers {}", limits_.min_servers, limits_.max_servers);
  // An idle child leaves at once; failing that, a busy one leaves after its session.
  for (ChildState wanted : {ChildState::idle, ChildState::starting, ChildState::busy}) {
    for (auto& [pid, child] : children_) {
      if (child.state == wanted) return retire(pid);
    }
  }
}

void Pool::stop(int signal) {
  stopping_ = true;
  for (pid_t pid : pids()) control_.signal_child(pid, signal);
}

void Pool::resume() {
  stopping_ = false;
  manage_pool();
}

void Pool::adopt_leaving(const std::vector<pid_t>& pids) { adopted_.insert(pids.begin(), pids.end()); }

}  // namespace netserver
