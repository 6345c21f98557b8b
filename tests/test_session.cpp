// The Handler/Session API and the per-connection PROCESS FLOW, through probe_server, under the
// personalities that exist: the same handler runs unchanged under each.

#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <csignal>
#include <thread>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

ServerProcess probe(const std::string& personality, const std::string& extra = "") {
  return ServerProcess(binary("probe_server"),
                       "host: 127.0.0.1\nport: 0\nlog_level: 3\npersonality: " + personality + "\n" + extra);
}

// "line 42 xxx...x\r\n": 100 bytes in all.
std::string fmt_line(int i) {
  std::string line = "line " + std::to_string(i) + " ";
  return line + std::string(98 - line.size(), 'x') + "\r\n";
}

// Positions of `needles` in `text`, in order; fails when one is missing or out of order.
void require_in_order(const std::string& text, const std::vector<std::string>& needles) {
  std::size_t at = 0;
  for (const std::string& needle : needles) {
    INFO("looking for \"" << needle << "\" after position " << at << " in:\n" << text);
    const std::size_t found = text.find(needle, at);
    REQUIRE(found != std::string::npos);
    at = found + needle.size();
  }
}

}  // namespace

TEST_CASE("set_timeout calls on_timeout once and a new call replaces the pending one", "[session][timers]") {
  const std::string personality = GENERATE("single", "multiplex");
  ServerProcess server = probe(personality);
  Client client(server.port());
  REQUIRE(client.read_line());
  client.send("timeout 0.3\r\n");
  CHECK(client.read_line(3s) == "timeout fired");

  client.send("timeout 0.2\r\ntimeout 0.6\r\necho after\r\n");  // re-arming replaces the 0.2 s timer
  CHECK(client.read_line() == "after");
  CHECK(client.silent_for(0.4s));
  CHECK(client.read_line(3s) == "timeout fired");
  CHECK(client.silent_for(0.3s));

  client.send("timeout 0.2\r\ntimeout 0\r\n");  // 0 cancels
  CHECK(client.silent_for(0.5s));
}

TEST_CASE("a handler that throws loses its own session and the server keeps serving", "[session][robustness]") {
  const std::string personality = GENERATE("single", "multiplex");
  ServerProcess server = probe(personality);
  server.expect_errors();
  {
    Client client(server.port());
    REQUIRE(client.read_line());
    client.send("throw\r\n");
    CHECK(client.closed_by_peer());
  }
  CHECK(server.wait_for_log("handler failed for 127.0.0.1:"));
  CHECK_THAT(server.log(), Contains("probe exception"));
  Client next(server.port());
  REQUIRE(next.read_line());
  next.send("echo fine\r\n");
  CHECK(next.read_line() == "fine");
}

TEST_CASE("on_eof runs when the client stops sending and its reply is delivered before close", "[session]") {
  const std::string personality = GENERATE("single", "multiplex");
  ServerProcess server = probe(personality);
  Client client(server.port());
  REQUIRE(client.read_line());
  client.send("echo one\r\n");
  ::shutdown(client.fd(), SHUT_WR);
  CHECK(client.read_all() == "one\r\neof seen\r\n");
}

TEST_CASE("hooks run in the PROCESS FLOW order", "[server][hooks]") {
  ServerProcess server = probe("multiplex");
  int port = 0;
  {
    Client client(server.port());
    port = client.local_port();
    REQUIRE(client.read_line());
    client.send("close\r\n");
    CHECK(client.closed_by_peer());
  }
  const std::string peer = "127.0.0.1:" + std::to_string(port);
  REQUIRE(server.wait_for_log("hook post_process_request_hook " + peer));
  CHECK(server.stop() == 0);
  require_in_order(server.log(), {"hook configure_hook", "hook post_configure_hook", "listening on",
                                  "hook post_bind_hook", "hook pre_loop_hook", "connection from " + peer,
                                  "hook post_accept_hook " + peer, "hook allow_deny_hook " + peer,
                                  "hook post_process_request_hook " + peer, "closed " + peer,
                                  "hook pre_server_close_hook", "probe stopped"});
}

TEST_CASE("a refused client gets only request_denied_hook - never the handler", "[server][hooks]") {
  ServerProcess server = probe("multiplex", "probe:\n  deny: true\n");
  Client client(server.port());
  CHECK(client.read_line() == "denied");  // sent by request_denied_hook; no "probe ready"
  CHECK(client.closed_by_peer());
  REQUIRE(server.wait_for_log("hook post_process_request_hook"));
  require_in_order(server.log(), {"hook allow_deny_hook", "access denied", "hook request_denied_hook",
                                  "hook post_process_request_hook"});
  CHECK(server.count_in_log("closed 127.0.0.1") == 0);
}

TEST_CASE("a large reply written from inside a handler never disturbs the input still to be read", "[session]") {
  const std::string personality = GENERATE("single", "multiplex");
  ServerProcess server = probe(personality);
  Client client(server.port());
  REQUIRE(client.read_line());
  // The handler sleeps, the next packet arrives meanwhile, then `flood` writes 200 KB at once
  // while `echo one` is still waiting in the same input buffer.
  // The second packet is long enough to cover `echo one` if it were read into the same buffer.
  const std::string second(60, 'z');
  client.send("sleep 0.3\r\nflood 200000\r\necho one\r\n");
  std::this_thread::sleep_for(0.1s);
  client.send("echo " + second + "\r\n");
  for (int i = 0; i < 200; ++i) REQUIRE(client.read_line() == std::string(998, 'f'));
  CHECK(client.read_line() == "one");
  CHECK(client.read_line() == second);
}

TEST_CASE("a closing session whose client takes no output is dropped after graceful_timeout", "[session][limits]") {
  ServerProcess server = probe("multiplex", "max_output: 16M\ngraceful_timeout: 1\n");
  Client client(server.port());
  REQUIRE(client.read_line());
  client.send("flood 12000000\r\nclose\r\n");  // far more than the kernel buffers; never read
  CHECK(server.wait_for_log("took none of its last output for 1 s", 10s));
  CHECK(server.wait_for_log("output not taken"));
}

TEST_CASE("a client that reads is never dropped for max_output - even far below one read of input",
          "[session][limits]") {
  const std::string personality = GENERATE("single", "multiplex");
  ServerProcess server(binary("echo_server"),
                       "host: 127.0.0.1\nport: 0\npersonality: " + personality + "\nmax_output: 4K\n");
  Client client(server.port());
  REQUIRE(client.read_line());
  std::string burst;
  for (int i = 0; i < 2000; ++i) burst += fmt_line(i);
  REQUIRE(client.send(burst));  // 200 KB in one go: many reads' worth of replies, none waiting long
  for (int i = 0; i < 2000; ++i) {
    const auto line = client.read_line();
    REQUIRE(line);
    REQUIRE(*line + "\r\n" == fmt_line(i));
  }
  CHECK(server.count_in_log("disconnecting") == 0);
}

TEST_CASE("a client whose output stays above max_output_soft for its grace period is dropped", "[session][limits]") {
  ServerProcess server = probe("multiplex", "max_output: 64M\nmax_output_soft: 256K\nmax_output_soft_seconds: 1\n");
  Client reader(server.port());
  REQUIRE(reader.read_line());
  reader.send("flood 4000000\r\n");  // read at once: above the soft limit far less than a second
  CHECK(reader.read_all(1.5s).size() >= 4000000);
  Client stuck(server.port());
  REQUIRE(stuck.read_line());
  const int stuck_port = stuck.local_port();
  stuck.send("flood 20000000\r\n");  // not read until the server gave up on it
  CHECK(server.wait_for_log("disconnecting 127.0.0.1:" + std::to_string(stuck_port), 5s));
  CHECK(stuck.closed_by_peer(5s));
  CHECK_THAT(server.log(), Contains("its output queue stayed above max_output_soft (262144 bytes) for 1 s"));
  CHECK(server.count_in_log("disconnecting") == 1);
}

TEST_CASE("max_output_soft must be below max_output", "[session][config]") {
  const Outcome outcome = run(binary("echo_server"), {"--max_output=1M", "--max_output_soft=2M"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("max_output_soft must be less than max_output"));
}
