#pragma once
/// Supervisor: the parent process of every multi-process personality (prefork, multiplex workers,
/// fork). It owns the process table -- every child, its state, its slot, its channel -- and is
/// mechanism only, like nginx's ngx_spawn_process: it forks a child that runs a function it is
/// given (through the ChildRuntime), waits only for the pids in its table, and runs the parent's
/// signal verbs (gunicorn's arbiter): TERM/INT stop gracefully, QUIT stops now, HUP restarts
/// keeping the port, USR1 reopens the log everywhere, TTIN/TTOU grow and shrink, CHLD reaps.
/// How many children there should be is the personality's ChildPolicy: it hears each event with
/// the table and answers with Decisions, which the Supervisor carries out.

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "child_runtime.hpp"
#include "netserver/options.hpp"
#include "signals.hpp"

namespace netserver {

class Server;
class Succession;
class Watchdog;
struct ProcessEntry;

/// What a child is doing, as the parent knows it.
enum class ChildState {
  starting,  ///< forked, not yet ready
  idle,      ///< ready, waiting for a client
  busy,      ///< serving (PreFork: its one client; Fork: always)
  retiring,  ///< told to leave: exits once idle (or, after a hand-over, once its sessions end)
};

/// "starting", "idle", ...
const char* state_name(ChildState state);

/// One child in the table.
struct ChildProcess {
  pid_t pid = 0;
  ChildState state = ChildState::starting;
  bool ready = false;           ///< has reported idle at least once
  std::size_t slot = 0;         ///< lowest free index when spawned (the accept board's, later metrics')
  std::string serving;          ///< Fork: the client it serves
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

/// The children of this parent.
class ProcessTable {
 public:
  /// The lowest slot no child holds.
  std::size_t free_slot() const;
  /// Adds a child in `state` with `slot` (free_slot() when not given).
  ChildProcess& add(pid_t pid, ChildState state, std::optional<std::size_t> slot = std::nullopt);
  /// Every child of this image is leaving (a restart's finish signal went out).
  void retire_all();
  /// A child's idle/busy report (child_report): its state changes, except that a retiring child
  /// stays retiring. True when the policy should hear of it; `became_ready` tells its first idle.
  bool note_report(pid_t pid, char report, bool& became_ready);
  /// Marks a child retiring; false for an unknown child.
  bool mark_retiring(pid_t pid);
  /// Forgets a child (its slot becomes free).
  void remove(pid_t pid);
  ChildProcess* find(pid_t pid);
  const ChildProcess* find(pid_t pid) const;
  /// Every child.
  std::size_t size() const { return children_.size(); }
  /// Children in `state`.
  std::size_t count(ChildState state) const;
  /// Children of this image that are not leaving (starting, idle, busy).
  std::size_t working() const { return count(ChildState::starting) + count(ChildState::idle) + count(ChildState::busy); }
  std::vector<pid_t> pids() const;
  const std::map<pid_t, ChildProcess>& all() const { return children_; }

 private:
  std::map<pid_t, ChildProcess> children_;
};

/// What a policy asks the Supervisor to do.
struct Decisions {
  std::size_t spawn = 0;       ///< children to start
  std::vector<pid_t> retire;   ///< children to ask to leave once idle
};

/// A personality's parent: decides from the table, never touches processes itself.
class ChildPolicy {
 public:
  virtual ~ChildPolicy() = default;
  /// The first children (and again after a restart that could not exec).
  virtual Decisions start(const ProcessTable& table) = 0;
  /// `child` reported idle or busy (its state in the table is updated); `became_ready`: its
  /// first idle report.
  virtual Decisions changed(const ProcessTable&, const ChildProcess& /*child*/, bool /*became_ready*/) { return {}; }
  /// A child of the table ended with waitpid's `wait_status` (already out of the table).
  virtual Decisions exited(const ProcessTable& table, const ChildProcess& child, int wait_status) = 0;
  /// The periodic check (SupervisorSettings::check_interval).
  virtual Decisions check(const ProcessTable&) { return {}; }
  /// TTIN: one child more.
  virtual Decisions grow(const ProcessTable&) { return {}; }
  /// TTOU: one child less.
  virtual Decisions shrink(const ProcessTable&) { return {}; }
  /// Why the parent must give up (children cannot start); empty while healthy.
  virtual const std::string& failure() const = 0;
  /// A line for systemd's STATUS ("7 children: 2 busy, 5 idle"); empty for none.
  virtual std::string status(const ProcessTable&) const { return {}; }
};

/// How a personality's children take the parent's signals and orders.
struct SupervisorSettings {
  /// Sent to every child on TERM/INT: stop gracefully (prefork: after the session in progress).
  int stop_signal = SIGTERM;
  /// Sent to every child on HUP: finish the open sessions and leave (the new image serves).
  int finish_signal = SIGTERM;
  /// How a child is asked to retire: this signal, or 0 for the child_report::retire order.
  int retire_signal = 0;
  /// How long past graceful_timeout before children still alive after a TERM are killed (a child
  /// that cuts its own sessions at graceful_timeout gets this long to do it).
  Duration kill_margin = Duration::zero();
  /// Between ChildPolicy::check() calls; zero for none.
  Duration check_interval = Duration::zero();
  /// The children's role on /status: "prefork child", "worker", "fork child".
  std::string child_role = "child";
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
  /// What a new child runs, after the ChildRuntime set it up: `channel` is its end of the
  /// socketpair to the parent, `slot` its slot in the table. The return value is the child's
  /// exit status (exit_status::boot_failed: it cannot start, do not respawn).
  using ChildMain = std::function<int(int channel, std::size_t slot)>;

  Supervisor(Server& server, SupervisorSettings settings);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  /// Runs the parent's loop for `policy`, whose spawn decisions start children running `main`
  /// with `signals`, until every child is gone after a stop. Throws Error with exit status 3
  /// when the policy gave up (children cannot start).
  void run(ChildPolicy& policy, ChildMain main, ChildSignals signals);

  /// ngx_spawn_process: runs pre_fork_hook, forks, and in the child runs the ChildRuntime around
  /// `main` -- the child never returns here. The child enters the table as `state`. Returns the
  /// pid, or -1 (logged). `with_channel` false: no socketpair (main gets -1), so a parent of
  /// thousands of children (Fork) does not hold a descriptor per child.
  pid_t spawn(const ChildMain& main, const ChildSignals& signals, ChildState state, std::string serving = {},
              bool with_channel = true);
  /// Carries out decisions a policy made on a personality's own event (a timer of its own).
  void apply(const Decisions& decisions);
  /// Calls `observer(child)` right before a child leaves the table (its slot is about to be free).
  void on_exited(std::function<void(const ChildProcess&)> observer) { on_exited_ = std::move(observer); }
  /// Calls `observer(child)` in the parent right after a child entered the table.
  void on_spawned(std::function<void(const ChildProcess&)> observer) { on_spawned_ = std::move(observer); }
  /// Calls `action(signal)` when a stop begins or this image hands over to a new one (SIGHUP): a
  /// parent that accepts stops accepting for good here.
  void on_stop(std::function<void(int)> action) { on_stop_ = std::move(action); }
  /// True once a stop began.
  bool stopping() const { return stopping_; }
  /// The children.
  const ProcessTable& table() const { return table_; }
  /// The parent's event loop (for a personality's own acceptors and timers in the parent).
  boost::asio::io_context& io() { return io_; }

 private:
  struct Channel;
  void watch_signals();
  void watch_job_signals();
  void report_status(std::string last);
  void read_reports(pid_t pid, std::shared_ptr<Channel> channel);
  void on_report(pid_t pid, char report);
  void take_last_reports(pid_t pid);
  [[noreturn]] void run_child(const ChildMain& main, const ChildSignals& signals, int channel, std::size_t slot);
  void reap_children();
  void publish_table();
  std::vector<ProcessEntry> entries() const;
  void reclaim_addresses(pid_t pid);
  void restart();
  void let_go();
  void stop(int received, bool graceful);
  void signal_all(int signal);
  void kill_after_grace();
  void schedule_check();
  void finish();

  Server& server_;
  Loop io_;
  SupervisorSettings settings_;
  ChildPolicy* policy_ = nullptr;
  ChildMain main_;
  ChildSignals child_signals_;
  ProcessTable table_;
  SignalWatcher signals_;
  boost::asio::steady_timer check_timer_;
  boost::asio::steady_timer grace_timer_;
  boost::asio::steady_timer status_timer_;
  boost::asio::steady_timer drain_timer_;
  std::map<pid_t, std::shared_ptr<Channel>> channels_;
  std::function<void(const ChildProcess&)> on_exited_;
  std::function<void(const ChildProcess&)> on_spawned_;
  std::function<void(int)> on_stop_;
  std::unique_ptr<Succession> succession_;
  std::unique_ptr<Watchdog> watchdog_;  // worker_timeout
  bool stopping_ = false;   // no spawning: a stop began, or this image handed over
  bool stop_seen_ = false;  // TERM/INT/QUIT (or the policy's failure) arrived
};

/// "exited with status 3", "killed by signal 9 (KILL)".
std::string describe_wait_status(int wait_status);

}  // namespace netserver
