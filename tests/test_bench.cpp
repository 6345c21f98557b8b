// netbench's own correctness: percentile math, request tokens, and a smoke run of every mode
// against the real demo servers (no timing is asserted).

#include <catch2/catch.hpp>

#include <random>
#include <regex>

#include "harness.hpp"
#include "histogram.hpp"
#include "protocol.hpp"

using namespace harness;
using Catch::Matchers::Contains;

TEST_CASE("histogram buckets are exact below 64 and within 1/64 above", "[bench][histogram]") {
  for (std::uint64_t v = 0; v < 64; ++v) CHECK(bench::Histogram::upper_edge(bench::Histogram::index_of(v)) == v);
  std::mt19937_64 random(42);
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t v = random() >> (random() % 60);
    const std::uint64_t upper = bench::Histogram::upper_edge(bench::Histogram::index_of(v));
    REQUIRE(upper >= v);
    REQUIRE(static_cast<double>(upper - v) <= static_cast<double>(v) / 64.0 + 1.0);
  }
}

TEST_CASE("histogram percentiles match a sorted sample", "[bench][histogram]") {
  bench::Histogram histogram;
  CHECK(histogram.percentile(0.5) == 0);
  for (std::uint64_t v = 1; v <= 1000; ++v) histogram.record(v * 1000);  // 1 us .. 1 ms
  CHECK(histogram.count() == 1000);
  CHECK(histogram.max() == 1000000);
  auto near = [](std::uint64_t got, double want) { return std::abs(static_cast<double>(got) - want) <= want / 64.0 + 1; };
  CHECK(near(histogram.percentile(0.50), 500000));
  CHECK(near(histogram.percentile(0.99), 990000));
  CHECK(near(histogram.percentile(0.999), 999000));
  CHECK(histogram.percentile(1.0) == 1000000);
  CHECK(near(histogram.percentile(0.0), 1000));

  bench::Histogram other;
  other.record(5);
  histogram.merge(other);
  CHECK(histogram.count() == 1001);
  CHECK(histogram.percentile(0.0) == 5);
}

TEST_CASE("requests carry their token and are padded to the asked size", "[bench][protocol]") {
  char buffer[256];
  const std::size_t length = bench::make_request('e', 12, 345, 64, buffer, sizeof buffer);
  const std::string line(buffer, length);
  CHECK(length == 64);
  CHECK(line.starts_with("e12.345 x"));
  CHECK(line.back() == '\n');
  CHECK(bench::make_request('e', 1, 2, 3, buffer, sizeof buffer) == 6);  // never shorter than "e1.2 \n"
}

TEST_CASE("echo answers are recognised by their token and everything else is skipped", "[bench][protocol]") {
  CHECK(bench::is_echo_of("e12.345 xxxx", 12, 345));
  CHECK_FALSE(bench::is_echo_of("e12.346 xxxx", 12, 345));
  CHECK_FALSE(bench::is_echo_of("e1.345 xxxx", 12, 345));
  CHECK_FALSE(bench::is_echo_of("Welcome to \"echo\" (personality single, pid 42)", 12, 345));
  CHECK_FALSE(bench::is_echo_of("e12.345", 12, 345));  // no space after the token
  CHECK_FALSE(bench::is_echo_of("e12345 x", 12, 345));
}

TEST_CASE("chat deliveries name their round and sender", "[bench][protocol]") {
  std::uint64_t round = 0, sender = 0;
  REQUIRE(bench::parse_delivery("Client 127.0.0.1:5555 said: c7.42 xxxx", round, sender));
  CHECK((round == 7 && sender == 42));
  REQUIRE(bench::parse_delivery("Client alice said: c0.0 ", round, sender));
  CHECK_FALSE(bench::parse_delivery("Please welcome 127.0.0.1:5, who just joined us", round, sender));
  CHECK_FALSE(bench::parse_delivery("Client 127.0.0.1:5 said: hello", round, sender));
}

namespace {

std::string netbench(const ServerProcess& server, const std::vector<std::string>& extra) {
  std::vector<std::string> args = extra;
  args.insert(args.end(), {"--port", std::to_string(server.port()), "--server-pid", std::to_string(server.pid())});
  const Outcome outcome = run(binary("netbench"), args, 60s);
  INFO(outcome.output);
  CHECK(outcome.status == 0);
  return outcome.output;
}

long field(const std::string& output, const std::string& key) {
  std::smatch match;
  if (!std::regex_search(output, match, std::regex(key + R"(=([0-9.]+))"))) return -1;
  return static_cast<long>(std::stod(match[1]));
}

const std::string multiplex = "personality: multiplex\nhost: 127.0.0.1\nport: 0\n";

}  // namespace

TEST_CASE("netbench smoke: echo and connect and idle against echo_server", "[bench][smoke]") {
  ServerProcess server(binary("echo_server"), multiplex);
  const std::string echo = netbench(server, {"echo", "--connections", "4", "--duration", "0.3"});
  CHECK(field(echo, "requests") > 0);
  CHECK(field(echo, "starved") == 0);
  const std::string connect = netbench(server, {"connect", "--connections", "2", "--duration", "0.3"});
  CHECK(field(connect, "connections") > 0);
  const std::string idle = netbench(server, {"idle", "--connections", "200"});
  CHECK(field(idle, "connections") == 200);
  CHECK_THAT(idle, Contains("answers=yes"));
  const std::string json = netbench(server, {"echo", "--connections", "1", "--duration", "0.1", "--json"});
  CHECK_THAT(json, Contains("{\"mode\": \"echo\", \"connections\": 1"));
}

TEST_CASE("netbench smoke: chat delivers everything under multiplex and says so under prefork", "[bench][smoke]") {
  ServerProcess room(binary("chat_server"), multiplex);
  const std::string chat = netbench(room, {"chat", "--connections", "5", "--duration", "0.3"});
  CHECK(field(chat, "rounds") > 0);
  CHECK_THAT(chat, Contains("delivered_fraction=1.000"));

  ServerProcess isolated(binary("chat_server"), "personality: prefork\nhost: 127.0.0.1\nport: 0\n");
  const std::string none = netbench(isolated, {"chat", "--connections", "3", "--duration", "0.3", "--timeout", "0.5"});
  CHECK_THAT(none, Contains("delivered_fraction=0.000") && Contains("stalled"));
}

TEST_CASE("netbench smoke: pids tells one process from many", "[bench][smoke]") {
  ServerProcess single(binary("echo_server"), "personality: single\nhost: 127.0.0.1\nport: 0\n");
  const std::string one = netbench(single, {"pids", "--connections", "3", "--timeout", "0.5"});
  CHECK_THAT(one, Contains("distinct_pids=1") && Contains("answered_at_once=1") && Contains("concurrent=no"));
  ServerProcess pool(binary("echo_server"), "personality: prefork\nhost: 127.0.0.1\nport: 0\n");
  const std::string many = netbench(pool, {"pids", "--connections", "3", "--timeout", "0.5"});
  CHECK_THAT(many, Contains("distinct_pids=3") && Contains("concurrent=yes"));
}

TEST_CASE("netbench smoke: pids shows 2 workers serving many clients each and a child per client under fork",
          "[bench][smoke]") {
  ServerProcess workers(binary("echo_server"), "personality: multiplex\nhost: 127.0.0.1\nport: 0\nmultiplex:\n  workers: 2\n");
  const std::string two = netbench(workers, {"pids", "--connections", "40", "--timeout", "2"});
  CHECK_THAT(two, Contains("clients=40 distinct_pids=2 answered_at_once=40 concurrent=yes"));
  ServerProcess forking(binary("echo_server"), "personality: fork\nhost: 127.0.0.1\nport: 0\n");
  const std::string each = netbench(forking, {"pids", "--connections", "5", "--timeout", "2"});
  CHECK_THAT(each, Contains("clients=5 distinct_pids=5 answered_at_once=5 concurrent=yes"));
}
