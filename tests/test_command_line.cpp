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

TEST_CASE("config given as an empty value or a directory is an error and binds nothing", "[cli][errors][hardening]") {
  TempDir dir;
  // Loopback only: without the fix these ran with the defaults (every interface).
  const std::vector<std::string> loopback{"--host=127.0.0.1", "--port=0"};
  for (std::vector<std::string> args : {std::vector<std::string>{"--config="},
                                        std::vector<std::string>{"--config", dir.path().string()},
                                        std::vector<std::string>{"-c", ""}}) {
    args.insert(args.end(), loopback.begin(), loopback.end());
    const Outcome outcome = run(binary("echo_server"), args);
    INFO(outcome.output);
    CHECK(outcome.status == 2);
    CHECK_THAT(outcome.output, !Contains("listening on"));
  }
  CHECK_THAT(run(binary("echo_server"), {"--config=", "--host=127.0.0.1", "--port=0"}).output,
             Contains("--config=: needs a file name"));
  CHECK_THAT(run(binary("echo_server"), {"--config", dir.path().string(), "--host=127.0.0.1", "--port=0"}).output,
             Contains("it is a directory"));
}

TEST_CASE("listen on the command line with a bracketed IPv6 address is an address and not YAML", "[cli][hardening]") {
  const Outcome check = run(binary("echo_server"), {"--listen=[::]:8000", "--listen=[::1]:8001,127.0.0.1:8002",
                                                    "--check-config"});
  CHECK(check.status == 0);
  CHECK_THAT(check.output, Contains("listen: [\"[::]:8000\", \"[::1]:8001\", \"127.0.0.1:8002\"]"));
  ServerProcess server(binary("echo_server"), "log_level: 3\n", Launch().with_args({"--listen=[::1]:0"}).without_waiting());
  REQUIRE(server.wait_for_log("listening on [::1]:"));
  Client client(server.port_of("[::1]"), "::1");
  CHECK(client.read_line());
}

TEST_CASE("an unquoted star in the YAML config exits 2 with a hint to quote it", "[cli][errors][hardening]") {
  TempDir dir;
  const auto file = dir.write("star.yaml", "port: 0\nhost: *\n").string();
  const Outcome outcome = run(binary("echo_server"), {"--config", file});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains(file + ":2:8: YAML syntax error: alias not found after * (a value starting "
                                              "with '*' is YAML syntax: if * is meant as text, quote it: \"*\")"));
  const auto list = dir.write("v6.yaml", "listen:\n  - [::1]:8000\n").string();
  CHECK_THAT(run(binary("echo_server"), {"--config", list}).output, Contains("quote it: \"[::1]:8000\""));
}

TEST_CASE("a prefork key set dotted and again in the prefork block exits 2", "[cli][errors][hardening]") {
  TempDir dir;
  const auto file = dir.write("twice.yaml", "personality: prefork\nhost: 127.0.0.1\nport: 0\nprefork.max_servers: 10\n"
                                          "prefork:\n  max_servers: 20\n")
                        .string();
  const Outcome outcome = run(binary("echo_server"), {"--config", file});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains(file + ":6:3: duplicate key 'prefork.max_servers' (first set at line 4)"));
  CHECK_THAT(outcome.output, !Contains("listening on"));
}

TEST_CASE("a newline in a command-line value cannot forge a line of the check-config dump", "[cli][hardening]") {
  const Outcome outcome = run(binary("echo_server"), {"--pid_file=/x\nbackground: true", "--check-config"});
  REQUIRE(outcome.status == 0);
  CHECK_THAT(outcome.output, !Contains("\nbackground: true"));
  CHECK_THAT(outcome.output, Contains("background: false  # default"));
  // The dump loads back to the same values (the comment held a raw newline: "duplicate key").
  TempDir dir;
  const std::string dump = outcome.output.substr(0, outcome.output.rfind("# configuration OK"));
  const auto file = dir.write("dump.yaml", dump).string();
  const Outcome again = run(binary("echo_server"), {"--config", file, "--check-config"});
  CHECK(again.status == 0);
  CHECK_THAT(again.output, Contains("pid_file: \"/x\\x0abackground: true\""));
}

// --check-config runs every check the start runs before binding (item 11 of the second hardening
// round): a pid file or log file in a missing directory and an unknown user or group are refused
// with exit status 2 and the message the start gives; nothing is written.
TEST_CASE("check-config refuses the process settings the start refuses with the same message", "[cli][hardening]") {
  TempDir dir;
  const std::string missing = (dir.path() / "no-such-directory").string();
  const std::vector<std::pair<std::string, std::string>> cases{
      {"--pid_file=" + missing + "/server.pid", "pid_file: cannot open the directory of " + missing + "/server.pid"},
      {"--log_file=" + missing + "/server.log", missing + "/server.log"},
      {"--user=no-such-user-netserver", "user: there is no user 'no-such-user-netserver' on this system"},
      {"--group=no-such-group-netserver", "group: there is no group 'no-such-group-netserver' on this system"},
  };
  for (const auto& [argument, expected] : cases) {
    INFO(argument);
    const Outcome started = run(binary("echo_server"), {"--port=0", argument});
    const Outcome checked = run(binary("echo_server"), {"--port=0", argument, "--check-config"});
    CHECK(started.status != 0);
    CHECK_THAT(started.output, Contains(expected));
    CHECK(checked.status == 2);
    CHECK_THAT(checked.output, Contains(expected) && !Contains("configuration OK"));
  }
  CHECK_FALSE(std::filesystem::exists(missing));
  const std::string pid_file = (dir.path() / "server.pid").string();
  const Outcome good = run(binary("echo_server"), {"--port=0", "--pid_file=" + pid_file, "--check-config"});
  CHECK(good.status == 0);
  CHECK_FALSE(std::filesystem::exists(pid_file));  // checked, never written
}
