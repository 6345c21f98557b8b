// Stopping: TERM turns new clients away at once under every personality while the open sessions
// finish, and a second TERM during the teardown does not kill the process.

#include <catch2/catch.hpp>

#include <csignal>

#include "harness.hpp"

using namespace harness;

namespace {

std::string yaml_for(const std::string& personality, const std::string& more = "") {
  return "personality: " + personality + "\nhost: 127.0.0.1\nport: 0\nmax_output: 64M\n" + more +
         "prefork:\n  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n  max_spare_servers: 3\n";
}

}  // namespace

TEST_CASE("TERM refuses new clients at once under every personality while a session is still open",
          "[stop][signals]") {
  const std::string personality = GENERATE("single", "multiplex", "prefork");
  ServerProcess server(binary("probe_server"), yaml_for(personality, "graceful_timeout: 30\n"));
  Client open(server.port());
  REQUIRE(open.read_line());
  open.send("flood 20000000\r\n");  // read no further: the session (closing or not) outlives the TERM
  REQUIRE(open.read_line() == std::string(998, 'f'));
  server.signal(SIGTERM);
  REQUIRE(server.wait_for_log("TERM received"));
  CHECK(eventually([&] { return refuses_connections(server.port()); }, 2s));
  CHECK(listening_sockets(server.port()).empty());
  CHECK_FALSE(server.wait_exit(0.3s).has_value());  // the session still holds the server
  open.reset();
  CHECK(server.wait_exit(10s) == 0);
}

TEST_CASE("a second TERM during the teardown does not kill the server", "[stop][signals]") {
  const std::string personality = GENERATE("single", "prefork");
  ServerProcess server(binary("probe_server"), yaml_for(personality, "probe:\n  close_delay: 1\n"));
  server.signal(SIGTERM);
  REQUIRE(server.wait_for_log("hook pre_server_close_hook"));
  server.signal(SIGTERM);
  server.signal(SIGINT);
  CHECK(server.wait_exit(10s) == 0);
  CHECK(server.count_in_log("probe stopped") == 1);
}
