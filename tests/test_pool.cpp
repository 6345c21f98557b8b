// The PreFork pool's decisions, with a fake in place of fork/kill: no processes involved.

#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <csignal>

#include "pool.hpp"

using namespace netserver;

namespace {

class FakeProcesses : public ProcessControl {
 public:
  pid_t spawn_child() override {
    if (fail_spawns) return -1;
    spawned.push_back(next_pid);
    return next_pid++;
  }
  void retire_child(pid_t pid) override { retired.push_back(pid); }
  void signal_child(pid_t pid, int signal) override { signals.emplace_back(pid, signal); }

  std::vector<pid_t> spawned;
  std::vector<pid_t> retired;
  std::vector<std::pair<pid_t, int>> signals;
  pid_t next_pid = 100;
  bool fail_spawns = false;
};

int exited(int status) { return W_EXITCODE(status, 0); }
int killed(int signal) { return signal; }  // WIFSIGNALED with that signal

PoolLimits limits(std::size_t min, std::size_t max, std::size_t min_spare, std::size_t max_spare) {
  return PoolLimits{min, max, min_spare, max_spare};
}

void all_idle(Pool& pool) {
  for (pid_t pid : pool.pids()) pool.child_idle(pid);
}

}  // namespace

TEST_CASE("the pool starts min_servers children", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(5, 50, 2, 10), os);
  pool.start();
  CHECK(os.spawned.size() == 5);
  CHECK(pool.count(ChildState::starting) == 5);
  all_idle(pool);
  CHECK(os.spawned.size() == 5);
  CHECK(pool.count(ChildState::idle) == 5);
}

TEST_CASE("busy children make the pool spawn to keep min_spare_servers idle - never past max_servers", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(2, 6, 2, 4), os);
  pool.start();
  for (int round = 0; round < 20; ++round) {
    for (pid_t pid : pool.pids()) pool.child_busy(pid);  // a client for every child, new ones included
    REQUIRE(pool.size() <= 6);
  }
  CHECK(pool.size() == 6);
  CHECK(os.spawned.size() == 6);
}

TEST_CASE("starting children count as idle so a burst does not over-spawn", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(1, 20, 3, 5), os);
  pool.start();  // one for min_servers, two more for the spare bound
  CHECK(os.spawned.size() == 3);
  pool.child_busy(os.spawned[0]);  // one of the three starting children became busy at once
  CHECK(os.spawned.size() == 4);
}

TEST_CASE("idle children above max_spare_servers are retired but never busy ones and never below min_servers",
          "[pool]") {
  FakeProcesses os;
  Pool pool(limits(2, 20, 1, 3), os);
  pool.start();
  std::vector<pid_t> serving;
  std::size_t reported = 0;  // os.spawned[reported...] have not reported ready yet
  for (int client = 0; client < 10; ++client) {  // ten clients arrive; each takes an idle child
    for (; reported < os.spawned.size(); ++reported) pool.child_idle(os.spawned[reported]);
    auto idle = std::find_if(os.spawned.begin(), os.spawned.end(), [&](pid_t pid) {
      return std::find(serving.begin(), serving.end(), pid) == serving.end();
    });
    REQUIRE(idle != os.spawned.end());
    const pid_t pid = *idle;  // child_busy may spawn, which moves os.spawned
    pool.child_busy(pid);
    serving.push_back(pid);
  }
  for (; reported < os.spawned.size(); ++reported) pool.child_idle(os.spawned[reported]);
  pool.check();
  for (pid_t pid : os.retired) CHECK(std::find(serving.begin(), serving.end(), pid) == serving.end());
  for (pid_t pid : serving) pool.child_idle(pid);  // the clients leave
  pool.check();
  CHECK(pool.count(ChildState::idle) == 3);  // max_spare_servers
  CHECK(pool.size() - pool.count(ChildState::retiring) >= 2);  // min_servers
}

TEST_CASE("a retired child is told once and leaves only when it exits", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(1, 10, 0, 1), os);
  pool.start();
  pool.grow();  // two children
  all_idle(pool);
  pool.shrink();
  REQUIRE(os.retired.size() == 1);
  const pid_t leaving = os.retired.front();
  pool.child_idle(leaving);  // a late report does not bring it back
  CHECK(pool.count(ChildState::retiring) == 1);
  pool.child_exited(leaving, exited(0));
  CHECK(pool.size() == 1);
  CHECK(os.spawned.size() == 2);  // not replaced: the bound went down
}

TEST_CASE("a child that exits or crashes is replaced", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(3, 10, 1, 5), os);
  pool.start();
  all_idle(pool);
  pool.child_exited(os.spawned[0], killed(SIGKILL));
  CHECK(os.spawned.size() == 4);
  pool.child_exited(os.spawned[1], exited(0));  // e.g. max_requests reached
  CHECK(os.spawned.size() == 5);
  CHECK(pool.size() == 3);
  CHECK(pool.failure().empty());
}

TEST_CASE("unknown pids are never the pool's business", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(2, 10, 1, 5), os);
  pool.start();
  pool.child_exited(4242, exited(0));
  pool.child_idle(4243);
  CHECK(pool.size() == 2);
  CHECK(os.spawned.size() == 2);
}

TEST_CASE("children dying at start-up stop the pool instead of respawning forever", "[pool][boot]") {
  FakeProcesses os;
  Pool pool(limits(2, 10, 1, 5), os);
  pool.start();
  std::size_t deaths = 0;
  while (pool.failure().empty() && deaths < 100) {
    pool.child_exited(pool.pids().front(), killed(SIGSEGV));
    ++deaths;
  }
  CHECK(deaths == Pool::boot_failure_limit);
  CHECK_THAT(pool.failure(), Catch::Matchers::Contains("died at start-up"));
  const std::size_t spawned = os.spawned.size();
  pool.check();
  CHECK(os.spawned.size() == spawned);
}

TEST_CASE("exit status 3 at start-up stops the pool at once", "[pool][boot]") {
  FakeProcesses os;
  Pool pool(limits(2, 10, 1, 5), os);
  pool.start();
  pool.child_exited(os.spawned[0], exited(3));
  CHECK_THAT(pool.failure(), Catch::Matchers::Contains("could not start (exit status 3)"));
}

TEST_CASE("a child that got ready resets the count of start-up failures", "[pool][boot]") {
  FakeProcesses os;
  Pool pool(limits(1, 10, 0, 5), os);
  pool.start();
  for (int i = 0; i < 20; ++i) {
    const pid_t pid = pool.pids().front();
    if (i % 4 == 3) pool.child_idle(pid);  // every fourth one works for a while
    pool.child_exited(pid, killed(SIGABRT));
  }
  CHECK(pool.failure().empty());
}

TEST_CASE("TTIN and TTOU move the pool by one", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(3, 10, 1, 5), os);
  pool.start();
  all_idle(pool);
  pool.grow();
  CHECK(pool.size() == 4);
  CHECK(pool.limits().min_servers == 4);
  all_idle(pool);
  pool.shrink();
  pool.shrink();
  CHECK(os.retired.size() == 2);
  CHECK(pool.limits().min_servers == 2);
  CHECK(pool.limits().max_servers == 9);
}

TEST_CASE("TTOU with every child busy retires one after its session", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(2, 3, 0, 1), os);
  pool.start();
  for (pid_t pid : pool.pids()) pool.child_busy(pid);
  pool.shrink();
  REQUIRE(os.retired.size() == 1);
  CHECK(pool.count(ChildState::retiring) == 1);
}

TEST_CASE("stop signals every child and nothing is respawned afterwards", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(3, 10, 1, 5), os);
  pool.start();
  all_idle(pool);
  pool.stop(SIGTERM);
  CHECK(os.signals.size() == 3);
  for (pid_t pid : pool.pids()) pool.child_exited(pid, exited(0));
  CHECK(pool.size() == 0);
  CHECK(os.spawned.size() == 3);
}

TEST_CASE("a failed fork is retried by the next check", "[pool]") {
  FakeProcesses os;
  Pool pool(limits(2, 10, 1, 5), os);
  os.fail_spawns = true;
  pool.start();
  CHECK(pool.size() == 0);
  os.fail_spawns = false;
  pool.check();
  CHECK(pool.size() == 2);
}

TEST_CASE("children of a previous image are waited for but take no slot of the new pool", "[pool][restart]") {
  FakeProcesses os;
  Pool pool(limits(2, 3, 1, 2), os);
  pool.adopt_leaving({7, 8, 9});  // as many as max_servers allows, still finishing sessions
  pool.start();
  CHECK(os.spawned.size() == 2);  // the new pool starts anyway
  CHECK(pool.size() == 5);
  pool.child_exited(8, exited(0));
  CHECK(pool.size() == 4);
  CHECK(os.spawned.size() == 2);  // not replaced: it was not the new pool's
  pool.stop(SIGTERM);
  CHECK(os.signals.size() == 4);  // the adopted ones are told too
}

TEST_CASE("clients left waiting while children count as idle make the pool spawn one more up to max_servers",
          "[pool]") {
  FakeProcesses os;
  Pool pool(limits(3, 4, 1, 3), os);
  pool.start();
  all_idle(pool);
  REQUIRE(os.spawned.size() == 3);
  pool.clients_waiting(2);  // e.g. two of the idle children are stopped
  CHECK(os.spawned.size() == 4);
  pool.clients_waiting(2);  // max_servers reached
  CHECK(os.spawned.size() == 4);
  for (pid_t pid : pool.pids()) pool.child_busy(pid);
  Pool busy(limits(1, 4, 0, 1), os);
  busy.start();
  for (pid_t pid : busy.pids()) busy.child_busy(pid);
  const std::size_t before = os.spawned.size();
  busy.clients_waiting(5);  // nobody idle: the pool is full, not stuck
  CHECK(os.spawned.size() == before);
}
