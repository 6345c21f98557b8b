// The PreFork personality with real processes: pool growth and shrinking, replacement of dead
// children, max_requests, signals, start-up failures, distinct pids, and chat isolation.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <set>
#include <thread>

#include "chat_checks.hpp"
#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

std::string prefork_yaml(const std::string& block) {
  return "personality: prefork\nhost: 127.0.0.1\nport: 0\nlog_level: 3\nprefork:\n" + block;
}

// Waits until the server has `count` children.
bool pool_size_becomes(const ServerProcess& server, std::size_t count, Seconds timeout = 10s) {
  return eventually([&] { return children_of(server.pid()).size() == count; }, timeout);
}

long banner_pid(Client& client) {
  const auto banner = client.read_line();
  return banner ? pid_in(*banner) : -1;
}

}  // namespace

TEST_CASE("prefork: concurrent clients are served by distinct child processes", "[prefork]") {
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 5\n  max_servers: 10\n  min_spare_servers: 1\n  max_spare_servers: 5\n"));
  REQUIRE(pool_size_becomes(server, 5));
  std::vector<Client> clients;
  std::set<long> pids;
  for (int i = 0; i < 5; ++i) {
    clients.emplace_back(server.port());
    pids.insert(banner_pid(clients.back()));
  }
  CHECK(pids.size() == 5);
  CHECK(pids.count(server.pid()) == 0);  // the parent never serves
  for (Client& client : clients) {
    client.send("hi\r\n");
    CHECK(client.read_line() == "hi");
  }
}

TEST_CASE("prefork: the pool grows under 30 clients without passing max_servers and shrinks after",
          "[prefork][pool]") {
  ServerProcess server(binary("echo_server"), prefork_yaml("  min_servers: 2\n  max_servers: 20\n"
                                                           "  min_spare_servers: 1\n  max_spare_servers: 3\n"
                                                           "  check_for_waiting: 0.2\n"));
  REQUIRE(pool_size_becomes(server, 2));  // min_servers (both idle: enough spares)
  std::size_t largest = 0;
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling) {
      largest = std::max(largest, children_of(server.pid()).size());
      std::this_thread::sleep_for(5ms);
    }
  });
  std::vector<Client> clients;
  for (int i = 0; i < 30; ++i) clients.emplace_back(server.port());
  std::size_t served = 0;
  for (Client& client : clients) served += client.read_line(served < 20 ? 3s : 0.05s) ? 1 : 0;  // 10 wait
  const bool grew = pool_size_becomes(server, 20);
  clients.clear();  // everyone leaves
  const bool shrank = pool_size_becomes(server, 3);  // max_spare_servers idle ones stay
  sampling = false;
  sampler.join();
  CHECK(served == 20);
  CHECK(grew);
  CHECK(largest == 20);
  CHECK(shrank);
  CHECK(server.count_in_log("retiring") >= 1);
}

TEST_CASE("prefork: a child killed with SIGKILL is replaced", "[prefork]") {
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 3\n  max_servers: 6\n  min_spare_servers: 1\n  max_spare_servers: 4\n"));
  REQUIRE(pool_size_becomes(server, 3));
  pid_t victim = 0;
  {  // a child that served a client is ready (one killed while it starts is a start-up failure)
    Client first(server.port());
    victim = static_cast<pid_t>(banner_pid(first));
  }
  REQUIRE(victim > 0);
  ::kill(victim, SIGKILL);
  CHECK(server.wait_for_log("child " + std::to_string(victim) + " killed by signal 9 (KILL); replacing it"));
  CHECK(eventually([&] {
    const auto now = children_of(server.pid());
    return now.size() == 3 && std::find(now.begin(), now.end(), victim) == now.end();
  }));
  Client client(server.port());
  CHECK(banner_pid(client) > 0);
}

TEST_CASE("prefork: after max_requests sessions a child is replaced and the next client gets a new pid",
          "[prefork]") {
  ServerProcess server(binary("echo_server"), prefork_yaml("  min_servers: 1\n  max_servers: 2\n  min_spare_servers: 0\n"
                                                           "  max_spare_servers: 1\n  max_requests: 2\n"));
  std::vector<long> pids;
  for (int i = 0; i < 3; ++i) {
    Client client(server.port());
    pids.push_back(banner_pid(client));
    client.send("quit\r\n");
    CHECK(client.closed_by_peer());
    if (i == 1) REQUIRE(server.wait_for_log("exited with status 0"));
  }
  CHECK(pids[0] == pids[1]);
  CHECK(pids[2] != pids[1]);
  CHECK(pids[2] > 0);
}

TEST_CASE("prefork: TERM lets a client mid-session get its reply - then everything exits", "[prefork][signals]") {
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 3\n  max_servers: 5\n  min_spare_servers: 1\n  max_spare_servers: 4\n"));
  Client client(server.port());
  const long child = banner_pid(client);
  REQUIRE(child > 0);
  server.signal(SIGTERM);
  REQUIRE(server.wait_for_log("TERM received"));
  REQUIRE(eventually([&] { return children_of(server.pid()).size() == 1; }));  // the idle ones are gone
  client.send("the reply still comes\r\n");
  CHECK(client.read_line() == "the reply still comes");
  client.send("quit\r\n");
  CHECK(client.closed_by_peer());
  CHECK(server.wait_exit(10s) == 0);
  CHECK(children_of(server.pid()).empty());
}

TEST_CASE("prefork: QUIT kills the children at once", "[prefork][signals]") {
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 2\n  max_servers: 5\n  min_spare_servers: 1\n  max_spare_servers: 4\n"));
  Client client(server.port());
  REQUIRE(banner_pid(client) > 0);
  server.signal(SIGQUIT);
  CHECK(client.closed_by_peer(3s));
  CHECK(server.wait_exit(5s) == 0);
}

TEST_CASE("prefork: TTIN and TTOU raise and lower the pool by one", "[prefork][signals]") {
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 3\n  max_servers: 10\n  min_spare_servers: 1\n  max_spare_servers: 5\n"));
  REQUIRE(pool_size_becomes(server, 3));
  server.signal(SIGTTIN);
  CHECK(pool_size_becomes(server, 4));
  server.signal(SIGTTOU);
  CHECK(pool_size_becomes(server, 3));
  server.signal(SIGTTOU);
  CHECK(pool_size_becomes(server, 2));
  CHECK(server.wait_for_log("TTOU: pool bounds now min_servers 2, max_servers 9"));
}

TEST_CASE("prefork: a handler that crashes its child costs that client only", "[prefork][robustness]") {
  ServerProcess server(binary("probe_server"),
                       prefork_yaml("  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n  max_spare_servers: 3\n"));
  {
    Client client(server.port());
    REQUIRE(client.read_line());
    client.send("crash\r\n");
    CHECK(client.closed_by_peer());
  }
  CHECK(server.wait_for_log("killed by signal 6 (ABRT); replacing it"));
  Client next(server.port());
  REQUIRE(next.read_line());
  next.send("echo alive\r\n");
  CHECK(next.read_line() == "alive");
}

TEST_CASE("prefork: children that cannot start stop the server with a clear error", "[prefork][boot]") {
  SECTION("child_init_hook throws: exit status 3 at once") {
    const Outcome outcome = run(binary("probe_server"), {"--personality=prefork", "--host=127.0.0.1", "--port=0",
                                                         "--probe.child_init=throw"});
    CHECK(outcome.status == 3);
    CHECK_THAT(outcome.output, Contains("child_init_hook failed: probe child cannot start"));
    CHECK_THAT(outcome.output, Contains("could not start (exit status 3); not respawning"));
  }
  SECTION("children crash while starting: the server gives up after a few") {
    const Outcome outcome = run(binary("probe_server"), {"--personality=prefork", "--host=127.0.0.1", "--port=0",
                                                         "--probe.child_init=crash"});
    CHECK(outcome.status == 3);
    CHECK_THAT(outcome.output, Contains("children in a row died at start-up"));
  }
}

TEST_CASE("prefork: the child hooks run in parent and children", "[prefork][hooks]") {
  ServerProcess server(binary("probe_server"),
                       prefork_yaml("  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n  max_spare_servers: 3\n"));
  REQUIRE(pool_size_becomes(server, 2));
  CHECK(server.stop() == 0);
  CHECK(server.count_in_log("hook pre_fork_hook") >= 2);
  CHECK(server.count_in_log("hook child_init_hook") >= 2);
  CHECK(server.count_in_log("hook child_finish_hook") >= 2);
}

TEST_CASE("prefork: inconsistent bounds are configuration errors", "[prefork][config]") {
  const Outcome outcome = run(binary("echo_server"), {"--personality=prefork", "--prefork.max_servers=8"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("prefork: prefork.max_spare_servers = 10 (default) must be less than "
                                      "prefork.max_servers = 8 (command line --prefork.max_servers=8)"));
  const Outcome spare = run(binary("echo_server"), {"--personality=prefork", "--prefork.min_spare_servers=12"});
  CHECK(spare.status == 2);
  CHECK_THAT(spare.output, Contains("prefork.min_spare_servers = 12"));
}

TEST_CASE("prefork: a pool that would never start a child is a configuration error", "[prefork][config][hardening]") {
  const Outcome outcome = run(binary("echo_server"), {"--personality=prefork", "--host=127.0.0.1", "--port=0",
                                                      "--prefork.min_servers=0", "--prefork.min_spare_servers=0",
                                                      "--prefork.max_spare_servers=0", "--prefork.max_servers=1"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("prefork: prefork.min_servers = 0 (command line --prefork.min_servers=0) and "
                                      "prefork.min_spare_servers = 0 (command line --prefork.min_spare_servers=0): "
                                      "no child would ever be started"));
  CHECK_THAT(outcome.output, !Contains("listening on"));
}

TEST_CASE("chat under prefork: a broadcast reaches nobody and /who shows only yourself", "[prefork][chat]") {
  ServerProcess server(binary("chat_server"), prefork_yaml("  min_servers: 3\n  max_servers: 5\n"
                                                           "  min_spare_servers: 1\n  max_spare_servers: 4\n"));
  check_chat_room_is_one_process(server, "prefork");
}

TEST_CASE("prefork: refused clients leave no descriptor behind in the children", "[prefork][access][limits]") {
  // 64 descriptors a process: each refused client that stayed open in a child would use one up.
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n  max_spare_servers: 3\n") +
                           "cidr_allow: 127.0.0.2/32\n",
                       Launch{}.with_wrapper({"/usr/bin/prlimit", "--nofile=64:64"}));
  REQUIRE(pool_size_becomes(server, 2));
  for (int i = 0; i < 2; ++i) {  // the children are up and have served a client before they are counted
    Client first(server.port(), "127.0.0.1", "127.0.0.2");
    REQUIRE(first.read_line(5s));
  }
  std::this_thread::sleep_for(300ms);  // a spare child the two clients made the pool spawn is up too
  std::size_t usual = 0;  // what an idle child holds
  for (pid_t child : children_of(server.pid())) usual = std::max(usual, descriptors_of(child));
  for (int i = 0; i < 300; ++i) Client(server.port());  // connect and close at once
  Client allowed(server.port(), "127.0.0.1", "127.0.0.2");
  const auto banner = allowed.read_line(5s);
  CHECK(banner);
  // Once the refused ones are gone, every child is back to what it held (one more: the allowed client).
  std::string counts;
  const bool back = eventually([&] {
    counts.clear();
    bool all_back = true;
    for (pid_t child : children_of(server.pid())) {
      counts += std::to_string(descriptors_of(child)) + " ";
      all_back = all_back && descriptors_of(child) <= usual + 1;
    }
    return all_back;
  }, 10s);
  INFO("an idle child holds " << usual << "; the children hold " << counts);
  CHECK(back);
  CHECK(server.count_in_log("Too many open files") == 0);
}

TEST_CASE("prefork: a background job writing to a tostop terminal keeps its pool and only kill -TTOU shrinks it",
          "[prefork][signals]") {
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 3\n  max_servers: 10\n  min_spare_servers: 1\n  max_spare_servers: 5\n"),
                       Launch{}.with_wrapper({binary("tty_background")}));
  for (int i = 0; i < 10; ++i) {  // each logs lines from the parent (spawns) and the children
    Client client(server.port());
    CHECK(banner_pid(client) > 0);
  }
  CHECK(server.wait_for_log("spawned child"));
  CHECK_FALSE(server.wait_for_log("TTOU", 0.5s));
  server.signal(SIGTTOU);
  CHECK(server.wait_for_log("TTOU: pool bounds now min_servers 2, max_servers 9"));
  CHECK(server.count_in_log("TTOU: pool bounds") == 1);
}

TEST_CASE("prefork: stopped children that count as idle do not keep clients waiting", "[prefork][pool]") {
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 5\n  max_servers: 10\n  min_spare_servers: 1\n  max_spare_servers: 8\n"));
  REQUIRE(pool_size_becomes(server, 5));
  REQUIRE(server.wait_for_log("spawned child", 1s));
  std::this_thread::sleep_for(0.3s);  // every child reported idle
  std::vector<pid_t> stopped = children_of(server.pid());
  stopped.pop_back();
  for (pid_t child : stopped) ::kill(child, SIGSTOP);
  Client first(server.port());
  CHECK(banner_pid(first) > 0);  // the one child still running
  Client second(server.port());
  CHECK(banner_pid(second) > 0);  // a new child, within the bound (two looks at the queue)
  Client third(server.port());
  CHECK(banner_pid(third) > 0);
  CHECK(server.wait_for_log("wait in the listen queue while"));
  for (pid_t child : stopped) ::kill(child, SIGCONT);
}

TEST_CASE("prefork: systemd hears the pool's state in STATUS", "[prefork][systemd]") {
  TempDir dir;
  const std::string path = (dir.path() / "notify").string();
  DatagramSink notify(path);
  ServerProcess server(binary("echo_server"),
                       prefork_yaml("  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n  max_spare_servers: 3\n"),
                       Launch().with_env("NOTIFY_SOCKET", path));
  Client client(server.port());
  REQUIRE(banner_pid(client) > 0);
  CHECK_THAT(notify.until("busy", 6s), Contains("STATUS=") && Contains("1 busy"));
}
