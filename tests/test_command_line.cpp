// The command line and setup failures, as a user meets them: exit statuses and messages.

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

TEST_CASE("help lists the keys and personalities and version names the version", "[cli]") {
  const Outcome help = run(binary("echo_server"), {"--help"});
  CHECK(help.status == 0);
  CHECK_THAT(help.output, Contains("Usage:") && Contains("max_line") && Contains("graceful_timeout") && Contains("single"));
  const Outcome version = run(binary("echo_server"), {"--version"});
  CHECK(version.status == 0);
  CHECK_THAT(version.output, Contains("echo (netserver 0.2.0)"));
}

TEST_CASE("check-config prints the effective configuration with origins and binds nothing", "[cli]") {
  TempDir dir;
  const auto file = dir.write("c.yaml", "port: 9999\nlog_level: 3\n").string();
  const Outcome outcome = run(binary("echo_server"), {"--config", file, "--check-config", "--log_level=4"});
  CHECK(outcome.status == 0);
  CHECK_THAT(outcome.output, Contains("port: 9999  # " + file + ":1:7"));
  CHECK_THAT(outcome.output, Contains("log_level: 4  # command line --log_level=4"));
  CHECK_THAT(outcome.output, Contains("max_line: 65536  # default"));
  CHECK_THAT(outcome.output, Contains("# configuration OK"));
  CHECK_THAT(outcome.output, !Contains("listening on"));
}

TEST_CASE("a bad config exits with status 2 before binding and names file and line and column", "[cli][errors]") {
  TempDir dir;
  const auto file = dir.write("bad.yaml", "host: 127.0.0.1\nport: 0\nmax_lines: 10\n").string();
  const Outcome outcome = run(binary("echo_server"), {"--config", file});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains(file + ":3:1: unknown key 'max_lines'; did you mean 'max_line'?"));
  CHECK_THAT(outcome.output, !Contains("listening on"));

  const Outcome personality = run(binary("echo_server"), {"--personality=forking"});
  CHECK(personality.status == 2);
  CHECK_THAT(personality.output, Contains("--personality=forking: expected one of: ") && Contains("single"));

  const Outcome missing = run(binary("echo_server"), {"--config", "/no/such/file.yaml"});
  CHECK(missing.status == 2);
  CHECK_THAT(missing.output, Contains("cannot read config file '/no/such/file.yaml': No such file or directory"));
}

TEST_CASE("a port in use exits non-zero with 'cannot bind <addr>: <reason>'", "[cli][errors]") {
  const int holder = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(holder, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(holder, 1) == 0);
  socklen_t length = sizeof address;
  ::getsockname(holder, reinterpret_cast<sockaddr*>(&address), &length);
  const std::string port = std::to_string(ntohs(address.sin_port));

  const Outcome outcome = run(binary("echo_server"), {"--host=127.0.0.1", "--port=" + port});
  ::close(holder);
  CHECK(outcome.status == 1);
  CHECK_THAT(outcome.output, Contains("[error]") && Contains("cannot bind 127.0.0.1:" + port + ": Address already in use"));
}

TEST_CASE("an address the machine does not have cannot be bound", "[cli][errors]") {
  const Outcome outcome = run(binary("echo_server"), {"--listen=192.0.2.1:0"});
  CHECK(outcome.status == 1);
  CHECK_THAT(outcome.output, Contains("cannot bind 192.0.2.1:0: Cannot assign requested address"));
}
