#include "pool.hpp"

#include <sys/wait.h>

#include <algorithm>

#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"

namespace netserver {

Decisions Pool::changed(const ProcessTable& table, const ChildProcess&, bool became_ready) {
  if (became_ready) boot_failures_ = 0;  // children can start after all
  return manage_pool(table);
}

Decisions Pool::exited(const ProcessTable& table, const ChildProcess& child, int wait_status) {
  const bool clean = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
  if (!child.ready && child.state != ChildState::retiring) note_boot_failure(child, wait_status);
  else if (clean || child.state == ChildState::retiring) log::info("child {} {}", child.pid, describe_wait_status(wait_status));
  else log::warning("child {} {}; replacing it", child.pid, describe_wait_status(wait_status));
  return manage_pool(table);
}

// A child that dies before it could serve: exit status 3 means it says it cannot start (gunicorn's
// convention), so respawning is pointless; other early deaths stop the pool after a few in a row.
void Pool::note_boot_failure(const ChildProcess& child, int wait_status) {
  log::error("child {} {} before it was ready to serve", child.pid, describe_wait_status(wait_status));
  ++boot_failures_;
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == exit_status::boot_failed)
    failure_ = fmt::format("child {} could not start (exit status {}); not respawning", child.pid, exit_status::boot_failed);
  else if (boot_failures_ >= boot_failure_limit)
    failure_ = fmt::format("{} children in a row died at start-up (the last {}); not respawning", boot_failures_,
                           describe_wait_status(wait_status));
}

// What the bounds ask for: at least min_servers working children, at least min_spare_servers of
// them idle (starting ones count: they will be), never more than max_servers working.
Decisions Pool::manage_pool(const ProcessTable& table) const {
  if (!failure_.empty()) return {};
  // A retiring child only drains what it has: its replacement starts beside it (max_servers
  // bounds the children that accept).
  const std::size_t working = table.working();
  const std::size_t idle = table.count(ChildState::idle) + table.count(ChildState::starting);
  std::size_t wanted = working < limits_.min_servers ? limits_.min_servers - working : 0;
  if (idle < limits_.min_spare_servers) wanted = std::max(wanted, limits_.min_spare_servers - idle);
  const std::size_t room = limits_.max_servers > working ? limits_.max_servers - working : 0;
  Decisions decisions;
  decisions.spawn = std::min(wanted, room);
  return decisions;
}

Decisions Pool::check(const ProcessTable& table) {
  Decisions decisions{.spawn = 0, .retire = spares_to_retire(table)};
  if (decisions.retire.empty()) decisions.spawn = manage_pool(table).spawn;
  return decisions;
}

std::vector<pid_t> Pool::spares_to_retire(const ProcessTable& table) const {
  const std::size_t idle = table.count(ChildState::idle);
  const std::size_t working = table.working();
  if (idle <= limits_.max_spare_servers || working <= limits_.min_servers) return {};
  std::size_t excess = std::min(idle - limits_.max_spare_servers, working - limits_.min_servers);
  log::info("{} idle children, at most {} wanted: retiring {}", idle, limits_.max_spare_servers, excess);
  std::vector<pid_t> retire;
  for (const auto& [pid, child] : table.all()) {
    if (retire.size() == excess) break;
    if (child.state == ChildState::idle) retire.push_back(pid);
  }
  return retire;
}

std::string Pool::status(const ProcessTable& table) const {
  return fmt::format("{} children: {} busy, {} idle", table.size(), table.count(ChildState::busy),
                     table.count(ChildState::idle));
}

Decisions Pool::clients_waiting(const ProcessTable& table, std::size_t waiting) {
  if (!failure_.empty()) return {};
  const std::size_t idle = table.count(ChildState::idle);
  if (idle == 0) return {};
  if (table.size() >= limits_.max_servers) {
    log::warning("{} client(s) wait in the listen queue while {} children count as idle (stopped?); "
                 "max_servers {} reached: spawning none", waiting, idle, limits_.max_servers);
    return {};
  }
  log::warning("{} client(s) wait in the listen queue while {} children count as idle (stopped?): spawning one more",
               waiting, idle);
  Decisions decisions;
  decisions.spawn = 1;
  return decisions;
}

Decisions Pool::grow(const ProcessTable& table) {
  ++limits_.min_servers;
  ++limits_.max_servers;
  log::notice("TTIN: pool bounds now min_servers {}, max_servers {}", limits_.min_servers, limits_.max_servers);
  return manage_pool(table);
}

Decisions Pool::shrink(const ProcessTable& table) {
  if (table.working() <= least_servers || limits_.max_servers <= least_servers) {
    log::warning("TTOU: the pool keeps at least {} child (min_servers {}, max_servers {}); nothing retired",
                 least_servers, limits_.min_servers, limits_.max_servers);
    return {};
  }
  if (limits_.min_servers > least_servers) --limits_.min_servers;
  --limits_.max_servers;
  log::notice("TTOU: pool bounds now min_servers {}, max_servers {}", limits_.min_servers, limits_.max_servers);
  // An idle child leaves at once; failing that, a starting one, then a busy one after its session.
  for (ChildState wanted : {ChildState::idle, ChildState::starting, ChildState::busy})
    for (const auto& [pid, child] : table.all())
      if (child.state == wanted) return Decisions{.spawn = 0, .retire = {pid}};
  return {};
}

}  // namespace netserver
