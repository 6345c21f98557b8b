#pragma once
// Issue 26's scenario against a real chat server: in one room (one process), S connects and never
// reads, R reads every line, F sends 20,000 lines of 1 KB as fast as it can. What must come of
// it: R gets every line in order and keeps its session, S is cut within output_stall_timeout (plus
// the time to fill its socket buffers), F is slowed -- never cut -- and the server's memory stays
// bounded. Shared by the fan-out tests (Multiplex, workers, a sequential relay) and the bus tests.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sys/ioctl.h>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace harness {

#ifdef __SANITIZE_ADDRESS__
/// The scenario's output_stall_timeout. Under AddressSanitizer every process of the scenario, the
/// reading test client included, runs several times slower on a shared machine: a reader that
/// keeps reading must not look stalled, so the bound is wider there.
constexpr double fanout_stall_seconds = 6.0;
/// After S's receive buffer is full, the server's send buffer to S and then S's queue up to
/// room_output_mark fill before S's stall clock starts: over the bus, at a sanitized server's pace,
/// that takes seconds (CI measured 2.7 s from the flood's start to the clock's start).
constexpr double fanout_fill_seconds = 3.0;
/// AddressSanitizer keeps freed memory in quarantine (256 MiB) besides its shadow: the resident set
/// says nothing of the server's queues there.
constexpr bool fanout_checks_memory = false;
#else
constexpr double fanout_stall_seconds = 2.0;
constexpr double fanout_fill_seconds = 1.0;
constexpr bool fanout_checks_memory = true;
#endif

/// The configuration line of the scenario's stall timeout.
inline std::string fanout_stall_yaml() { return "output_stall_timeout: " + std::to_string(fanout_stall_seconds) + "\n"; }

/// What a run of the scenario saw.
struct FanoutOutcome {
  std::string first_wrong;     ///< R's first line out of place ("" when all arrived in order)
  int received = 0;            ///< F's lines R got
  double s_cut_after = -1;     ///< seconds from the flood's start to S's cut (-1: not cut)
  double s_full_after = 0;     ///< seconds from the flood's start to the last byte arriving in S's receive buffer
  double flood_seconds = 0;    ///< how long F took to send everything
  long max_rss_kib = 0;        ///< the serving process's largest resident set seen
  std::string log;             ///< the server's log at the end, while F and R were still connected
  std::string f_name, r_name, s_name;
};

namespace fanout_detail {

inline long rss_kib(long pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

struct Member {
  Client client;
  std::string name;  // 127.0.0.1:PORT, as the server calls it
  long pid = -1;     // the process serving it
};

// Connects and reads the greeting up to the line naming the serving pid.
inline Member connect(const ServerProcess& server) {
  Client client(server.port());
  long pid = -1;
  for (int i = 0; i < 3 && pid < 0; ++i) {
    const auto line = client.read_line(10s);
    REQUIRE(line);
    pid = pid_in(*line);
  }
  REQUIRE(pid > 0);
  const std::string name = "127.0.0.1:" + std::to_string(client.local_port());
  return Member{std::move(client), name, pid};
}

}  // namespace fanout_detail

/// The three clients of the scenario, and the servers serving S and the others (the same one
/// but over the bus).
struct FanoutTrio {
  fanout_detail::Member s, r, f;
  const ServerProcess* s_server;  ///< serves S
  const ServerProcess* server;    ///< serves R and F
};

/// Floods: R reads (waiting first for F's announcement when `announced`: the server tells the
/// room of a newcomer, "Please welcome NAME, ..."; over the bus F then hears the room), F sends
/// `lines` lines, the serving processes' memory and S's cut are watched.
inline FanoutOutcome flood(FanoutTrio& trio, bool announced, int lines = 20000) {
  using namespace fanout_detail;
  Member& s = trio.s;
  Member& r = trio.r;
  Member& f = trio.f;
  FanoutOutcome outcome;
  outcome.f_name = f.name, outcome.r_name = r.name, outcome.s_name = s.name;
  const std::string s_cut = "disconnecting " + s.name + " ";
  for (int i = 0; announced && i < 10; ++i) {
    const auto line = r.client.read_line(10s);
    REQUIRE(line);
    if (line->find("welcome " + f.name + ",") != std::string::npos) break;
  }
  const std::string payload(1000, 'p');
  const std::string said = "Client " + f.name + " said: ";
  std::atomic<bool> done{false};
  // Catch assertions are not thread-safe: the threads only record.
  std::thread reader([&] {
    for (int i = 0; i < lines && outcome.first_wrong.empty();) {
      const auto line = r.client.read_line(30s);
      if (!line) {
        outcome.first_wrong = "line " + std::to_string(i) + ": nothing (connection closed or 30 s of silence)";
        break;
      }
      if (line->rfind("Client ", 0) != 0 || line->find(" said: ") == std::string::npos) continue;  // joins, leaves
      if (*line != said + std::to_string(i) + " " + payload) outcome.first_wrong = "line " + std::to_string(i) + ": " + line->substr(0, 80);
      outcome.received = ++i;
    }
  });
  const auto start = std::chrono::steady_clock::now();
  std::thread watcher([&] {
    int s_unread = 0;  // what waits in S's receive buffer: it grows until the buffer is full
    while (!done) {
      outcome.max_rss_kib = std::max({outcome.max_rss_kib, rss_kib(f.pid), rss_kib(s.pid)});
      int unread = 0;
      if (outcome.s_cut_after < 0 && ::ioctl(s.client.fd(), FIONREAD, &unread) == 0 && unread > s_unread) {
        s_unread = unread;
        outcome.s_full_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      if (outcome.s_cut_after < 0 && trio.s_server->log().find(s_cut) != std::string::npos)
        outcome.s_cut_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  });
  std::string batch;
  for (int i = 0; i < lines; ++i) {  // in sends of 64 lines: as fast as the server takes them
    batch += std::to_string(i) + " " + payload + "\r\n";
    if (i % 64 == 63 || i == lines - 1) {
      if (!f.client.send(batch)) break;
      batch.clear();
    }
  }
  outcome.flood_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  reader.join();
  // S's cut is logged by now if it is coming at all: its socket filled at the start of the flood.
  eventually([&] { return trio.s_server->log().find(s_cut) != std::string::npos; }, 10s);
  done = true;
  watcher.join();
  // F and R are still served: F's next line reaches R.
  f.client.send("still here\r\n");
  auto last = r.client.read_line(10s);
  while (last && last->find(" said: ") == std::string::npos) last = r.client.read_line(10s);  // S left us
  if (outcome.first_wrong.empty() && last != said + "still here")
    outcome.first_wrong = "after the flood: " + last.value_or("(nothing)").substr(0, 80);
  outcome.log = trio.server->log();
  if (trio.s_server != trio.server) outcome.log += trio.s_server->log();
  return outcome;
}

/// Runs the scenario on `server` (a chat that relays a line as "Client NAME said: LINE"):
/// S, R and F are the first three clients served by one process (with workers, others are
/// connected until three share a worker, and closed).
inline FanoutOutcome run_fanout(const ServerProcess& server, bool announced, int lines = 20000) {
  using namespace fanout_detail;
  std::map<long, std::vector<Member>> by_pid;
  std::vector<Member> three;
  for (int i = 0; i < 40 && three.empty(); ++i) {
    Member member = connect(server);
    auto& group = by_pid[member.pid];
    group.push_back(std::move(member));
    if (group.size() == 3) three = std::move(group);
  }
  REQUIRE(three.size() == 3);
  by_pid.clear();  // the others leave before the flood
  FanoutTrio trio{std::move(three[0]), std::move(three[1]), std::move(three[2]), &server, &server};
  return flood(trio, announced, lines);
}

/// The checks every run of the scenario must pass.
inline void check_fanout(const FanoutOutcome& outcome, double stall_seconds, int lines = 20000) {
  INFO(outcome.first_wrong);
  CHECK(outcome.first_wrong.empty());
  CHECK(outcome.received == lines);
  const std::string& log = outcome.log;
  CHECK(log.find("disconnecting " + outcome.r_name + " ") == std::string::npos);  // R kept its session
  CHECK(log.find("disconnecting " + outcome.f_name + " ") == std::string::npos);  // F was slowed, not cut
  CHECK(log.find("closed " + outcome.f_name + " ") == std::string::npos);
  CHECK(log.find("closed " + outcome.r_name + " ") == std::string::npos);
  // S: cut for its stall (not for max_output), within output_stall_timeout of the moment its
  // buffers filled -- its receive buffer, then the server's send buffer and S's queue up to the
  // mark (fanout_fill_seconds) -- and never before output_stall_timeout of taking nothing.
  INFO("S cut after " << outcome.s_cut_after << " s, its receive buffer full after " << outcome.s_full_after
                      << " s; the flood took " << outcome.flood_seconds << " s");
  const std::size_t cut = log.find("disconnecting " + outcome.s_name + " (session ");
  REQUIRE(cut != std::string::npos);
  const std::string cut_line = log.substr(cut, log.find('\n', cut) - cut);
  INFO(cut_line);
  CHECK(cut_line.find("(output_stall_timeout); 1 sender(s) waited on it") != std::string::npos);  // F was held
  CHECK(outcome.s_cut_after >= stall_seconds);
  CHECK(outcome.s_cut_after - outcome.s_full_after < stall_seconds + fanout_fill_seconds);
  INFO("largest RSS " << outcome.max_rss_kib << " KiB");
  CHECK(outcome.max_rss_kib > 0);
  if (fanout_checks_memory) CHECK(outcome.max_rss_kib < 96 * 1024);
}

}  // namespace harness
