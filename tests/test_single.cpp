// The Single personality: one client at a time, the rest wait in the kernel backlog; TERM lets
// the current session finish.

#include <catch2/catch.hpp>

#include <csignal>
#include <thread>

#include "harness.hpp"

using namespace harness;

namespace {
const std::string yaml = "personality: single\nhost: 127.0.0.1\nport: 0\nlog_level: 3\n";
}

TEST_CASE("single serves one client at a time and the next sees nothing until the first leaves", "[single]") {
  ServerProcess server(binary("echo_server"), yaml);
  Client first(server.port());
  const auto banner = first.read_line();
  REQUIRE(banner);

  Client second(server.port());  // the kernel completes the handshake; the server does not accept
  second.send("hello from the second\r\n");
  CHECK(second.silent_for(0.5s));

  first.send("still mine\r\n");
  CHECK(first.read_line() == "still mine");
  first.send("quit\r\n");
  CHECK(first.closed_by_peer());

  const auto second_banner = second.read_line();
  REQUIRE(second_banner);
  CHECK(pid_in(*second_banner) == pid_in(*banner));  // same process serves everyone
  CHECK(second.read_line() == "hello from the second");
}

TEST_CASE("single: a client that disconnects abruptly frees the server for the next", "[single]") {
  ServerProcess server(binary("echo_server"), yaml);
  {
    Client first(server.port());
    REQUIRE(first.read_line());
    first.reset();
  }
  Client second(server.port());
  REQUIRE(second.read_line(3s));
}

TEST_CASE("single: TERM lets the current session finish and then exits 0", "[single][signals]") {
  ServerProcess server(binary("echo_server"), yaml);
  Client client(server.port());
  REQUIRE(client.read_line());
  server.signal(SIGTERM);
  REQUIRE(server.wait_for_log("TERM received"));
  client.send("reply please\r\n");
  CHECK(client.read_line() == "reply please");
  client.send("quit\r\n");
  CHECK(client.closed_by_peer());
  CHECK(server.wait_exit(5s) == 0);
  CHECK(server.error_lines().empty());
}

TEST_CASE("single: the session still open after graceful_timeout is cut", "[single][signals]") {
  ServerProcess server(binary("echo_server"), yaml + "graceful_timeout: 0.5\n");
  Client client(server.port());
  REQUIRE(client.read_line());
  server.signal(SIGTERM);
  CHECK(client.closed_by_peer(5s));
  CHECK(server.wait_exit(5s) == 0);
  CHECK(server.log().find("graceful timeout: cutting 1 session(s)") != std::string::npos);
}

TEST_CASE("single: QUIT stops at once", "[single][signals]") {
  ServerProcess server(binary("echo_server"), yaml);
  Client client(server.port());
  REQUIRE(client.read_line());
  server.signal(SIGQUIT);
  CHECK(client.closed_by_peer(3s));
  CHECK(server.wait_exit(3s) == 0);
}
