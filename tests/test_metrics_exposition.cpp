// The expositions of a store with the full label set and 8 live worker slots: /metrics accepted
// by promtool (Debian's prometheus package), no duplicate series, each family's lines together;
// /status and /status.json naming every process with its own figures.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "metrics_children.hpp"
#include "metrics_engine.hpp"
#include "metrics_exposition.hpp"

using namespace netserver;
using Catch::Matchers::Contains;

namespace {

// `count` children, each in its own slot, counting `index + 1` connections on every listener,
// two sessions ended by timeout and one held open; they stay until killed.
void start_workers(metrics_test::SlotChildren& children, int count) {
  for (int i = 0; i < count; ++i)
    children.spawn([i] {
      const EngineMetrics& engine = engine_metrics();
      for (const Counter& accepted : engine.accepted) accepted.add(static_cast<std::uint64_t>(i + 1));
      engine.sessions_open.add(1);
      engine.closed_by(CloseReason::timeout).add(2);
      engine.bus_up.set(1);
    });
}

struct Fixture {
  MetricsSchema schema;
  std::unique_ptr<MetricsStore> store;
  Counter relayed;
  Gauge members;

  Fixture() {
    register_engine_metrics(schema, {"127.0.0.1:8000", "[::1]:8000", "unix:/run/odd \"path\"\\\n.sock"});
    relayed = schema.counter("chat_messages_relayed_total", "chat lines passed on", {{"room", "lobby"}});
    members = schema.gauge("chat_room_members", "clients in a room", {{"room", "lobby"}});
    schema.gauge("chat_room_members", "clients in a room", {{"room", "back \"stage\""}});
    schema.counter("chat_messages_relayed_total", "chat lines passed on", {{"room", "back \"stage\""}});
    store = MetricsStore::create(schema, 8);
  }
  ~Fixture() { engine_metrics() = EngineMetrics{}; }

  StatusInput input(const std::vector<pid_t>& workers) const {
    StatusInput in{*store, engine_metrics(), "chat", "0.2.0", "multiplex", {{::getpid(), "parent", ProcessState::busy}}};
    for (pid_t pid : workers) in.processes.push_back({pid, "worker", ProcessState::idle});
    return in;
  }
};

std::string promtool_problems(const std::string& text) {
  harness::TempDir dir;
  const auto file = dir.write("metrics.txt", text);
  const harness::Outcome outcome = harness::run("/bin/sh", {"-c", "/usr/bin/promtool check metrics < " + file.string()});
  return outcome.status == 0 ? "" : outcome.output + " (status " + std::to_string(outcome.status) + ")";
}

// Sample lines by series ("name{labels}") -> value; fails on a series given twice or a family
// whose lines are not together.
std::map<std::string, double> samples_of(const std::string& text) {
  std::map<std::string, double> samples;
  std::set<std::string> families_done;
  std::string family;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("# TYPE ")) {
      std::istringstream words(line.substr(7));
      std::string name;
      words >> name;
      INFO(line);
      CHECK(families_done.insert(name).second);
      family = name;
      continue;
    }
    if (line.starts_with("#")) continue;
    const std::size_t space = line.rfind(' ');
    const std::string series = line.substr(0, space);
    INFO(line);
    CHECK(series.substr(0, series.find('{')) == family);
    CHECK(samples.emplace(series, std::stod(line.substr(space + 1))).second);
  }
  return samples;
}

}  // namespace

TEST_CASE("metrics exposition: promtool accepts it with every series once and exact sums over 8 workers",
          "[metrics]") {
  Fixture f;
  f.relayed.add(12);
  f.members.set(4);
  const EngineMetrics& engine = engine_metrics();
  engine.refused_on(2, RefusalReason::access).add(3);
  metrics_test::SlotChildren workers(*f.store);
  start_workers(workers, 8);
  const std::string text = render_prometheus(f.input(workers.alive()));

  CHECK(promtool_problems(text) == "");
  const auto samples = samples_of(text);
  CHECK(samples.at(R"(netserver_build_info{version="0.2.0",personality="multiplex"})") == 1);
  CHECK(samples.at(R"(netserver_connections_accepted_total{listener="127.0.0.1:8000"})") == 36);  // 1 + 2 + ... + 8
  CHECK(samples.at(R"(netserver_connections_accepted_total{listener="unix:/run/odd \"path\"\\\n.sock"})") == 36);
  CHECK(samples.at(R"(netserver_connections_refused_total{listener="unix:/run/odd \"path\"\\\n.sock",reason="access"})") ==
        3);
  CHECK(samples.at(R"(netserver_connections_refused_total{listener="[::1]:8000",reason="proxy"})") == 0);
  CHECK(samples.at("netserver_sessions_open") == 8);
  CHECK(samples.at(R"(netserver_sessions_closed_total{reason="timeout"})") == 16);
  CHECK(samples.at("netserver_bus_up") == 1);  // every worker is up; the parent has no bus
  CHECK(samples.at(R"(chat_messages_relayed_total{room="lobby"})") == 12);
  CHECK(samples.at(R"(chat_room_members{room="back \"stage\""})") == 0);
  CHECK(samples.at(R"(netserver_processes{state="idle"})") == 8);
  CHECK(samples.at(R"(netserver_processes{state="busy"})") == 1);
  CHECK(samples.at(R"(netserver_processes{state="draining"})") == 0);
  CHECK(samples.at("process_open_fds") > 9);
  CHECK(samples.at("process_resident_memory_bytes") > 0);
  CHECK(samples.at("process_cpu_seconds_total") >= 0);
  CHECK(samples.at("process_start_time_seconds") > 1.6e9);
  CHECK(samples.count(R"(netserver_connections_refused_total{listener="[::1]:8000",reason="rate"})") == 1);
}

TEST_CASE("metrics exposition: a min gauge nobody set is absent and a set one is the minimum", "[metrics]") {
  Fixture f;
  CHECK(samples_of(render_prometheus(f.input({}))).count("netserver_bus_up") == 0);
  engine_metrics().bus_up.set(1);
  CHECK(samples_of(render_prometheus(f.input({}))).at("netserver_bus_up") == 1);
}

TEST_CASE("metrics exposition: process CPU time does not go back when a child ends", "[metrics]") {
  Fixture f;
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t burner = ::fork();
  if (burner == 0) {  // spends 0.3 s of CPU time, then waits to be killed
    timespec start{}, now{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &start);
    do ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    while ((now.tv_sec - start.tv_sec) * 1e9 + (now.tv_nsec - start.tv_nsec) < 3e8);
    (void)!::write(ready[1], "r", 1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char byte;
  REQUIRE(::read(ready[0], &byte, 1) == 1);
  ::close(ready[0]);
  const double before = samples_of(render_prometheus(f.input({burner}))).at("process_cpu_seconds_total");
  ::kill(burner, SIGKILL);
  ::waitpid(burner, nullptr, 0);
  const double after = samples_of(render_prometheus(f.input({}))).at("process_cpu_seconds_total");
  CHECK(before >= 0.25);
  CHECK(after >= before);
}

TEST_CASE("status page: one line per process with its role and state and sessions and the JSON says the same",
          "[metrics]") {
  Fixture f;
  metrics_test::SlotChildren workers(*f.store);
  start_workers(workers, 3);
  const StatusInput input = f.input(workers.alive());
  const std::string text = render_status_text(input);
  CHECK_THAT(text, Contains("chat (netserver 0.2.0), personality multiplex"));
  CHECK_THAT(text, Contains("4 process(es), 3 session(s) open, 6 served"));
  for (pid_t pid : workers.alive()) {
    const std::size_t at = text.find(" " + std::to_string(pid) + " ");
    REQUIRE(at != std::string::npos);
    const std::string line = text.substr(at, text.find('\n', at) - at);
    CHECK_THAT(line, Contains("worker") && Contains("idle"));
    std::istringstream fields(line);
    std::string pid_text, role, state, open, served;
    fields >> pid_text >> role >> state >> open >> served;
    CHECK(open == "1");
    CHECK(served == "2");
  }

  harness::TempDir dir;
  const auto file = dir.write("status.json", render_status_json(input));
  const std::string check =
      "import json,sys; d=json.load(open(sys.argv[1])); p=d['processes']; "
      "assert d['sessions_open']==3 and d['sessions_served']==6, d; "
      "assert [x['role'] for x in p]==['parent','worker','worker','worker'], p; "
      "assert all(x['alive'] and x['open_fds']>0 and x['uptime_seconds']>=0 for x in p), p; "
      "assert [x['sessions_open'] for x in p]==[0,1,1,1], p; print('ok')";
  const harness::Outcome outcome = harness::run("/usr/bin/env", {"python3", "-c", check, file.string()});
  INFO(outcome.output);
  CHECK(outcome.status == 0);
}

TEST_CASE("JSON strings and sample values are written safely", "[metrics]") {
  CHECK(json_string("a\"b\\c\nd\x01") == R"("a\"b\\c\u000ad\u0001")");
  CHECK(format_sample_value(3) == "3");
  CHECK(format_sample_value(0.25) == "0.25");
  CHECK(format_sample_value(-2) == "-2");
}

TEST_CASE("a session's end reason falls in its closed_total reason", "[metrics]") {
  CHECK(netserver::close_reason_of("client closed") == netserver::CloseReason::client);
  CHECK(netserver::close_reason_of("line too long") == netserver::CloseReason::max_line);
  for (const char* cut : {"output queue full", "output not taken", "output stalled"}) {
    INFO(cut);
    CHECK(netserver::close_reason_of(cut) == netserver::CloseReason::max_output);
  }
  CHECK(netserver::close_reason_of("timed out after 5 s") == netserver::CloseReason::timeout);
  CHECK(netserver::close_reason_of("Connection reset by peer") == netserver::CloseReason::error);
}
