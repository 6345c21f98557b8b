// metrics_probe: a test-only server with a known workload in the toolkit's metrics table, served
// by the toolkit's status listener (`status.listen`): before its loop the parent counts, and
// helper children it forks count in their own slots -- one exits at once (its counters stay in
// the totals, its gauges go), one stays until this image ends. After a HUP the new image does the
// same again, so every counter is exactly doubled and none went backwards. Its own protocol on
// `listen` is never used by the tests.
//
// Known values per image: accepted{listener=<the first listen address>} 5 (parent) + 10 per
// helper; refused{...,access} 2; sessions_closed{client} 3 + 1 per helper; sessions_open 1 + 2
// (the live helper); probe_events_total{kind="a"} 7, {kind="b\"c"} 1 per helper; probe_flag
// (min) 1.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>

#include <netserver/netserver.hpp>

#include "metrics_engine.hpp"
#include "observatory.hpp"
#include "server_runtime.hpp"
#include "status_http.hpp"

namespace {

// Registered at start, before the toolkit lays out the table.
struct AppMetrics {
  netserver::Counter events_a =
      netserver::register_counter("probe_events_total", "events of the probe", {{"kind", "a"}});
  netserver::Counter events_b =
      netserver::register_counter("probe_events_total", "events of the probe", {{"kind", "b\"c"}});
  netserver::Gauge flag =
      netserver::register_gauge("probe_flag", "1 when every process says so", {}, netserver::GaugeMerge::min);
};

class QuietHandler : public netserver::LineHandler {
 public:
  void on_line(netserver::Session& session, std::string_view) override { session.send_line("probe"); }
};

class ProbeServer : public netserver::Server {
 public:
  ProbeServer() : Server("metrics_probe", std::make_shared<QuietHandler>()) {
    options().add(netserver::Option::integer("probe.live_helpers", 1, 1, 8, "helpers that stay (the bench asks for 8)"));
    set_default("personality", std::string("multiplex"));
  }

 private:
  void pre_loop_hook() override {
    const netserver::EngineMetrics& engine = netserver::engine_metrics();
    engine.accepted[0].add(5);
    engine.refused_on(0, netserver::RefusalReason::access).add(2);
    engine.closed_by(netserver::CloseReason::client).add(3);
    engine.sessions_open.add(1);
    app_.events_a.add(7);
    app_.flag.set(1);
    run_helper(false);
    for (std::int64_t i = 0; i < config().integer("probe.live_helpers"); ++i) live_helpers_.push_back(run_helper(true));
    std::vector<netserver::ProcessEntry> helpers;
    for (pid_t pid : live_helpers_) helpers.push_back({pid, "helper \"child\"", netserver::ProcessState::idle});
    runtime().observatory().publish(std::move(helpers));
    // The status listener serves from before this hook: tests read the table after this line.
    netserver::log::notice("probe: the workload of pid {} is counted", ::getpid());
  }

  // A child that counts in its own slot; `stay`: it lives until this image ends (it reads EOF
  // from a close-on-exec pipe), else it exits at once and is reaped here.
  pid_t run_helper(bool stay) {
    netserver::Observatory& observatory = runtime().observatory();
    int ready[2], hold[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(hold, O_CLOEXEC) != 0) throw netserver::Error("pipe2");
    const netserver::MetricsStore::Slot slot = observatory.claim();
    const pid_t pid = ::fork();
    if (pid == 0) {
      observatory.bind_child(slot);
      for (const netserver::Listener& listener : listeners()) ::close(listener.fd());  // it serves nobody
      const netserver::EngineMetrics& engine = netserver::engine_metrics();
      engine.accepted[0].add(10);
      engine.closed_by(netserver::CloseReason::client).add(1);
      engine.sessions_open.add(2);
      app_.events_b.add(1);
      app_.flag.set(stay ? 1 : 0);  // the one that exits says 0: a dead process's gauge must not count
      char byte = 'r';
      (void)!::write(ready[1], &byte, 1);
      ::close(hold[1]);
      if (stay) (void)!::read(hold[0], &byte, 1);
      ::_exit(0);
    }
    observatory.assign(slot, pid);
    ::close(ready[1]);
    ::close(hold[0]);
    char byte;
    (void)!::read(ready[0], &byte, 1);
    ::close(ready[0]);
    if (!stay) {
      ::waitpid(pid, nullptr, 0);
      observatory.child_exited(pid);
      ::close(hold[1]);
    }  // else hold[1] stays open until exec (HUP) or exit: the helper then leaves
    return pid;
  }

  AppMetrics app_;
  std::vector<pid_t> live_helpers_;
};

}  // namespace

int main(int argc, char** argv) {
  ProbeServer server;
  return server.main(argc, argv);
}
