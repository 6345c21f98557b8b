// Fair fan-out in a room (issue 26) against the real binaries: a flooder is slowed to its readers'
// pace, a reader that keeps reading keeps its session, a client that stopped reading is cut
// within output_stall_timeout, memory stays bounded -- under Multiplex, under workers, and with a
// sequential (Conversation) relay; and max_input_rate's flood control.

#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "fanout_scenario.hpp"
#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

// A short stall timeout keeps the test short; the scenario allows for it.
constexpr double stall = fanout_stall_seconds;
const std::string yaml = "host: 127.0.0.1\nport: 0\nlog_level: 3\n" + fanout_stall_yaml();

}  // namespace

TEST_CASE("multiplex chat: a flooder is slowed - every line reaches the reader - the non-reader is cut", "[fanout]") {
  ServerProcess server(binary("chat_server"), yaml + "personality: multiplex\n");
  check_fanout(run_fanout(server, true), stall);
}

TEST_CASE("workers chat: the flooder of a worker's room is slowed and the non-reader cut", "[fanout][workers]") {
  ServerProcess server(binary("chat_server"), yaml + "personality: multiplex\nmultiplex:\n  workers: 2\n");
  check_fanout(run_fanout(server, true), stall);
}

TEST_CASE("a sequential relay holds its flooding sender as a callback handler does", "[fanout][conversation]") {
  ServerProcess server(binary("sequential_relay"), yaml + "personality: multiplex\n");
  check_fanout(run_fanout(server, false), stall);
}

TEST_CASE("max_input_rate slows a flooding client to its rate and never disconnects it", "[fanout][flood]") {
  ServerProcess server(binary("chat_server"), yaml + "personality: multiplex\nmax_input_rate: 200\nmax_input_burst: 20\n");
  Client reader(server.port());
  REQUIRE(reader.read_line() == "Welcome, to the server!");
  REQUIRE(reader.read_line());
  Client flooder(server.port());
  REQUIRE(flooder.read_line() == "Welcome, to the server!");
  REQUIRE(flooder.read_line());
  REQUIRE(reader.read_line());  // "Please welcome ..."
  const int lines = 420;
  std::string all;
  for (int i = 0; i < lines; ++i) all += "line " + std::to_string(i) + "\r\n";
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(flooder.send(all));  // a few KB: the kernel takes it at once, the server reads it at 200 a second
  int received = 0;
  for (; received < lines; ++received) {
    const auto line = reader.read_line(10s);
    if (!line || line->find("said: line " + std::to_string(received)) == std::string::npos) break;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(received == lines);
  // A lower bound only (the rate is a ceiling): the lines past the burst and past the last read
  // (512 bytes: under 60 of these lines) at 200 a second.
  CHECK(seconds >= 0.9 * (lines - 20 - 60) / 200.0);
  flooder.send("/who\r\n");
  const auto who = flooder.read_line();
  REQUIRE(who);
  CHECK_THAT(*who, Contains("client(s) in this process"));  // still served
}

TEST_CASE("room_output_mark must be below max_output", "[fanout][config]") {
  const Outcome outcome = run(binary("chat_server"), {"--max_output=1M", "--room_output_mark=1M"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("room_output_mark must be less than max_output"));
}
