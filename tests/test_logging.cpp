// Logging targets: a log file reopened on SIGUSR1 after logrotate renamed it (also by PreFork
// children), syslog datagrams, and the access line per connection.

#include <catch2/catch.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

std::string read(const std::filesystem::path& file) {
  std::ifstream in(file);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool file_contains(const std::filesystem::path& file, const std::string& text, Seconds timeout = 5s) {
  return eventually([&] { return read(file).find(text) != std::string::npos; }, timeout);
}

void one_session(int port, const std::string& line) {
  Client client(port);
  REQUIRE(client.read_line());
  client.send("echo " + line + "\r\n");
  REQUIRE(client.read_line() == line);
}

}  // namespace

TEST_CASE("SIGUSR1 reopens the log file after it was renamed", "[logging]") {
  const std::string personality = GENERATE("multiplex", "prefork");
  TempDir dir;
  const auto log = dir.path() / "server.log";
  ServerProcess server(binary("probe_server"), "personality: " + personality + "\nhost: 127.0.0.1\nport: 0\n"
                                                   "log_level: 3\nlog_file: " + log.string() + "\nprefork:\n"
                                                   "  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n"
                                                   "  max_spare_servers: 3\n",
                       Launch().without_waiting());
  REQUIRE(file_contains(log, "listening on 127.0.0.1:"));
  const std::string text = read(log);
  const int port = std::stoi(text.substr(text.find("listening on 127.0.0.1:") + 23));
  one_session(port, "before");
  REQUIRE(file_contains(log, "closed 127.0.0.1:"));

  std::filesystem::rename(log, dir.path() / "server.log.1");  // what logrotate does
  server.signal(SIGUSR1);
  REQUIRE(file_contains(log, "USR1: log reopened"));
  one_session(port, "after");
  CHECK(file_contains(log, "connection from 127.0.0.1:"));
  CHECK(file_contains(log, "closed 127.0.0.1:"));  // written by the child under prefork
  const std::string rotated = read(dir.path() / "server.log.1");
  CHECK(std::count(rotated.begin(), rotated.end(), '\n') >= 3);
  CHECK(read(log).find("listening on") == std::string::npos);  // nothing old went to the new file
}

TEST_CASE("log_file syslog sends RFC 3164 lines with ident and pid and facility", "[logging]") {
  TempDir dir;
  const std::string socket = (dir.path() / "log").string();
  DatagramSink syslog(socket);
  ServerProcess server(binary("echo_server"),
                       "host: 127.0.0.1\nport: 0\nlog_level: 3\nlog_file: syslog\nsyslog_socket: " + socket +
                           "\nsyslog_ident: echo-test\nsyslog_facility: local3\n",
                       Launch().without_waiting());
  const std::string lines = syslog.until("listening on 127.0.0.1:");
  // local3 (19) * 8 + notice (5) = 157
  CHECK(std::regex_search(lines, std::regex(R"(<157>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d echo-test\[)" +
                                            std::to_string(server.pid()) + R"(\]: listening on 127\.0\.0\.1:\d+)")));
  const std::size_t at = lines.find("listening on 127.0.0.1:");
  Client client(std::stoi(lines.substr(at + 23)));
  REQUIRE(client.read_line());
  client.close();
  CHECK_THAT(syslog.until("closed 127.0.0.1:"), Contains("<158>"));  // info (6): the access line
}

TEST_CASE("syslog that cannot be reached is a clear error at start-up", "[logging]") {
  const Outcome outcome = run(binary("echo_server"), {"--log_file=syslog", "--syslog_socket=/no/such/socket"});
  CHECK(outcome.status == 1);
  CHECK_THAT(outcome.output, Contains("cannot log to syslog at /no/such/socket: No such file or directory"));
}

TEST_CASE("one access line per connection with peer and duration and bytes each way", "[logging]") {
  ServerProcess server(binary("echo_server"), "host: 127.0.0.1\nport: 0\nlog_level: 3\n");
  int port = 0;
  {
    Client client(server.port());
    port = client.local_port();
    REQUIRE(client.read_line());
    client.send("12345\r\nquit\r\n");
    REQUIRE(client.read_line() == "12345");
  }
  REQUIRE(server.wait_for_log("closed 127.0.0.1:" + std::to_string(port)));
  CHECK(std::regex_search(server.log(), std::regex(R"(\[info\] \[\d+\] closed 127\.0\.0\.1:)" + std::to_string(port) +
                                                   R"( \(session 1\): server closed; \d+\.\d{3} s, 13 bytes in, \d+ bytes out)")));
}
