// The Multiplex personality: every client at once in one process, bounded output queues,
// max_connections, descriptor exhaustion, idle timeouts and graceful TERM.

#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

const std::string yaml = "personality: multiplex\nhost: 127.0.0.1\nport: 0\nlog_level: 3\n";

// utime + stime of a process, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stol(field);
    if (i == 15) break;
  }
  return static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

TEST_CASE("multiplex serves every client at once from one process", "[multiplex]") {
  ServerProcess server(binary("echo_server"), yaml);
  std::vector<Client> clients;
  std::vector<long> pids;
  for (int i = 0; i < 5; ++i) {
    clients.emplace_back(server.port());
    const auto banner = clients.back().read_line();
    REQUIRE(banner);
    CHECK_THAT(*banner, Contains("personality multiplex"));
    pids.push_back(pid_in(*banner));
  }
  for (std::size_t i = 0; i < clients.size(); ++i) clients[i].send("client " + std::to_string(i) + "\r\n");
  for (std::size_t i = 0; i < clients.size(); ++i) CHECK(clients[i].read_line() == "client " + std::to_string(i));
  CHECK(std::all_of(pids.begin(), pids.end(), [&](long pid) { return pid == server.pid(); }));
}

TEST_CASE("multiplex: a client that stops reading is dropped at max_output and nobody else waits", "[multiplex][limits]") {
  ServerProcess server(binary("probe_server"), yaml + "max_output: 256K\n");
  Client slow(server.port());
  REQUIRE(slow.read_line());
  const int slow_port = slow.local_port();
  slow.send("flood 20000000\r\n");  // 20 MB for a client that reads nothing
  Client other(server.port());
  REQUIRE(other.read_line());
  other.send("echo unaffected\r\n");
  CHECK(other.read_line() == "unaffected");
  CHECK(server.wait_for_log("disconnecting 127.0.0.1:" + std::to_string(slow_port)));
  CHECK_THAT(server.log(), Contains("its socket is full and its output queue would pass max_output (262144 bytes)"));
  CHECK(slow.closed_by_peer());
}

TEST_CASE("multiplex: past max_connections a client gets 'server busy' and accepting resumes when a slot frees",
          "[multiplex][limits]") {
  ServerProcess server(binary("echo_server"), yaml + "max_connections: 2\n");
  Client a(server.port()), b(server.port());
  REQUIRE(a.read_line());
  REQUIRE(b.read_line());
  {
    Client c(server.port());
    CHECK(c.read_line() == "error: server busy");
    CHECK(c.closed_by_peer());
  }
  a.send("quit\r\n");
  CHECK(a.closed_by_peer());
  REQUIRE(server.wait_for_log("closed 127.0.0.1"));
  Client d(server.port());
  const auto banner = d.read_line();
  REQUIRE(banner);
  CHECK_THAT(*banner, Contains("Welcome"));
}

TEST_CASE("multiplex: running out of descriptors is logged once and does not spin", "[multiplex][limits]") {
  ServerProcess server(binary("echo_server"), yaml, Launch().with_wrapper({"/usr/bin/prlimit", "--nofile=24:24"}));
  std::vector<Client> clients;
  for (int i = 0; i < 40; ++i) clients.emplace_back(server.port());  // more than the server can accept
  REQUIRE(server.wait_for_log("Too many open files"));
  const double before = cpu_seconds(server.pid());
  std::this_thread::sleep_for(1s);
  const double used = cpu_seconds(server.pid()) - before;
  CHECK(used < 0.3);  // paused, not spinning on accept()
  CHECK(server.count_in_log("Too many open files") == 1);

  std::size_t served = 0;
  for (Client& client : clients) {
    if (!client.read_line(0.2s)) break;
    ++served;
  }
  CHECK(served > 0);
  CHECK(served < clients.size());
  clients.erase(clients.begin(), clients.begin() + static_cast<std::ptrdiff_t>(served));  // they leave
  auto banner = clients.front().read_line(3s);  // the waiting ones are accepted now
  REQUIRE(banner);
  CHECK_THAT(*banner, Contains("Welcome"));
}

TEST_CASE("multiplex: idle clients time out while active ones stay", "[multiplex][timeout]") {
  ServerProcess server(binary("echo_server"), yaml + "timeout: 0.5\n");
  Client idle(server.port()), active(server.port());
  REQUIRE(idle.read_line());
  REQUIRE(active.read_line());
  for (int i = 0; i < 8; ++i) {
    active.send("tick\r\n");
    REQUIRE(active.read_line() == "tick");
    std::this_thread::sleep_for(0.1s);
  }
  CHECK(idle.read_line() == "error: timed out after 0.5 s without input");
  CHECK(idle.closed_by_peer());
  active.send("still here\r\n");
  CHECK(active.read_line() == "still here");
}

TEST_CASE("multiplex: an over-long line costs only its own connection", "[multiplex][limits]") {
  ServerProcess server(binary("echo_server"), yaml + "max_line: 1K\n");
  Client bystander(server.port()), offender(server.port());
  REQUIRE(bystander.read_line());
  REQUIRE(offender.read_line());
  offender.send(std::string(5000, 'x') + "\r\n");
  CHECK(offender.read_line() == "error: line too long");
  CHECK(offender.closed_by_peer());
  bystander.send("fine\r\n");
  CHECK(bystander.read_line() == "fine");
}

TEST_CASE("multiplex: TERM delivers queued output - closes every session and exits 0", "[multiplex][signals]") {
  ServerProcess server(binary("probe_server"), yaml);
  Client reader(server.port()), idle(server.port());
  REQUIRE(reader.read_line());
  REQUIRE(idle.read_line());
  reader.send("flood 400000\r\n");  // queued: this client is not reading yet
  std::this_thread::sleep_for(0.3s);
  server.signal(SIGTERM);
  REQUIRE(server.wait_for_log("TERM received"));
  const std::string received = reader.read_all(10s);  // read only now: everything must still come
  CHECK(received.size() == 400000);
  CHECK(idle.closed_by_peer());
  CHECK(server.wait_exit(10s) == 0);
}
