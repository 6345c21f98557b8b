// The PreFork pool's decisions against a process table, with the Supervisor's part (forking,
// reaping) played by the test: no processes involved.

#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <csignal>

#include "pool.hpp"

using namespace netserver;

namespace {

// The Supervisor's side: the table, and the decisions carried out on it.
class Parent {
 public:
  explicit Parent(PoolLimits limits) : pool(limits) {}

  void start() { apply(pool.start(table)); }
  void idle(pid_t pid) { report(pid, child_report::idle); }
  void busy(pid_t pid) { report(pid, child_report::busy); }
  void all_idle() {
    for (pid_t pid : table.pids()) idle(pid);
  }
  void exited(pid_t pid, int status) {
    const ChildProcess* found = table.find(pid);
    if (!found) return;  // only the table's pids are waited for
    const ChildProcess child = *found;
    table.remove(pid);
    apply(pool.exited(table, child, status));
  }
  void check() { apply(pool.check(table)); }
  void grow() { apply(pool.grow(table)); }
  void shrink() { apply(pool.shrink(table)); }
  void clients_waiting(std::size_t n) { apply(pool.clients_waiting(table, n)); }

  Pool pool;
  ProcessTable table;
  std::vector<pid_t> spawned;
  std::vector<pid_t> retired;
  pid_t next_pid = 100;
  bool fail_spawns = false;

 private:
  void report(pid_t pid, char what) {
    bool became_ready = false;
    if (table.note_report(pid, what, became_ready)) apply(pool.changed(table, *table.find(pid), became_ready));
  }
  void apply(const Decisions& decisions) {
    if (!pool.failure().empty()) return;
    for (pid_t pid : decisions.retire)
      if (table.mark_retiring(pid)) retired.push_back(pid);
    for (std::size_t i = 0; i < decisions.spawn && !fail_spawns; ++i) {
      spawned.push_back(next_pid);
      table.add(next_pid++, ChildState::starting);
    }
  }
};

int exited(int status) { return W_EXITCODE(status, 0); }
int killed(int signal) { return signal; }  // WIFSIGNALED with that signal

PoolLimits limits(std::size_t min, std::size_t max, std::size_t min_spare, std::size_t max_spare) {
  return PoolLimits{min, max, min_spare, max_spare};
}

}  // namespace

TEST_CASE("the pool starts min_servers children", "[pool]") {
  Parent parent(limits(5, 50, 2, 10));
  parent.start();
  CHECK(parent.spawned.size() == 5);
  CHECK(parent.table.count(ChildState::starting) == 5);
  parent.all_idle();
  CHECK(parent.spawned.size() == 5);
  CHECK(parent.table.count(ChildState::idle) == 5);
}

TEST_CASE("busy children make the pool spawn to keep min_spare_servers idle - never past max_servers", "[pool]") {
  Parent parent(limits(2, 6, 2, 4));
  parent.start();
  for (int round = 0; round < 20; ++round) {
    for (pid_t pid : parent.table.pids()) parent.busy(pid);  // a client for every child, new ones included
    REQUIRE(parent.table.size() <= 6);
  }
  CHECK(parent.table.size() == 6);
  CHECK(parent.spawned.size() == 6);
}

TEST_CASE("starting children count as idle so a burst does not over-spawn", "[pool]") {
  Parent parent(limits(1, 20, 3, 5));
  parent.start();  // one for min_servers, two more for the spare bound
  CHECK(parent.spawned.size() == 3);
  parent.busy(parent.spawned[0]);  // one of the three starting children became busy at once
  CHECK(parent.spawned.size() == 4);
}

TEST_CASE("idle children above max_spare_servers are retired but never busy ones and never below min_servers",
          "[pool]") {
  Parent parent(limits(2, 20, 1, 3));
  parent.start();
  std::vector<pid_t> serving;
  std::size_t reported = 0;  // spawned[reported...] have not reported ready yet
  for (int client = 0; client < 10; ++client) {  // ten clients arrive; each takes an idle child
    for (; reported < parent.spawned.size(); ++reported) parent.idle(parent.spawned[reported]);
    auto idle = std::find_if(parent.spawned.begin(), parent.spawned.end(), [&](pid_t pid) {
      return std::find(serving.begin(), serving.end(), pid) == serving.end();
    });
    REQUIRE(idle != parent.spawned.end());
    const pid_t pid = *idle;  // busy() may spawn, which moves spawned
    parent.busy(pid);
    serving.push_back(pid);
  }
  for (; reported < parent.spawned.size(); ++reported) parent.idle(parent.spawned[reported]);
  parent.check();
  for (pid_t pid : parent.retired) CHECK(std::find(serving.begin(), serving.end(), pid) == serving.end());
  for (pid_t pid : serving) parent.idle(pid);  // the clients leave
  parent.check();
  CHECK(parent.table.count(ChildState::idle) == 3);                                     // max_spare_servers
  CHECK(parent.table.size() - parent.table.count(ChildState::retiring) >= 2);  // min_servers
}

TEST_CASE("a retired child is told once and leaves only when it exits", "[pool]") {
  Parent parent(limits(1, 10, 0, 1));
  parent.start();
  parent.grow();  // two children
  parent.all_idle();
  parent.shrink();
  REQUIRE(parent.retired.size() == 1);
  const pid_t leaving = parent.retired.front();
  parent.idle(leaving);  // a late report does not bring it back
  CHECK(parent.table.count(ChildState::retiring) == 1);
  parent.exited(leaving, exited(0));
  CHECK(parent.table.size() == 1);
  CHECK(parent.spawned.size() == 2);  // not replaced: the bound went down
}

TEST_CASE("a child that exits or crashes is replaced", "[pool]") {
  Parent parent(limits(3, 10, 1, 5));
  parent.start();
  parent.all_idle();
  parent.exited(parent.spawned[0], killed(SIGKILL));
  CHECK(parent.spawned.size() == 4);
  parent.exited(parent.spawned[1], exited(0));  // e.g. max_requests reached
  CHECK(parent.spawned.size() == 5);
  CHECK(parent.table.size() == 3);
  CHECK(parent.pool.failure().empty());
}

TEST_CASE("unknown pids are never the pool's business", "[pool]") {
  Parent parent(limits(2, 10, 1, 5));
  parent.start();
  parent.exited(4242, exited(0));
  parent.idle(4243);
  CHECK(parent.table.size() == 2);
  CHECK(parent.spawned.size() == 2);
}

TEST_CASE("children dying at start-up stop the pool instead of respawning forever", "[pool][boot]") {
  Parent parent(limits(2, 10, 1, 5));
  parent.start();
  std::size_t deaths = 0;
  while (parent.pool.failure().empty() && deaths < 100) {
    parent.exited(parent.table.pids().front(), killed(SIGSEGV));
    ++deaths;
  }
  CHECK(deaths == Pool::boot_failure_limit);
  CHECK_THAT(parent.pool.failure(), Catch::Matchers::Contains("died at start-up"));
  CHECK(parent.pool.check(parent.table).spawn == 0);
}

TEST_CASE("exit status 3 at start-up stops the pool at once", "[pool][boot]") {
  Parent parent(limits(2, 10, 1, 5));
  parent.start();
  parent.exited(parent.spawned[0], exited(3));
  CHECK_THAT(parent.pool.failure(), Catch::Matchers::Contains("could not start (exit status 3)"));
}

TEST_CASE("a child that got ready resets the count of start-up failures", "[pool][boot]") {
  Parent parent(limits(1, 10, 0, 5));
  parent.start();
  for (int i = 0; i < 20; ++i) {
    const pid_t pid = parent.table.pids().front();
    if (i % 4 == 3) parent.idle(pid);  // every fourth one works for a while
    parent.exited(pid, killed(SIGABRT));
  }
  CHECK(parent.pool.failure().empty());
}

TEST_CASE("TTIN and TTOU move the pool by one", "[pool]") {
  Parent parent(limits(3, 10, 1, 5));
  parent.start();
  parent.all_idle();
  parent.grow();
  CHECK(parent.table.size() == 4);
  CHECK(parent.pool.limits().min_servers == 4);
  parent.all_idle();
  parent.shrink();
  parent.shrink();
  CHECK(parent.retired.size() == 2);
  CHECK(parent.pool.limits().min_servers == 2);
  CHECK(parent.pool.limits().max_servers == 9);
}

TEST_CASE("TTOU with every child busy retires one after its session", "[pool]") {
  Parent parent(limits(2, 3, 0, 1));
  parent.start();
  for (pid_t pid : parent.table.pids()) parent.busy(pid);
  parent.shrink();
  REQUIRE(parent.retired.size() == 1);
  CHECK(parent.table.count(ChildState::retiring) == 1);
}

TEST_CASE("TTOU never takes the pool below one child", "[pool][hardening]") {
  Parent parent(limits(2, 3, 0, 1));
  parent.start();
  parent.all_idle();
  parent.shrink();
  REQUIRE(parent.retired.size() == 1);
  parent.exited(parent.retired.front(), exited(0));
  parent.shrink();  // the last child stays
  parent.shrink();
  CHECK(parent.retired.size() == 1);
  CHECK(parent.table.working() == 1);
  CHECK(parent.pool.limits().max_servers >= 1);
  CHECK(parent.pool.limits().min_servers >= 1);
}

TEST_CASE("a failed fork is retried by the next check", "[pool]") {
  Parent parent(limits(2, 10, 1, 5));
  parent.fail_spawns = true;
  parent.start();
  CHECK(parent.table.size() == 0);
  parent.fail_spawns = false;
  parent.check();
  CHECK(parent.table.size() == 2);
}

TEST_CASE("clients left waiting while children count as idle make the pool spawn one more up to max_servers",
          "[pool]") {
  Parent parent(limits(3, 4, 1, 3));
  parent.start();
  parent.all_idle();
  REQUIRE(parent.spawned.size() == 3);
  parent.clients_waiting(2);  // e.g. two of the idle children are stopped
  CHECK(parent.spawned.size() == 4);
  parent.clients_waiting(2);  // max_servers reached
  CHECK(parent.spawned.size() == 4);
  Parent busy(limits(1, 4, 0, 1));
  busy.start();
  for (pid_t pid : busy.table.pids()) busy.busy(pid);
  const std::size_t before = busy.spawned.size();
  busy.clients_waiting(5);  // nobody idle: the pool is full, not stuck
  CHECK(busy.spawned.size() == before);
}

TEST_CASE("the process table gives each child the lowest free slot", "[pool][table]") {
  ProcessTable table;
  CHECK(table.add(10, ChildState::starting).slot == 0);
  CHECK(table.add(11, ChildState::starting).slot == 1);
  CHECK(table.add(12, ChildState::starting).slot == 2);
  table.remove(11);
  CHECK(table.add(13, ChildState::starting).slot == 1);
  CHECK(table.free_slot() == 3);
}
