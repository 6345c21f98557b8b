// The status listener's HTTP (src/status_http.hpp) as the toolkit serves it (`status.listen`) on
// a real server, tests/metrics_probe, whose table holds a known workload (see the probe's
// header): curl, raw sockets for what curl will not send, a real Prometheus scraping it, a HUP,
// and a peer outside loopback in a network namespace of the test's own.

#include <signal.h>
#include <unistd.h>

#include <map>
#include <regex>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "metrics_checks.hpp"

using namespace harness;
using namespace metrics_checks;
using Catch::Matchers::Contains;
using Catch::Matchers::EndsWith;
using Catch::Matchers::StartsWith;

namespace {



// The known workload of one image of the probe (tests/metrics_probe.cpp).
void check_workload(const std::map<std::string, double>& samples, int images) {
  CHECK(samples.at(R"(netserver_connections_accepted_total{listener="127.0.0.1:0"})") == 25 * images);
  CHECK(samples.at(R"(netserver_connections_refused_total{listener="127.0.0.1:0",reason="access"})") == 2 * images);
  CHECK(samples.at(R"(netserver_sessions_closed_total{reason="client"})") == 5 * images);
  CHECK(samples.at(R"(probe_events_total{kind="a"})") == 7 * images);
  CHECK(samples.at(R"(probe_events_total{kind="b\"c"})") == 2 * images);
  CHECK(samples.at("netserver_sessions_open") == 3);  // the parent's 1 and the live helper's 2
  CHECK(samples.at("probe_flag") == 1);               // the helper that said 0 is dead
  CHECK(samples.at("netserver_restarts_total") == images - 1);
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t count = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
  return count;
}

// The status port of a probe once `images` images of it have counted their workload (the
// status listener answers from before that: a scrape then would see part of it).
int probe_port(const ServerProcess& server, std::size_t images = 1) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (server.count_in_log("probe: the workload of pid ") < images && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  REQUIRE(server.count_in_log("probe: the workload of pid ") >= images);
  return status_port(server);
}

// Sends `request` on a fresh connection; everything the server sent until it closed.
std::string exchange(int port, const std::string& request, Seconds wait = 5s) {
  Client client(port);
  REQUIRE(client.send(request));
  return client.read_all(wait);
}

}  // namespace

TEST_CASE("status listener: curl gets /metrics and /status and /status.json with their types and the exact sums",
          "[metrics]") {
  ServerProcess server(binary("metrics_probe"), status_yaml());
  const Response metrics = curl(url(probe_port(server), "/metrics"));
  CHECK(metrics.status == 200);
  CHECK_THAT(metrics.headers, Contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
  CHECK(promtool_problems(metrics.body) == "");
  check_workload(samples_of(metrics.body), 1);
  CHECK(samples_of(metrics.body).at(R"(netserver_build_info{version="0.2.0",personality="multiplex"})") == 1);

  const Response status = curl(url(probe_port(server), "/status"));
  CHECK(status.status == 200);
  CHECK_THAT(status.headers, Contains("Content-Type: text/plain; charset=utf-8"));
  CHECK_THAT(status.body, Contains("2 process(es), 3 session(s) open, 5 served"));
  CHECK_THAT(status.body, Contains(std::to_string(server.pid()) + " multiplex"));
  CHECK(std::regex_search(status.body, std::regex(R"(\n +\d+ helper "child" +idle +2 +1 )")));

  const Response json = curl(url(probe_port(server), "/status.json"));
  CHECK(json.status == 200);
  CHECK_THAT(json.headers, Contains("Content-Type: application/json"));
  TempDir dir;
  const Outcome parsed = run("/usr/bin/env", {"python3", "-c",
                                              "import json,sys; d=json.load(open(sys.argv[1])); "
                                              "assert d['processes'][1]['role']=='helper \"child\"', d; "
                                              "assert d['sessions_open']==3 and d['personality']=='multiplex', d",
                                              dir.write("status.json", json.body).string()});
  INFO(parsed.output);
  CHECK(parsed.status == 0);

  const std::string head = exchange(probe_port(server), "HEAD /metrics HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
  CHECK_THAT(head, StartsWith("HTTP/1.1 200 OK") && EndsWith("\r\n\r\n"));  // no body
  std::smatch length;
  REQUIRE(std::regex_search(head, length, std::regex(R"(Content-Length: (\d+))")));
  CHECK(std::stoul(length[1]) > 1000);
}

TEST_CASE("status listener: keep-alive reuses one connection and Connection: close or HTTP/1.0 close it", "[metrics]") {
  ServerProcess server(binary("metrics_probe"), status_yaml());
  const Outcome twice = run("/usr/bin/curl", {"-sS", "-v", "-o", "/dev/null", "-o", "/dev/null",
                                              url(probe_port(server), "/metrics"), url(probe_port(server), "/status")});
  CHECK(twice.status == 0);
  CHECK_THAT(twice.output, Contains("Re-using existing connection"));

  Client kept(probe_port(server));  // two requests, the second after the first was answered, on one connection
  REQUIRE(kept.send("GET /status HTTP/1.1\r\nHost: probe\r\n\r\n"));
  CHECK_THAT(kept.read_line().value_or(""), StartsWith("HTTP/1.1 200 OK"));
  CHECK_FALSE(kept.closed_by_peer(0.3s));
  Client second(probe_port(server));
  REQUIRE(second.send("GET /status HTTP/1.1\r\nHost: probe\r\n\r\n"));
  CHECK_THAT(second.read_line().value_or(""), StartsWith("HTTP/1.1 200 OK"));
  std::this_thread::sleep_for(100ms);
  REQUIRE(second.send("GET /status HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"));
  const std::string rest = second.read_all();  // returns at the server's close
  CHECK_THAT(rest, Contains("HTTP/1.1 200 OK") && Contains("Connection: close"));

  const std::string old = exchange(probe_port(server), "GET /metrics HTTP/1.0\r\n\r\n");
  CHECK_THAT(old, StartsWith("HTTP/1.1 200 OK") && Contains("Connection: close") && Contains("netserver_sessions_open 3"));
}

TEST_CASE("status listener: pipelined requests are answered in order", "[metrics]") {
  ServerProcess server(binary("metrics_probe"), status_yaml());
  const std::string answers = exchange(probe_port(server),
                                       "GET /status.json HTTP/1.1\r\nHost: p\r\n\r\n"
                                       "HEAD /metrics HTTP/1.1\r\nHost: p\r\n\r\n"
                                       "GET /metrics HTTP/1.1\r\nHost: p\r\n\r\n"
                                       "GET /status HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
  const std::size_t json = answers.find("\"processes\":[");
  const std::size_t head = answers.find("HTTP/1.1 200", json);
  const std::size_t metrics = answers.find("# HELP netserver_build_info", head);
  const std::size_t status = answers.find("process(es),", metrics);
  CHECK(json != std::string::npos);
  CHECK(head != std::string::npos);
  CHECK(metrics != std::string::npos);
  CHECK(status != std::string::npos);
  const std::size_t responses = count_of(answers, "HTTP/1.1 200 OK");
  CHECK(responses == 4);
  CHECK(answers.find("# HELP netserver_build_info") == answers.rfind("# HELP netserver_build_info"));  // HEAD: no body
}

TEST_CASE("status listener: a client pipelining more answers than max_output holds gets them all in turn",
          "[metrics]") {
  // 5000 scrapes are about 25 MB of answers, more than the socket buffers and max_output (1 MiB)
  // hold while the client does not read: rendered at once they would end the session; the
  // handler waits for the client to read instead.
  ServerProcess server(binary("metrics_probe"), status_yaml());
  std::string requests;
  for (int i = 0; i < 4999; ++i) requests += "GET /metrics HTTP/1.1\r\nHost: p\r\n\r\n";
  requests += "GET /metrics HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";
  Client client(probe_port(server));
  REQUIRE(client.send(requests));
  std::this_thread::sleep_for(1s);
  const std::string answers = client.read_all(60s);
  const std::size_t responses = count_of(answers, "HTTP/1.1 200 OK");
  CHECK(responses == 5000);
  CHECK(server.count_in_log("output queue full") == 0);
}

TEST_CASE("status listener: a bad request gets its status and is closed while the server keeps serving", "[metrics]") {
  ServerProcess server(binary("metrics_probe"), status_yaml());
  const std::string big(9000, 'x');
  const std::vector<std::pair<std::string, std::string>> cases{
      {"GARBAGE\r\n\r\n", "400"},
      {"GET /metrics HTTP/1.1\r\n\r\n", "400"},                                       // no Host
      {"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},
      {"GET /metrics HTTP/1.1\r\nHost : a\r\n\r\n", "400"},                           // space before the colon
      {"GET /metrics HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "400"},
      {"GET /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "400"},
      {"GET /metrics HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", "400"},                      // a stray CR
      {"GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"GET /metrics HTTP/2.0\r\nHost: a\r\n\r\n", "505"},
      {"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", "405"},
      {"DELETE /status HTTP/1.1\r\nHost: a\r\n\r\n", "405"},
      {"GET /secret HTTP/1.1\r\nHost: a\r\n\r\n", "404"},
      {"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "413"},
      {"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: " + big + "\r\n\r\n", "431"},
      {"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: " + big, "431"},                  // no end in sight
  };
  for (const auto& [request, expected] : cases) {
    INFO(request.substr(0, 60));
    Client client(probe_port(server));
    REQUIRE(client.send(request));
    const std::string answer = client.read_all(5s);
    CHECK_THAT(answer, StartsWith("HTTP/1.1 " + expected + " ") && Contains("Connection: close"));
    if (expected == "405") CHECK_THAT(answer, Contains("Allow: GET, HEAD"));
  }
  CHECK(curl(url(probe_port(server), "/metrics")).status == 200);
}

TEST_CASE("status listener: a slow request is answered 408 and closed while others are served", "[metrics]") {
  ServerProcess server(binary("metrics_probe"), status_yaml());  // the request timeout: 5 s
  Client slow(probe_port(server));
  REQUIRE(slow.send("GET /metr"));
  CHECK(curl(url(probe_port(server), "/status")).status == 200);  // meanwhile
  const std::string answer = slow.read_all(8s);
  CHECK_THAT(answer, StartsWith("HTTP/1.1 408 "));
  CHECK(slow.closed_by_peer(1s));
  Client idle(probe_port(server));  // an idle connection without any byte is only closed, later
  CHECK(idle.silent_for(0.8s));
}

TEST_CASE("status listener: Prometheus scrapes it and its query API returns the exact values", "[metrics]") {
  ServerProcess server(binary("metrics_probe"), status_yaml());
  Prometheus prometheus(probe_port(server));
  const auto value_is = [&](const std::string& query, double expected) {
    return eventually([&] { return prometheus.query(query) == expected; }, 30s);
  };
  CHECK(value_is(R"(up{job="probe"})", 1));
  CHECK(value_is(R"(netserver_connections_accepted_total{listener="127.0.0.1:0"})", 25));
  CHECK(value_is(R"(probe_events_total{kind="b\"c"})", 2));
  CHECK(value_is(R"(sum(netserver_sessions_open))", 3));
  CHECK(value_is(R"(netserver_build_info{personality="multiplex"})", 1));
  CHECK(value_is(R"(netserver_processes{state="idle"})", 1));
  CHECK(value_is(R"(count(process_cpu_seconds_total))", 1));
  INFO(prometheus.log());
  CHECK(prometheus.log().find("level=error") == std::string::npos);
}

TEST_CASE("status listener: after a HUP every counter is carried over and none went back", "[metrics]") {
  ServerProcess server(binary("metrics_probe"), status_yaml());
  const auto before = samples_of(curl(url(probe_port(server), "/metrics")).body);
  check_workload(before, 1);
  server.signal(SIGHUP);
  REQUIRE(server.wait_for_log("(restarted)"));
  REQUIRE(server.wait_for_log("of the previous image"));  // the new image serves the status listener alone
  const auto after = samples_of(curl(url(probe_port(server, 2), "/metrics")).body);
  check_workload(after, 2);
  for (const auto& [series, value] : before)
    if (series.find("_total") != std::string::npos && !series.starts_with("process_")) {
      INFO(series);
      CHECK(after.at(series) >= value);
    }
  CHECK(after.at("process_start_time_seconds") == before.at("process_start_time_seconds"));
  CHECK(after.at("process_cpu_seconds_total") >= before.at("process_cpu_seconds_total"));
}

TEST_CASE("status listener: only loopback and unix-socket peers unless status.cidr_allow says more", "[metrics]") {
  if (::geteuid() != 0 || run("/usr/bin/unshare", {"-n", "true"}).status != 0) {
    WARN("skipped: a network namespace needs root (unshare -n)");
    return;
  }
  // In a namespace of the test's own, 192.0.2.1 is a local address that is not loopback.
  const std::vector<std::string> namespaced{"/usr/bin/unshare", "-n", "/bin/sh", "-c",
                                            "ip link set lo up && ip addr add 192.0.2.1/32 dev lo && exec \"$0\" \"$@\""};
  // The namespace is the server's own: any port is free there.
  const std::string namespaced_yaml = "listen: [\"127.0.0.1:0\"]\nstatus:\n  listen: [\"0.0.0.0:9100\"]\n";
  const auto ask = [](const ServerProcess& server, const std::string& host) {
    REQUIRE(server.wait_for_log("status listener on 0.0.0.0:9100"));
    const std::string address = "http://" + host + ":9100/metrics";
    const Outcome outcome = run("/usr/bin/nsenter", {"-t", std::to_string(server.pid()), "-n", "/usr/bin/curl", "-sS",
                                                     "-o", "/dev/null", "-w", "%{http_code}", address});
    return outcome.output;
  };
  {
    ServerProcess server(binary("metrics_probe"), namespaced_yaml, Launch{}.with_wrapper(namespaced));
    CHECK(ask(server, "192.0.2.1") == "403");
    CHECK(ask(server, "127.0.0.1") == "200");
  }
  {
    ServerProcess server(binary("metrics_probe"), namespaced_yaml + "  cidr_allow: [192.0.2.0/24]\n",
                         Launch{}.with_wrapper(namespaced));
    CHECK(ask(server, "192.0.2.1") == "200");
  }
}

TEST_CASE("status listener: a unix-socket peer may ask", "[metrics]") {
  TempDir dir;
  const std::string path = (dir.path() / "status.sock").string();
  ServerProcess server(binary("metrics_probe"),
                       "listen: [\"127.0.0.1:0\"]\nstatus:\n  listen: [\"unix:" + path + "\"]\n");
  REQUIRE(server.wait_for_log("probe: the workload of pid "));
  const Outcome outcome = run("/usr/bin/curl", {"-sS", "--unix-socket", path, "http://status/metrics"});
  CHECK(outcome.status == 0);
  CHECK_THAT(outcome.output, Contains("netserver_sessions_open 3"));
}
