#include "serve_loop.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "child_runtime.hpp"
#include "server_runtime.hpp"
#include "signals.hpp"
#include "succession.hpp"
#include "systemd.hpp"

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// The loop of a process that serves in itself (single, multiplex, a worker): an Engine on one
// io_context, and what each signal does to it.
class ProcessLoop {
 public:
  ProcessLoop(Server& server, const EngineOptions& options, StopMode graceful, LoopRole role)
      : server_(server),
        runtime_(server.runtime()),
        engine_(server, io_, options),
        signals_(io_),
        status_(io_),
        grace_(runtime_.stop_times().graceful),
        drain_timeout_(runtime_.stop_times().restart_drain),
        graceful_(graceful),
        role_(role) {}

  void run() {
    engine_.listen(runtime_.endpoints());
    signals_.on({SIGTERM, SIGINT}, [this](int signal) { stop(signal, graceful_); });
    signals_.on({SIGQUIT}, [this](int signal) { stop(signal, StopMode::abort); });
    if (role_.supervised) {
      signals_.on({SIGUSR1}, [this](int) { runtime_.reopen_log(); });
      signals_.on({SIGHUP}, [this](int) { leave(); });
      parent_ = std::make_unique<ParentLink>(io_, role_.parent_channel);
      parent_->watch(nullptr, [this] { parent_gone(); });
      parent_->report(child_report::idle);
      // multiplex.max_requests: past it the worker leaves gracefully: it tells the parent, which
      // forks its replacement at once, and drains its sessions while the replacement accepts.
      if (const std::int64_t limit = runtime_.observatory().settings().multiplex_max_requests; limit > 0)
        engine_.on_session_end([this, limit] {
          if (++served_ == static_cast<std::uint64_t>(limit)) {
            log::notice("worker {} served multiplex.max_requests ({}) sessions: it is replaced", ::getpid(), limit);
            parent_->report(child_report::leaving);  // the replacement starts accepting while this one drains
            leave();
          }
        });
    } else {
      succession_ = std::make_unique<Succession>(io_, runtime_, Succession::Hooks{.let_go = [this] { let_go(); }});
      signals_.on({SIGUSR1}, [this](int) {
        runtime_.reopen_log();
        succession_->forward(SIGUSR1);
      });
      signals_.on({SIGHUP}, [this](int) { restart(); });
      signals_.on({SIGCHLD}, [this](int) { succession_->reap(); });
      if (std::getenv("NOTIFY_SOCKET")) report_status(0);
      Succession::announce_serving();  // the loop accepts as soon as it runs
    }
    io_.run();
  }

 private:
  // The channel to the parent ended: the parent died (a parent that restarts stays alive until
  // its new image serves, and tells this worker with HUP). This worker's copies of the listeners
  // close at once -- nobody accepts here any more, and a replacement server can bind the port --
  // and its sessions end as on TERM.
  void parent_gone() {
    engine_.close_listeners();
    runtime_.close_listener_descriptors();
    if (engine_.stopping()) return;
    log::warning("worker {}: the parent is gone; closing its listeners and {} session(s)", ::getpid(),
                 engine_.registry().size());
    engine_.stop(graceful_, grace_, [this] { end_loop(); });
  }

  // A supervised worker told to go (the new image serves, or TTOU): accepts no more and lets its
  // sessions end on their own, then exits; the parent bounds that (restart_drain_timeout, or TERM
  // within graceful_timeout). Accepting stops first, so that connections already accepted become
  // sessions; the rest wait in the backlog for the processes still accepting.
  void leave() {
    if (engine_.stopping()) return;
    engine_.hold_accepting();
    asio::post(io_, [this] {
      log::notice("worker {} leaves after its {} session(s)", ::getpid(), engine_.registry().size());
      engine_.close_listeners();
      engine_.stop(StopMode::drain, forever, [this] { end_loop(); });
    });
  }

  // New clients are refused from now on; after a hand-over, the images that follow get the same
  // signal (succession.hpp).
  void stop(int signal, StopMode mode) {
    log::notice("{} received{}: stopping {}({} session(s) open, at most {} s)", signal_name(signal),
                role_.supervised ? fmt::format(" in worker {}", ::getpid()) : "",
                mode == StopMode::abort ? "now " : "gracefully ", engine_.registry().size(), to_seconds(grace_));
    if (!role_.supervised) {  // a supervised worker's parent shuts the listeners down itself
      systemd::notify("STOPPING=1");
      runtime_.stop_listening();
      succession_->stop(signal);
    }
    engine_.stop(mode, grace_, [this] { end_loop(); });
  }

  void end_loop() {
    status_.cancel();
    signals_.stop();
    io_.stop();
  }

  // HUP: the new image starts beside this process, which goes on serving -- accepting too --
  // until it serves (succession.hpp).
  void restart() {
    if (engine_.stopping() && !succession_->handed_over()) return;
    if (!succession_->handed_over())
      log::notice("HUP received: restarting without closing the listeners ({} session(s) open)",
                  engine_.registry().size());
    succession_->hup();
  }

  // The new image serves: this one accepts no more and finishes its sessions within
  // restart_drain_timeout (TERM/INT, passed on by the new image or the anchor, end them sooner).
  void let_go() {
    status_.cancel();
    engine_.close_listeners();
    log::notice("pid {} keeps {} session(s) of the previous image {}", ::getpid(), engine_.registry().size(),
                drain_timeout_ != forever ? fmt::format("for at most {} s", to_seconds(drain_timeout_))
                                          : std::string("until they end"));
    engine_.stop(StopMode::drain, drain_timeout_, [this] { end_loop(); });
  }

  // Every couple of seconds, tells systemd how many sessions are open (only when systemd listens).
  void report_status(std::size_t last) {
    status_.expires_after(std::chrono::seconds(2));
    status_.async_wait([this, last](const error_code& error) {
      if (error || engine_.stopping()) return;
      const std::size_t now = engine_.registry().size();
      if (now != last) systemd::notify(fmt::format("STATUS={} session(s) open", now));
      report_status(now);
    });
  }

  Server& server_;
  ServerRuntime& runtime_;
  asio::io_context io_{single_threaded};
  Engine engine_;
  SignalWatcher signals_;
  asio::steady_timer status_;
  Duration grace_;
  Duration drain_timeout_;  // restart_drain_timeout; forever for 0 (until the sessions end)
  StopMode graceful_;
  LoopRole role_;
  std::unique_ptr<ParentLink> parent_;         // a supervised worker's channel
  std::uint64_t served_ = 0;                   // sessions ended, for multiplex.max_requests
  std::unique_ptr<Succession> succession_;     // a process that restarts itself
};

}  // namespace

void run_serving_loop(Server& server, const EngineOptions& options, StopMode graceful, LoopRole role) {
  ProcessLoop(server, options, graceful, role).run();
}

}  // namespace netserver
