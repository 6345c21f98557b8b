// The metrics as the engine counts them and the status listener (`status.listen`) serves them, on
// the real probe_server under every personality: exact counts after a known workload, after a
// child is SIGKILLed and after a HUP; promtool on every exposition; a real Prometheus scraping
// it; the listener answering while every event loop is stuck; bad, oversized and slow requests;
// the stall detector and the watchdog.

#include <signal.h>

#include <chrono>
#include <map>
#include <regex>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "metrics_checks.hpp"

using namespace harness;
using namespace metrics_checks;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

// Each personality as probe_server runs it, with the status listener on a free port.
std::string yaml_for(const std::string& personality, const std::string& more = "") {
  std::string yaml = status_yaml();
  if (personality == "workers") yaml += "personality: multiplex\nmultiplex:\n  workers: 2\n";
  else yaml += "personality: " + personality + "\n";
  if (personality == "prefork") yaml += "prefork:\n  min_servers: 2\n  min_spare_servers: 1\n  max_spare_servers: 2\n";
  return yaml + more;
}

// Peers from 127.0.0.2 are refused by the access rules; a client is cut past 64 KiB of output.
const std::string workload_rules = "cidr_allow: [127.0.0.1/32]\ncidr_deny: [127.0.0.2/32]\nmax_output: 64K\n";

const std::string accepted = R"(netserver_connections_accepted_total{listener="127.0.0.1:0"})";
const std::string refused_access = R"(netserver_connections_refused_total{listener="127.0.0.1:0",reason="access"})";
const std::string closed_client = R"(netserver_sessions_closed_total{reason="client"})";
const std::string closed_output = R"(netserver_sessions_closed_total{reason="max_output"})";

std::map<std::string, double> scrape(const ServerProcess& server) {
  const Response response = curl(url(status_port(server), "/metrics"));
  REQUIRE(response.status == 200);
  INFO(response.body);
  CHECK(promtool_problems(response.body) == "");
  return samples_of(response.body);
}

// Waits until /metrics says `want` for every series given (a session's end is counted once its
// process has done its bookkeeping; a Fork child's once the parent reaped it); the last scrape.
std::map<std::string, double> scrape_until(const ServerProcess& server, const std::map<std::string, double>& want) {
  std::map<std::string, double> samples;
  const bool reached = eventually(
      [&] {
        samples = scrape(server);
        for (const auto& [series, value] : want)
          if (sample(samples, series) != value) return false;
        return true;
      },
      15s);
  for (const auto& [series, value] : want) {
    INFO(series);
    CHECK(sample(samples, series) == value);
  }
  CHECK(reached);
  return samples;
}

// 4 sessions that echo a line and end by the client, 2 clients refused by cidr_deny, 1 session cut
// at max_output: 7 connections accepted, 52 bytes received.
void run_workload(const ServerProcess& server) {
  for (int i = 0; i < 4; ++i) {
    Client client(server.port());
    REQUIRE(client.read_line());  // probe ready
    REQUIRE(client.send("echo hi\r\n"));
    REQUIRE(client.read_line() == "hi");
    client.close();
  }
  for (int i = 0; i < 2; ++i) {
    Client refused(server.port(), "127.0.0.1", "127.0.0.2");
    CHECK(refused.closed_by_peer());
  }
  Client flood(server.port());
  REQUIRE(flood.read_line());
  REQUIRE(flood.send("flood 12000000\r\n"));  // far more than the kernel buffers and max_output; never read
  REQUIRE(server.wait_for_log("would pass max_output"));
}

const std::map<std::string, double> after_workload{
    {accepted, 7},
    {refused_access, 2},
    {closed_client, 4},
    {closed_output, 1},
    {"netserver_sessions_open", 0},
    {"netserver_received_bytes_total", 4 * 9 + 16},
};

}  // namespace

TEST_CASE("engine metrics: exact counts after a known workload under every personality", "[metrics][status]") {
  const std::string personality = GENERATE("single", "multiplex", "workers", "prefork", "fork");
  INFO(personality);
  ServerProcess server(binary("probe_server"), yaml_for(personality, workload_rules));
  server.expect_errors();  // none expected; the cut session logs a warning only
  run_workload(server);
  const auto samples = scrape_until(server, after_workload);
  CHECK(sample(samples, "netserver_sent_bytes_total") > 0);
  CHECK(sample(samples, R"(netserver_connections_refused_total{listener="127.0.0.1:0",reason="busy"})") == 0);
  CHECK(sample(samples, "netserver_restarts_total") == 0);
  CHECK(sample(samples, "netserver_loop_stalls_total") == 0);
  const std::string build = R"(netserver_build_info{version="0.2.0",personality=")" +
                            std::string(personality == "workers" ? "multiplex" : personality) + "\"}";
  CHECK(sample(samples, build) == 1);
  CHECK(sample(samples, "process_open_fds") > 0);
  CHECK(server.error_lines().empty());
}

TEST_CASE("engine metrics: counts stay exact after a child is SIGKILLed", "[metrics][status]") {
  const std::string personality = GENERATE("prefork", "workers", "fork");
  INFO(personality);
  ServerProcess server(binary("probe_server"), yaml_for(personality, workload_rules));
  server.expect_errors();
  run_workload(server);
  scrape_until(server, after_workload);
  Client doomed(server.port());
  REQUIRE(doomed.read_line());
  REQUIRE(doomed.send("pid\r\n"));
  const auto child = doomed.read_line();
  REQUIRE(child);
  REQUIRE(std::stoi(*child) != server.pid());
  scrape_until(server, {{"netserver_sessions_open", 1}});
  ::kill(std::stoi(*child), SIGKILL);
  // What the killed child counted stays; its open session is gone with it; nothing else moved.
  std::map<std::string, double> want = after_workload;
  want[accepted] = 8;
  want["netserver_received_bytes_total"] += 5;  // "pid\r\n"
  scrape_until(server, want);
  CHECK(doomed.closed_by_peer());
  Client after(server.port());  // replaced: the server still serves
  REQUIRE(after.read_line());
}

TEST_CASE("engine metrics: counters carry over a HUP and restarts_total counts it", "[metrics][status]") {
  const std::string personality = GENERATE("multiplex", "prefork");
  INFO(personality);
  ServerProcess server(binary("probe_server"), yaml_for(personality, workload_rules));
  server.expect_errors();
  run_workload(server);
  scrape_until(server, after_workload);
  server.signal(SIGHUP);
  REQUIRE(server.wait_for_log("(restarted)"));
  // The previous image let go (it accepts no more): what happens now is the new image's.
  REQUIRE(server.wait_for_log(personality == "multiplex" ? "of the previous image" : "children finish their sessions"));
  std::map<std::string, double> want = after_workload;
  want["netserver_restarts_total"] = 1;
  scrape_until(server, want);  // the new image's page (the previous one says 0 restarts)
  Client client(server.port());  // and it counts on
  REQUIRE(client.read_line());
  REQUIRE(client.send("echo hi\r\n"));
  REQUIRE(client.read_line() == "hi");
  client.close();
  want[accepted] = 8;
  want[closed_client] = 5;
  want["netserver_received_bytes_total"] += 9;
  scrape_until(server, want);
}

TEST_CASE("engine metrics: a real Prometheus scrapes the status listener every second and its query API returns "
          "the values",
          "[metrics][status]") {
  ServerProcess server(binary("probe_server"), yaml_for("prefork", workload_rules));
  server.expect_errors();
  run_workload(server);
  scrape_until(server, after_workload);
  Prometheus prometheus(status_port(server));
  const auto value_is = [&](const std::string& query, double expected) {
    return eventually([&] { return prometheus.query(query) == expected; }, 30s);
  };
  CHECK(value_is(R"(up{job="probe"})", 1));
  CHECK(value_is(accepted, 7));
  CHECK(value_is(refused_access, 2));
  CHECK(value_is(closed_output, 1));
  CHECK(value_is(R"(netserver_build_info{personality="prefork"})", 1));
  INFO(prometheus.log());
  CHECK(prometheus.log().find("level=error") == std::string::npos);
}

TEST_CASE("status listener: answers while every event loop is stuck in a callback", "[metrics][status]") {
  const std::string personality = GENERATE("multiplex", "workers");
  INFO(personality);
  ServerProcess server(binary("probe_server"), yaml_for(personality, "stall_warning: 0\n"));
  const int loops = personality == "workers" ? 2 : 1;
  std::vector<Client> stuck;
  for (int i = 0; i < loops; ++i) {
    stuck.emplace_back(server.port());
    REQUIRE(stuck.back().read_line());  // from a loop not stuck yet (a stuck one accepts nobody)
    REQUIRE(stuck.back().send("sleep 4\r\necho awake\r\n"));
    std::this_thread::sleep_for(200ms);
  }
  const Response status = curl(url(status_port(server), "/status"));
  CHECK(status.status == 200);
  const Response metrics = curl(url(status_port(server), "/metrics"));
  CHECK(metrics.status == 200);
  CHECK(sample(samples_of(metrics.body), "netserver_sessions_open") == loops);
  for (Client& client : stuck) CHECK_FALSE(client.read_line(0.1s));  // still asleep when answered
  for (Client& client : stuck) CHECK(client.read_line(10s) == "awake");
}

TEST_CASE("status listener: bad and oversized and slow requests are closed and the server serves on",
          "[metrics][status]") {
  ServerProcess server(binary("probe_server"), yaml_for("multiplex"));
  const int port = status_port(server);
  const std::vector<std::pair<std::string, std::string>> cases{
      {"GARBAGE\r\n\r\n", "400"},
      {"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(9000, 'x') + "\r\n\r\n", "431"},
      {"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", "405"},
      {"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n", "404"},
  };
  for (const auto& [request, expected] : cases) {
    INFO(request.substr(0, 40));
    Client client(port);
    REQUIRE(client.send(request));
    CHECK_THAT(client.read_all(5s), StartsWith("HTTP/1.1 " + expected + " "));
  }
  Client slow(port);
  REQUIRE(slow.send("GET /met"));
  Client served(server.port());  // the user's protocol meanwhile
  REQUIRE(served.read_line());
  REQUIRE(served.send("echo still\r\n"));
  CHECK(served.read_line() == "still");
  CHECK(curl(url(port, "/status")).status == 200);
  CHECK_THAT(slow.read_all(8s), StartsWith("HTTP/1.1 408 "));
  CHECK(curl(url(port, "/metrics")).status == 200);
}

TEST_CASE("stall detector: a callback blocking 2 s is logged within 2x stall_warning naming its session",
          "[metrics][status]") {
  ServerProcess server(binary("probe_server"), yaml_for("multiplex", "stall_warning: 0.5\n"));
  Client client(server.port());
  REQUIRE(client.read_line());
  REQUIRE(client.send("sleep 2\r\necho after\r\n"));
  CHECK(server.wait_for_log("has held the event loop", 1s));  // 2 x stall_warning, counted from the send
  CHECK_FALSE(client.read_line(0s));                          // logged while it still blocked
  const std::string log = server.log();
  CHECK(std::regex_search(log, std::regex(R"(stall: multiplex process \d+: on_input of session 1 \(127\.0\.0\.1:\d+\) )"
                                          R"(has held the event loop)")));
  CHECK(client.read_line(5s) == "after");
  CHECK(server.wait_for_log("on_input of session 1 (127.0.0.1:"));
  CHECK(server.wait_for_log("returned after about"));
  scrape_until(server, {{"netserver_loop_stalls_total", 1}});
}

TEST_CASE("watchdog: a supervised process stuck past worker_timeout is logged with what it did and replaced",
          "[metrics][status]") {
  const std::string personality = GENERATE("prefork", "workers");
  INFO(personality);
  ServerProcess server(binary("probe_server"), yaml_for(personality, "worker_timeout: 1\nstall_warning: 0.5\n"));
  server.expect_errors();  // the watchdog's line and the child's last words are errors
  Client stuck(server.port());
  const auto ready = stuck.read_line();
  REQUIRE(ready);
  REQUIRE(stuck.send("pid\r\n"));
  const auto child = stuck.read_line();
  REQUIRE(child);
  REQUIRE(stuck.send("sleep 30\r\n"));
  // Reads the log until the line naming this child is whole: on a loaded machine another child (a
  // spare still starting) may be named first, rightly, and a line may reach the file in two writes.
  const std::regex named(" " + *child + R"( \((busy|idle)\) has not turned its event loop[^\n]* it is in on_input of session)");
  CHECK(eventually([&] { return std::regex_search(server.log(), named); }, 10s));
  // The child's own last words: what its loop was doing, then its stack.
  CHECK(server.wait_for_log(" child " + *child +
                            " got SIGABRT (the watchdog's, or abort()): its loop was in on_input of session"));
  CHECK(server.wait_for_log("its stack:"));
  CHECK(stuck.closed_by_peer(10s));
  CHECK(eventually([&] { return !alive(std::stoi(*child)); }, 10s));
  Client after(server.port());  // replaced
  REQUIRE(after.read_line());
}

TEST_CASE("engine metrics: counts stay exact across max_requests recycling", "[metrics][status]") {
  const std::string personality = GENERATE("prefork", "workers");
  INFO(personality);
  const std::string yaml =
      personality == "prefork"
          ? status_yaml() + "personality: prefork\nprefork:\n  min_servers: 2\n  min_spare_servers: 1\n"
                            "  max_spare_servers: 2\n  max_requests: 2\n  max_requests_jitter: 1\n"
          : status_yaml() + "personality: multiplex\nmultiplex:\n  workers: 2\n  max_requests: 2\n";
  ServerProcess server(binary("probe_server"), yaml);
  for (int i = 0; i < 7; ++i) {  // every child or worker serves 2 or 3 of them, then is replaced
    Client client(server.port());
    REQUIRE(client.read_line());
    REQUIRE(client.send("echo hi\r\n"));
    REQUIRE(client.read_line() == "hi");
  }
  if (personality == "workers") CHECK(server.wait_for_log("served multiplex.max_requests (2) sessions"));
  scrape_until(server, {{accepted, 7}, {closed_client, 7}, {"netserver_sessions_open", 0},
                        {"netserver_received_bytes_total", 7 * 9}});
}

TEST_CASE("engine metrics: the chat demo's own counter and gauge beside the toolkit's", "[metrics][status]") {
  ServerProcess server(binary("chat_server"), status_yaml());
  Client alice(server.port());
  Client bob(server.port());
  REQUIRE(alice.read_line());
  REQUIRE(bob.read_line());
  scrape_until(server, {{R"(chat_room_members{room="chat"})", 2}, {"chat_messages_relayed_total", 0}});
  REQUIRE(alice.send("hello\r\n"));
  REQUIRE(eventually([&] {
    const auto line = bob.read_line(1s);
    return line && line->find("said: hello") != std::string::npos;
  }));
  alice.close();
  scrape_until(server, {{R"(chat_room_members{room="chat"})", 1}, {"chat_messages_relayed_total", 1}});
}

TEST_CASE("status listener: an address also in listen is a configuration error - port 0 included",
          "[metrics][status]") {
  const Outcome same =
      run(binary("echo_server"), {"--listen=127.0.0.1:0", "--status.listen=127.0.0.1:0", "--check-config"});
  CHECK(same.status == 2);
  CHECK_THAT(same.output, Contains("status.listen: \"127.0.0.1:0\" is also in listen"));
  const Outcome tls = run(binary("echo_server"), {"--status.listen=tls://127.0.0.1:9100", "--check-config"});
  CHECK(tls.status == 2);
  CHECK_THAT(tls.output, Contains("the status listener speaks plain HTTP"));
}
