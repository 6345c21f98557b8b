// What every supervised child shares (src/child_runtime.*), checked under each personality that
// has children: the hook pair runs once per child, balanced, however the child ends.

#include <catch2/catch.hpp>

#include <csignal>
#include <regex>
#include <set>
#include <thread>

#include "harness.hpp"

using namespace harness;

namespace {

// The pids that logged `hook` ("[notice] [PID] hook child_init_hook").
std::multiset<long> pids_logging(const std::string& log, const std::string& hook) {
  std::multiset<long> pids;
  const std::regex line("\\[(\\d+)\\] hook " + hook + "\\b");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator(); ++it)
    pids.insert(std::stol((*it)[1]));
  return pids;
}

// Every child that ran child_init_hook ran child_finish_hook, once each.
void check_hooks_balanced(ServerProcess& server, std::size_t at_least) {
  CHECK(server.stop() == 0);
  const std::string log = server.log();
  const auto init = pids_logging(log, "child_init_hook");
  const auto finish = pids_logging(log, "child_finish_hook");
  INFO(log);
  CHECK(init.size() >= at_least);
  CHECK(init == finish);
  CHECK(std::set<long>(init.begin(), init.end()).size() == init.size());  // once per child
}

void use(const ServerProcess& server, int clients) {
  for (int i = 0; i < clients; ++i) {
    Client client(server.port());
    REQUIRE(client.read_line());
    client.send("echo hi\r\n");
    REQUIRE(client.read_line() == "hi");
  }
}

const std::string base = "host: 127.0.0.1\nport: 0\nlog_level: 3\n";

}  // namespace

TEST_CASE("child_init_hook and child_finish_hook run once each in every prefork child", "[child][hooks]") {
  ServerProcess server(binary("probe_server"), base + "personality: prefork\nprefork:\n  min_servers: 2\n"
                                                      "  max_servers: 4\n  min_spare_servers: 1\n"
                                                      "  max_spare_servers: 3\n  max_requests: 2\n");
  use(server, 5);  // max_requests recycles children: their finish hook runs too
  check_hooks_balanced(server, 3);
}

TEST_CASE("child_init_hook and child_finish_hook run once each in every fork child", "[child][hooks]") {
  ServerProcess server(binary("probe_server"), base + "personality: fork\n");
  use(server, 4);
  CHECK(eventually([&] { return children_of(server.pid()).empty(); }));
  check_hooks_balanced(server, 4);
}

TEST_CASE("child_init_hook and child_finish_hook run once each in every multiplex worker", "[child][hooks]") {
  ServerProcess server(binary("probe_server"), base + "personality: multiplex\nmultiplex:\n  workers: 2\n");
  use(server, 3);
  check_hooks_balanced(server, 2);
}

TEST_CASE("a prefork child whose parent is killed closes its listeners at once and finishes its session",
          "[child][prefork][hardening]") {
  ServerProcess server(binary("probe_server"), base + "personality: prefork\nprefork:\n  min_servers: 2\n"
                                                      "  max_servers: 4\n  min_spare_servers: 1\n"
                                                      "  max_spare_servers: 3\n");
  server.expect_errors();
  Client busy(server.port());
  REQUIRE(busy.read_line());
  const std::vector<pid_t> children = children_of(server.pid());
  REQUIRE(children.size() >= 2);
  const int port = server.port();
  server.signal(SIGKILL);
  REQUIRE(server.wait_exit(5s));
  // Nobody holds the port any more: a new client is refused at once, a new server could bind.
  CHECK(eventually([&] {
    for (pid_t child : children)
      if (holds_listener(child, port)) return false;
    return true;
  }, 3s));
  CHECK(refuses_connections(port));
  busy.send("echo still served\r\n");  // the session in progress goes on
  CHECK(busy.read_line() == "still served");
  busy.send("close\r\n");
  CHECK(busy.closed_by_peer());
  CHECK(eventually([&] {
    for (pid_t child : children)
      if (alive(child)) return false;
    return true;
  }, 5s));
}

TEST_CASE("a multiplex worker whose parent is killed closes its listeners at once and its sessions",
          "[child][workers][hardening]") {
  ServerProcess server(binary("probe_server"), base + "personality: multiplex\nmultiplex:\n  workers: 2\n");
  server.expect_errors();
  Client client(server.port());
  REQUIRE(client.read_line());
  REQUIRE(eventually([&] { return children_of(server.pid()).size() == 2; }));
  const std::vector<pid_t> workers = children_of(server.pid());
  const int port = server.port();
  server.signal(SIGKILL);
  REQUIRE(server.wait_exit(5s));
  CHECK(eventually([&] {
    for (pid_t worker : workers)
      if (holds_listener(worker, port)) return false;
    return true;
  }, 3s));
  CHECK(refuses_connections(port));
  CHECK(client.closed_by_peer(5s));  // closed as on TERM
  CHECK(eventually([&] {
    for (pid_t worker : workers)
      if (alive(worker)) return false;
    return true;
  }, 5s));
}

TEST_CASE("TTOU never shrinks workers or a prefork pool to no process while the port stays open",
          "[child][signals][hardening]") {
  const std::string personality = GENERATE("workers", "prefork");
  const std::string yaml = personality == "workers"
                               ? base + "personality: multiplex\nmultiplex:\n  workers: 2\n"
                               : base + "personality: prefork\nprefork:\n  min_servers: 2\n  max_servers: 3\n"
                                        "  min_spare_servers: 0\n  max_spare_servers: 1\n";
  ServerProcess server(binary("probe_server"), yaml);
  REQUIRE(eventually([&] { return children_of(server.pid()).size() == 2; }));
  for (int i = 0; i < 3; ++i) {
    server.signal(SIGTTOU);
    std::this_thread::sleep_for(300ms);
  }
  INFO(personality << "\n" << server.log());
  CHECK(server.wait_for_log("keeps at least 1 child"));
  CHECK(eventually([&] { return children_of(server.pid()).size() == 1; }));
  std::this_thread::sleep_for(500ms);
  CHECK(children_of(server.pid()).size() == 1);
  Client client(server.port());  // still served
  CHECK(client.read_line(5s));
}

TEST_CASE("fork out of descriptors pauses accepting with one warning and serves every client",
          "[child][fork][limits][hardening]") {
  ServerProcess server(binary("chat_server"), base + "personality: fork\n",
                       Launch{}.with_wrapper({"/usr/bin/prlimit", "--nofile=32:32"}));
  std::vector<Client> clients;
  for (int i = 0; i < 60; ++i) clients.emplace_back(server.port());  // more than the parent has descriptors
  for (Client& client : clients) CHECK(client.read_line(10s) == "Welcome, to the server!");
  clients.clear();
  CHECK(eventually([&] { return children_of(server.pid()).empty(); }, 10s));
  CHECK(server.error_lines().empty());
}
