// The echo demo against the real echo_server binary: banner, verbatim echo, quit/bye, bad input.

#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <csignal>
#include <regex>
#include <thread>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;
using Catch::Matchers::Matches;

namespace {

const std::string base_yaml = "host: 127.0.0.1\nport: 0\nlog_level: 3\n";

ServerProcess echo(const std::string& extra_yaml = "", std::vector<std::string> args = {}) {
  return ServerProcess(binary("echo_server"), base_yaml + extra_yaml, Launch().with_args(std::move(args)));
}

}  // namespace

TEST_CASE("the banner names the demo and the personality and the serving pid", "[echo]") {
  ServerProcess server = echo();
  Client client(server.port());
  const auto banner = client.read_line();
  REQUIRE(banner);
  CHECK_THAT(*banner, Matches(R"(Welcome to "echo" \(personality single, pid \d+\))"));
  CHECK(pid_in(*banner) == server.pid());
}

TEST_CASE("every line comes back verbatim with CRLF", "[echo]") {
  ServerProcess server = echo();
  Client client(server.port());
  REQUIRE(client.read_line());
  const std::vector<std::string> lines{"hello", "  spaces  and\ttabs ", "", "ünïcödé ✓", "a\rb", "x"};
  std::string all;
  for (const std::string& line : lines) all += line + "\r\n";
  client.send(all);
  for (const std::string& line : lines) CHECK(client.read_line() == line);
  client.send("lf only\n");
  client.send("split ");
  std::this_thread::sleep_for(50ms);
  client.send("line\r");
  std::this_thread::sleep_for(50ms);
  client.send("\n");
  CHECK(client.read_all(0.5s) == "lf only\r\nsplit line\r\n");
}

TEST_CASE("quit and bye close the connection", "[echo]") {
  ServerProcess server = echo();
  for (const std::string word : {"quit", "bye"}) {
    Client client(server.port());
    REQUIRE(client.read_line());
    client.send("first\r\n" + word + "\r\nnever echoed\r\n");
    CHECK(client.read_line() == "first");
    CHECK(client.read_all() == "");
  }
  CHECK(server.wait_for_log("server closed", 2s));
}

TEST_CASE("connections are logged at info level with the peer address", "[echo][log]") {
  ServerProcess server = echo();
  int port = 0;
  {
    Client client(server.port());
    port = client.local_port();
    REQUIRE(client.read_line());
    client.send("abc\r\nquit\r\n");
    CHECK(client.closed_by_peer());
  }
  const std::string peer = "127.0.0.1:" + std::to_string(port);
  REQUIRE(server.wait_for_log("closed " + peer));
  const std::string log = server.log();
  CHECK(std::regex_search(log, std::regex(R"(\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] \[info\] \[\d+\] connection from )" + peer)));
  CHECK_THAT(log, Contains("bytes in"));
  CHECK(server.error_lines().empty());
}

TEST_CASE("an over-long line gets one error line and loses only its own connection", "[echo][limits]") {
  ServerProcess server = echo("max_line: 100\n");
  SECTION("a complete line that is too long") {
    Client client(server.port());
    REQUIRE(client.read_line());
    client.send(std::string(100, 'a') + "\r\n" + std::string(101, 'b') + "\r\n");
    CHECK(client.read_line() == std::string(100, 'a'));
    CHECK(client.read_line() == "error: line too long");
    CHECK(client.read_all() == "");
  }
  SECTION("a flood without any line end is cut off without buffering it") {
    Client client(server.port());
    REQUIRE(client.read_line());
    client.send(std::string(1 << 20, 'c'));  // the server stops reading after max_line bytes
    CHECK(client.read_line() == "error: line too long");
    CHECK(client.closed_by_peer());
  }
  Client next(server.port());
  REQUIRE(next.read_line());
  next.send("still serving\r\n");
  CHECK(next.read_line() == "still serving");
}

TEST_CASE("idle clients are closed after `timeout` with a line saying why", "[echo][timeout]") {
  ServerProcess server = echo("timeout: 0.3\n");
  Client client(server.port());
  REQUIRE(client.read_line());
  client.send("ping\r\n");
  CHECK(client.read_line() == "ping");
  CHECK(client.read_line(3s) == "error: timed out after 0.3 s without input");
  CHECK(client.closed_by_peer());
}

TEST_CASE("a client that vanishes mid-reply does not take the server down (no SIGPIPE)", "[echo][robustness]") {
  ServerProcess server = echo();
  for (int round = 0; round < 5; ++round) {
    Client client(server.port());
    client.send(std::string(200000, 'x') + "\n" + std::string(200000, 'y') + "\n");
    client.reset();
  }
  Client healthy(server.port());
  REQUIRE(healthy.read_line());
  healthy.send("alive?\r\n");
  CHECK(healthy.read_line() == "alive?");
}

TEST_CASE("a last line without a line end is still answered at EOF", "[echo]") {
  ServerProcess server = echo();
  Client client(server.port());
  REQUIRE(client.read_line());
  client.send("no newline");
  ::shutdown(client.fd(), SHUT_WR);
  CHECK(client.read_all() == "no newline\r\n");
}
