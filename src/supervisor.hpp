#pragma once
/// Supervisor: the parent process of every multi-process personality (prefork, multiplex workers,
/// fork). It is mechanism only, like nginx's ngx_spawn_process: it forks a child that runs a
/// function it is given, keeps a channel to each child, waits only for the pids it spawned or was
/// handed, and runs the parent's signal verbs (gunicorn's arbiter): TERM/INT stop gracefully,
/// QUIT stops now, HUP restarts keeping the port, USR1 reopens the log everywhere, TTIN/TTOU
/// grow and shrink, CHLD reaps. How many children there should be, and when to spawn, is the
/// personality's ChildPolicy; what a child does is the function passed to spawn().
///
/// The one place that runs in every new child right after fork is Supervisor::child_init(): the
/// Server's child_init_hook, and whatever a process must open for itself (never share a
/// connection across fork).

#include <sys/types.h>

#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "signals.hpp"

namespace netserver {

class Server;

/// The operating-system side of a pool (fork/kill through the Supervisor in the server, a fake in
/// unit tests), so that a policy's decisions are testable without processes.
class ProcessControl {
 public:
  virtual ~ProcessControl() = default;
  /// Starts a child; returns its pid, or -1 when it cannot now (it logs why).
  virtual pid_t spawn_child() = 0;
  /// Asks a child to exit once it is idle (it finishes a session in progress first).
  virtual void retire_child(pid_t pid) = 0;
  /// Sends a signal to a child.
  virtual void signal_child(pid_t pid, int signal) = 0;
};

/// What a personality's parent decides; the Supervisor calls it from its loop.
class ChildPolicy {
 public:
  virtual ~ChildPolicy() = default;
  /// Spawns the first children.
  virtual void start() = 0;
  /// Every pid the parent waits for (children of a previous image included).
  virtual std::vector<pid_t> pids() const = 0;
  /// A known child was reaped with waitpid's `wait_status`.
  virtual void child_exited(pid_t pid, int wait_status) = 0;
  /// Stops spawning and sends `signal` to every child (0: send nothing).
  virtual void stop(int signal) = 0;
  /// Spawns again after stop() (a restart that could not exec).
  virtual void resume() = 0;
  /// Children of a previous image (after a restart): waited for, never replaced.
  virtual void adopt_leaving(const std::vector<pid_t>& pids) = 0;
  /// Why the parent must give up (children cannot start); empty while healthy.
  virtual const std::string& failure() const = 0;
  /// The periodic check (SupervisorSettings::check_interval).
  virtual void check() {}
  /// TTIN: one child more.
  virtual void grow() {}
  /// TTOU: one child less.
  virtual void shrink() {}
};

/// How a personality's children take the parent's signals.
struct SupervisorSettings {
  /// Sent to every child on TERM/INT: stop gracefully (prefork: after the session in progress).
  int stop_signal = SIGTERM;
  /// Sent to every child on HUP: finish the open sessions and leave (the new image serves).
  int finish_signal = SIGTERM;
  /// Seconds past graceful_timeout before children still alive after a TERM are killed (a child
  /// that cuts its own sessions at graceful_timeout gets this long to do it).
  double kill_margin = 0;
  /// Seconds between ChildPolicy::check() calls; 0 for none.
  double check_interval = 0;
};

class Supervisor {
  // The parent's loop, which a new child discards: every service (the reactor, the signal pipe,
  // queued handlers) is shut down, so the child's own loop starts clean (asio allows only one
  // thread-unsafe io_context per process to handle signals).
  class Loop : public boost::asio::io_context {
   public:
    Loop();
    void discard();
  };

 public:
  /// What a new child runs; `channel` is its end of the socketpair to the parent. The return value
  /// is the child's exit status (exit_status::boot_failed: it cannot start, do not respawn).
  using ChildMain = std::function<int(int channel)>;

  Supervisor(Server& server, SupervisorSettings settings);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  /// Runs the parent's loop for `policy` until every child is gone after a stop. Throws Error with
  /// exit status 3 when the policy gave up (children cannot start).
  void run(ChildPolicy& policy);

  /// ngx_spawn_process: runs pre_fork_hook, forks, and in the child runs child_init() then `main`
  /// and exits with its status -- the child never returns here. Returns the pid, or -1 (logged).
  pid_t spawn(const ChildMain& main);
  /// Writes one byte to a child's channel (an order such as "retire"); lost if the child is gone.
  void send_order(pid_t pid, char order);
  /// Calls `handler(pid, byte)` for every byte a child writes to its channel.
  void on_report(std::function<void(pid_t, char)> handler) { on_report_ = std::move(handler); }
  /// Calls `action(signal)` when a stop or restart begins (a parent that accepts stops here) and
  /// `action(0)` when a failed restart resumes.
  void on_stop(std::function<void(int)> action) { on_stop_ = std::move(action); }
  /// True once a stop began.
  bool stopping() const { return stopping_; }
  /// The parent's event loop (for a personality's own acceptors and timers in the parent).
  boost::asio::io_context& io() { return io_; }

  /// In a new child, right after fork: runs the Server's child_init_hook. False (logged) when
  /// the child cannot start.
  static bool child_init(Server& server);

 private:
  struct Channel;
  void watch_signals();
  void read_reports(pid_t pid, std::shared_ptr<Channel> channel);
  [[noreturn]] void run_child(const ChildMain& main, int channel);
  void reap_children();
  void restart();
  void stop(int received, bool graceful);
  void kill_after_grace();
  void schedule_check();
  void finish();

  Server& server_;
  Loop io_;
  SupervisorSettings settings_;
  ChildPolicy* policy_ = nullptr;
  SignalWatcher signals_;
  boost::asio::steady_timer check_timer_;
  boost::asio::steady_timer grace_timer_;
  std::map<pid_t, std::shared_ptr<Channel>> channels_;
  std::function<void(pid_t, char)> on_report_;
  std::function<void(int)> on_stop_;
  bool stopping_ = false;
};

/// "exited with status 3", "killed by signal 9 (KILL)".
std::string describe_wait_status(int wait_status);

}  // namespace netserver
