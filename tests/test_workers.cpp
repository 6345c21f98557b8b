// Multiplex workers (multiplex.workers: N) with real processes: N pids serve, a killed worker is
// replaced while the others' sessions carry on, TERM delivers queued output in every worker, HUP
// under a connecting client refuses nobody, TTIN/TTOU, the spread of 1,000 clients, chat rooms.

#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <thread>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

std::string workers_yaml(int workers, const std::string& more = "", int log_level = 3) {
  return "personality: multiplex\nhost: 127.0.0.1\nport: 0\nlog_level: " + std::to_string(log_level) +
         "\nmultiplex:\n  workers: " + std::to_string(workers) + "\n" + more;
}

long banner_pid(Client& client) {
  const auto banner = client.read_line();
  return banner ? pid_in(*banner) : -1;
}

// Connects clients until every one of `workers` processes holds at least one; returns them by pid.
std::map<long, std::vector<Client>> clients_on_every_worker(const ServerProcess& server, std::size_t workers) {
  std::map<long, std::vector<Client>> by_pid;
  for (int i = 0; i < 200 && by_pid.size() < workers; ++i) {
    Client client(server.port());
    const long pid = banner_pid(client);
    if (pid > 0) by_pid[pid].push_back(std::move(client));
  }
  return by_pid;
}

bool workers_become(const ServerProcess& server, std::size_t count) {
  return eventually([&] { return children_of(server.pid()).size() == count; });
}

}  // namespace

TEST_CASE("workers: N worker processes serve and the parent serves nobody", "[workers]") {
  ServerProcess server(binary("echo_server"), workers_yaml(3));
  REQUIRE(workers_become(server, 3));
  auto by_pid = clients_on_every_worker(server, 3);
  REQUIRE(by_pid.size() == 3);
  const auto workers = children_of(server.pid());
  for (auto& [pid, clients] : by_pid) {
    CHECK(std::find(workers.begin(), workers.end(), pid) != workers.end());
    for (Client& client : clients) {
      client.send("hello\r\n");
      CHECK(client.read_line() == "hello");
    }
  }
  CHECK(by_pid.count(server.pid()) == 0);
}

TEST_CASE("workers: a killed worker is replaced and the other worker's sessions carry on", "[workers]") {
  ServerProcess server(binary("echo_server"), workers_yaml(2));
  REQUIRE(workers_become(server, 2));
  auto by_pid = clients_on_every_worker(server, 2);
  REQUIRE(by_pid.size() == 2);
  const long victim = by_pid.begin()->first;
  Client& survivor = by_pid.rbegin()->second.front();
  ::kill(static_cast<pid_t>(victim), SIGKILL);
  CHECK(server.wait_for_log("child " + std::to_string(victim) + " killed by signal 9 (KILL); replacing it"));
  CHECK(by_pid.begin()->second.front().closed_by_peer());  // its clients lose their connection
  survivor.send("still here\r\n");
  CHECK(survivor.read_line() == "still here");
  CHECK(eventually([&] {
    const auto now = children_of(server.pid());
    return now.size() == 2 && std::find(now.begin(), now.end(), victim) == now.end();
  }));
  Client next(server.port());
  CHECK(banner_pid(next) > 0);
}

// multiplex.max_requests: a worker past it tells the parent, whose replacement starts accepting
// while the old one still drains its sessions: the crew never shrinks for as long as they last.
TEST_CASE("workers: a worker past max_requests is replaced before its last session ends", "[workers][recycle]") {
  ServerProcess server(binary("echo_server"), workers_yaml(2, "  max_requests: 1\n"));
  REQUIRE(workers_become(server, 2));
  Client lingering(server.port());
  const long draining = banner_pid(lingering);
  REQUIRE(draining > 0);
  bool left = false;  // a client of the same worker ended: that worker leaves, lingering still open
  for (int i = 0; i < 100 && !left; ++i) {
    Client once(server.port());
    const long pid = banner_pid(once);
    once.send("quit\r\n");
    CHECK(once.closed_by_peer());
    left = pid == draining;
  }
  REQUIRE(left);
  REQUIRE(server.wait_for_log("worker " + std::to_string(draining) + " served multiplex.max_requests (1) sessions"));
  CHECK(eventually([&] {  // the draining worker, the other one and the replacement
    const auto now = children_of(server.pid());
    return now.size() == 3 && std::find(now.begin(), now.end(), static_cast<pid_t>(draining)) != now.end();
  }, 5s));
  lingering.send("still served\r\n");
  CHECK(lingering.read_line() == "still served");
}

TEST_CASE("workers: TERM delivers queued output in every worker then everything exits", "[workers][signals]") {
  ServerProcess server(binary("probe_server"), workers_yaml(2));
  REQUIRE(workers_become(server, 2));
  auto by_pid = clients_on_every_worker(server, 2);
  REQUIRE(by_pid.size() == 2);
  std::vector<Client*> readers;
  for (auto& [pid, clients] : by_pid) {
    clients.front().send("flood 300000\r\n");  // queued: these clients are not reading yet
    readers.push_back(&clients.front());
  }
  std::this_thread::sleep_for(0.3s);
  server.signal(SIGTERM);
  REQUIRE(server.wait_for_log("TERM received"));
  for (Client* reader : readers) CHECK(reader->read_all(10s).size() == 300000);
  CHECK(server.wait_exit(10s) == 0);
  CHECK(server.count_in_log("TERM received in worker") == 2);
}

TEST_CASE("workers: QUIT ends every worker at once", "[workers][signals]") {
  ServerProcess server(binary("echo_server"), workers_yaml(2));
  auto by_pid = clients_on_every_worker(server, 2);
  REQUIRE(by_pid.size() == 2);
  server.signal(SIGQUIT);
  for (auto& [pid, clients] : by_pid) CHECK(clients.front().closed_by_peer(3s));
  CHECK(server.wait_exit(5s) == 0);
}

TEST_CASE("workers: HUP under a connecting client refuses nobody and the old workers finish their sessions",
          "[workers][restart]") {
  ServerProcess server(binary("echo_server"), workers_yaml(2, "graceful_timeout: 60\n"));
  REQUIRE(workers_become(server, 2));
  Client held(server.port());  // open across the restarts, in an old worker
  const long old_worker = banner_pid(held);
  REQUIRE(old_worker > 0);
  std::atomic<bool> running{true};
  std::atomic<int> served{0}, refused{0}, unanswered{0};
  std::thread connector([&] {
    for (int attempt = 0; running && attempt < 20000; ++attempt) {
      try {
        Client client(server.port());
        if (client.read_line(10s)) ++served;
        else ++unanswered;
      } catch (const std::runtime_error&) {
        ++refused;
      }
    }
  });
  bool restarted = true;
  for (int i = 0; i < 5 && restarted; ++i) {
    const std::size_t before = server.count_in_log("(restarted)");
    server.signal(SIGHUP);
    restarted = eventually([&] { return server.count_in_log("(restarted)") == before + 1; });
    std::this_thread::sleep_for(50ms);
  }
  running = false;
  connector.join();
  INFO(server.log());
  CHECK(restarted);
  CHECK(refused == 0);
  CHECK(unanswered == 0);
  CHECK(served > 5);
  held.send("opened before the restarts\r\n");
  CHECK(held.read_line() == "opened before the restarts");
  CHECK(::kill(static_cast<pid_t>(old_worker), 0) == 0);  // still serving its session
  held.send("quit\r\n");
  CHECK(held.closed_by_peer());
  CHECK(eventually([&] { return ::kill(static_cast<pid_t>(old_worker), 0) != 0 || zombies_of(server.pid()).size() > 0; }));
  // Left: the first process, whose pid stays the server's, the image serving now and its 2 workers.
  CHECK(eventually([&] {
    return children_of(server.pid()).size() == 1 && descendants_of(server.pid()).size() == 3 &&
           zombies_of(server.pid()).empty();
  }));
}

TEST_CASE("workers: TTIN adds a worker and TTOU removes one", "[workers][signals]") {
  ServerProcess server(binary("echo_server"), workers_yaml(2));
  REQUIRE(workers_become(server, 2));
  server.signal(SIGTTIN);
  CHECK(workers_become(server, 3));
  server.signal(SIGTTOU);
  CHECK(workers_become(server, 2));
  server.signal(SIGTTOU);
  CHECK(workers_become(server, 1));
  Client client(server.port());
  client.send("one left\r\n");
  CHECK(banner_pid(client) > 0);
  CHECK(client.read_line() == "one left");
}

TEST_CASE("workers: 1000 clients connecting at once spread 40 to 60 percent over 2 workers", "[workers][balance]") {
  ServerProcess server(binary("echo_server"), workers_yaml(2, "", 2));
  REQUIRE(workers_become(server, 2));
  const Outcome outcome = run(binary("netbench"), {"pids", "--port", std::to_string(server.port()), "--connections",
                                                   "1000", "--timeout", "10"},
                              60s);
  INFO(outcome.output);
  REQUIRE(outcome.status == 0);
  CHECK_THAT(outcome.output, Contains("clients=1000 distinct_pids=2 answered_at_once=1000"));
  std::smatch busiest;
  REQUIRE(std::regex_search(outcome.output, busiest, std::regex(R"(busiest_pid_percent=([0-9.]+))")));
  CHECK(std::stod(busiest[1]) <= 60.0);  // so the other holds at least 40
}

TEST_CASE("workers: each worker is its own chat room without a bus", "[workers][chat]") {
  ServerProcess server(binary("chat_server"), workers_yaml(2));
  REQUIRE(workers_become(server, 2));
  // Two clients in one worker hear each other; a client in the other worker hears nothing.
  std::map<long, std::vector<Client>> by_pid;
  for (int i = 0; i < 200 && (by_pid.size() < 2 || by_pid.begin()->second.size() < 2); ++i) {
    Client client(server.port());
    REQUIRE(client.read_line() == "Welcome, to the server!");
    const auto line = client.read_line();
    REQUIRE(line);
    by_pid[pid_in(*line)].push_back(std::move(client));
  }
  REQUIRE(by_pid.size() == 2);
  auto& room = by_pid.begin()->second;
  REQUIRE(room.size() >= 2);
  Client& elsewhere = by_pid.rbegin()->second.front();
  for (std::size_t i = 1; i < room.size(); ++i) room[i].read_all(0.2s);  // "Please welcome ..." lines
  elsewhere.read_all(0.2s);
  room[0].send("hello room\r\n");
  const auto heard = room[1].read_line();
  REQUIRE(heard);
  CHECK_THAT(*heard, Contains("hello room"));
  CHECK(elsewhere.silent_for(0.3s));
}

TEST_CASE("workers: a bad worker count is a configuration error", "[workers][config]") {
  const Outcome outcome = run(binary("echo_server"), {"--personality=multiplex", "--multiplex.workers=lots"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("expected auto or a number of worker processes from 1 to 1024"));
}

// Issue 19.17: systemd heard no STATUS under workers; it now counts every worker's sessions.
TEST_CASE("workers: systemd hears the sessions open in every worker in STATUS", "[workers][systemd]") {
  TempDir dir;
  const std::string path = (dir.path() / "notify").string();
  DatagramSink notify(path);
  ServerProcess server(binary("echo_server"), workers_yaml(2), Launch().with_env("NOTIFY_SOCKET", path));
  REQUIRE(workers_become(server, 2));
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<Client>(server.port()));
    REQUIRE(clients.back()->read_line());
  }
  CHECK_THAT(notify.until("STATUS=3 session(s) open in 2 worker(s)", 8s),
             Contains("STATUS=3 session(s) open in 2 worker(s)"));
  clients.clear();
  CHECK_THAT(notify.until("STATUS=0 session(s)", 8s), Contains("STATUS=0 session(s) open in 2 worker(s)"));
}
