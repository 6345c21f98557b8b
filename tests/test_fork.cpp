// The Fork personality with real processes: one child per client, max_servers holding clients in
// the backlog, a crashing child costing its own client only, TERM, QUIT, HUP, the hooks, chat.

#include <catch2/catch.hpp>

#include <csignal>
#include <set>
#include <thread>

#include "chat_checks.hpp"
#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

std::string fork_yaml(const std::string& more = "") {
  return "personality: fork\nhost: 127.0.0.1\nport: 0\nlog_level: 3\n" + more;
}

long banner_pid(Client& client, Seconds timeout = 5s) {
  const auto banner = client.read_line(timeout);
  return banner ? pid_in(*banner) : -1;
}

}  // namespace

TEST_CASE("fork: every client gets its own child and the parent serves nobody", "[fork]") {
  ServerProcess server(binary("echo_server"), fork_yaml());
  CHECK(children_of(server.pid()).empty());  // no pool: children come with clients
  std::vector<Client> clients;
  std::set<long> pids;
  for (int i = 0; i < 5; ++i) {
    clients.emplace_back(server.port());
    pids.insert(banner_pid(clients.back()));
  }
  CHECK(pids.size() == 5);
  CHECK(pids.count(server.pid()) == 0);
  CHECK(pids.count(-1) == 0);
  CHECK(children_of(server.pid()).size() == 5);
  for (Client& client : clients) {
    client.send("hi\r\n");
    CHECK(client.read_line() == "hi");
    client.send("quit\r\n");
    CHECK(client.closed_by_peer());
  }
  CHECK(eventually([&] { return children_of(server.pid()).empty() && zombies_of(server.pid()).empty(); }));
}

TEST_CASE("fork: at max_servers clients wait in the backlog and are served when a child exits", "[fork][limits]") {
  ServerProcess server(binary("echo_server"), fork_yaml("fork:\n  max_servers: 2\n"));
  Client first(server.port()), second(server.port());
  REQUIRE(banner_pid(first) > 0);
  REQUIRE(banner_pid(second) > 0);
  Client third(server.port());  // connected (the backlog), not yet accepted
  CHECK(banner_pid(third, 0.5s) == -1);
  CHECK(children_of(server.pid()).size() == 2);
  first.send("quit\r\n");
  CHECK(first.closed_by_peer());
  CHECK(banner_pid(third) > 0);
  INFO(server.log());
  third.send("served after\r\n");
  CHECK(third.read_line() == "served after");
}

TEST_CASE("fork: a handler that crashes its child costs that client only", "[fork][robustness]") {
  ServerProcess server(binary("probe_server"), fork_yaml());
  Client bystander(server.port());
  REQUIRE(bystander.read_line());
  {
    Client client(server.port());
    REQUIRE(client.read_line());
    client.send("crash\r\n");
    CHECK(client.closed_by_peer());
  }
  CHECK(server.wait_for_log("killed by signal 6 (ABRT)"));
  INFO(server.log());
  bystander.send("echo alive\r\n");
  CHECK(bystander.read_line() == "alive");
  Client next(server.port());
  REQUIRE(next.read_line());
  next.send("echo next\r\n");
  CHECK(next.read_line() == "next");
}

TEST_CASE("fork: TERM lets a client mid-session finish - then everything exits", "[fork][signals]") {
  ServerProcess server(binary("echo_server"), fork_yaml());
  Client client(server.port());
  REQUIRE(banner_pid(client) > 0);
  server.signal(SIGTERM);
  REQUIRE(server.wait_for_log("TERM received"));
  client.send("the reply still comes\r\n");
  CHECK(client.read_line() == "the reply still comes");
  client.send("quit\r\n");
  CHECK(client.closed_by_peer());
  CHECK(server.wait_exit(10s) == 0);
}

TEST_CASE("fork: TERM kills children still busy after graceful_timeout", "[fork][signals]") {
  ServerProcess server(binary("echo_server"), fork_yaml("graceful_timeout: 0.5\n"));
  Client client(server.port());
  REQUIRE(banner_pid(client) > 0);
  server.signal(SIGTERM);
  CHECK(client.closed_by_peer(5s));
  CHECK(server.wait_exit(5s) == 0);
  CHECK(server.count_in_log("still busy after graceful_timeout") == 1);
}

TEST_CASE("fork: QUIT kills the children at once", "[fork][signals]") {
  ServerProcess server(binary("echo_server"), fork_yaml());
  Client client(server.port());
  REQUIRE(banner_pid(client) > 0);
  server.signal(SIGQUIT);
  CHECK(client.closed_by_peer(3s));
  CHECK(server.wait_exit(5s) == 0);
}

TEST_CASE("fork: HUP keeps the port and the old children finish their sessions", "[fork][restart]") {
  ServerProcess server(binary("echo_server"), fork_yaml("graceful_timeout: 60\n"));
  Client held(server.port());
  const long old_child = banner_pid(held);
  REQUIRE(old_child > 0);
  server.signal(SIGHUP);
  REQUIRE(eventually([&] { return server.count_in_log("(restarted)") == 1; }));
  Client after(server.port());
  const long new_child = banner_pid(after);
  CHECK(new_child > 0);
  CHECK(new_child != old_child);
  after.close();  // (it may have come to the old image, still accepting until the new one serves)
  held.send("opened before the restart\r\n");
  CHECK(held.read_line() == "opened before the restart");
  held.send("quit\r\n");
  CHECK(held.closed_by_peer());
  CHECK(eventually([&] { return ::kill(static_cast<pid_t>(old_child), 0) != 0; }));  // ended and reaped
  CHECK(eventually([&] { return zombies_of(server.pid()).empty(); }));
  CHECK(server.wait_for_log("pid " + std::to_string(server.pid()) + " relays signals to pid"));  // its own work done
}

TEST_CASE("fork: pre_fork_hook runs in the parent and child_init_hook in each child", "[fork][hooks]") {
  ServerProcess server(binary("probe_server"), fork_yaml());
  for (int i = 0; i < 2; ++i) {
    Client client(server.port());
    REQUIRE(client.read_line());
  }
  CHECK(eventually([&] { return server.count_in_log("hook child_init_hook") == 2; }));
  CHECK(server.count_in_log("hook pre_fork_hook") == 2);
}

TEST_CASE("fork: a child_init_hook that throws stops the server with exit status 3", "[fork][boot]") {
  ServerProcess server(binary("probe_server"), fork_yaml(), Launch{}.with_args({"--probe.child_init=throw"}));
  server.expect_errors();
  Client client(server.port());
  CHECK(client.closed_by_peer());
  CHECK(server.wait_exit(10s) == 3);
  CHECK_THAT(server.log(), Contains("could not start (exit status 3); not forking more"));
}

TEST_CASE("chat under fork: a broadcast reaches nobody and /who shows only yourself", "[fork][chat]") {
  ServerProcess server(binary("chat_server"), fork_yaml());
  check_chat_room_is_one_process(server, "fork");
}

// Issue 19.17: STATUS under fork counts the children, one per session.
TEST_CASE("fork: systemd hears the sessions open in STATUS", "[fork][systemd]") {
  TempDir dir;
  const std::string path = (dir.path() / "notify").string();
  DatagramSink notify(path);
  ServerProcess server(binary("echo_server"), fork_yaml(), Launch().with_env("NOTIFY_SOCKET", path));
  Client one(server.port()), two(server.port());
  REQUIRE(one.read_line());
  REQUIRE(two.read_line());
  CHECK_THAT(notify.until("STATUS=2 session(s) open", 8s), Contains("STATUS=2 session(s) open"));
}
