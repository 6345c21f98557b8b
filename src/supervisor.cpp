#include "supervisor.hpp"

#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>

#include "engine.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "observatory.hpp"
#include "watchdog.hpp"
#include "server_runtime.hpp"
#include "succession.hpp"
#include "systemd.hpp"

namespace netserver {

namespace asio = boost::asio;

std::string describe_wait_status(int wait_status) {
  if (WIFEXITED(wait_status)) return fmt::format("exited with status {}", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status))
    return fmt::format("killed by signal {} ({})", WTERMSIG(wait_status), signal_name(WTERMSIG(wait_status)));
  return fmt::format("ended with wait status {}", wait_status);
}

const char* state_name(ChildState state) {
  switch (state) {
    case ChildState::starting: return "starting";
    case ChildState::idle: return "idle";
    case ChildState::busy: return "busy";
    case ChildState::retiring: return "retiring";
  }
  return "?";
}

// --- the process table ---------------------------------------------------------------------------

std::size_t ProcessTable::free_slot() const {
  std::vector<bool> taken(children_.size() + 1, false);
  for (const auto& [pid, child] : children_)
    if (child.slot < taken.size()) taken[child.slot] = true;
  return static_cast<std::size_t>(std::find(taken.begin(), taken.end(), false) - taken.begin());
}

ChildProcess& ProcessTable::add(pid_t pid, ChildState state, std::optional<std::size_t> slot) {
  const std::size_t chosen = slot ? *slot : free_slot();
  ChildProcess& child = children_[pid];
  child = ChildProcess{};
  child.pid = pid;
  child.state = state;
  child.slot = chosen;
  return child;
}

bool ProcessTable::note_report(pid_t pid, char report, bool& became_ready) {
  ChildProcess* child = find(pid);
  became_ready = false;
  if (child && report == child_report::leaving) return mark_retiring(pid);  // its replacement may start now
  if (!child || (report != child_report::idle && report != child_report::busy)) return false;
  became_ready = report == child_report::idle && !child->ready;
  if (report == child_report::idle) child->ready = true;
  if (child->state == ChildState::retiring) return false;
  child->state = report == child_report::idle ? ChildState::idle : ChildState::busy;
  return true;
}

bool ProcessTable::mark_retiring(pid_t pid) {
  ChildProcess* child = find(pid);
  if (!child) return false;
  child->state = ChildState::retiring;
  return true;
}

void ProcessTable::retire_all() {
  for (auto& [pid, child] : children_) child.state = ChildState::retiring;
}

void ProcessTable::remove(pid_t pid) { children_.erase(pid); }

ChildProcess* ProcessTable::find(pid_t pid) {
  auto it = children_.find(pid);
  return it == children_.end() ? nullptr : &it->second;
}

const ChildProcess* ProcessTable::find(pid_t pid) const {
  auto it = children_.find(pid);
  return it == children_.end() ? nullptr : &it->second;
}

std::size_t ProcessTable::count(ChildState state) const {
  return static_cast<std::size_t>(
      std::count_if(children_.begin(), children_.end(), [&](const auto& entry) { return entry.second.state == state; }));
}

std::vector<pid_t> ProcessTable::pids() const {
  std::vector<pid_t> pids;
  for (const auto& [pid, child] : children_) pids.push_back(pid);
  return pids;
}

// --- the supervisor ------------------------------------------------------------------------------

// The parent's end of a child's socketpair (shared with its read handler, which may still be
// queued when the child is reaped).
struct Supervisor::Channel {
  Channel(asio::io_context& io, int fd) : stream(io, fd) {}
  asio::posix::stream_descriptor stream;
  char reports[64];
};

Supervisor::Loop::Loop() : io_context(single_threaded) {}

// Shut down, not destroyed: the child runs inside the parent's run() (a spawn from a handler),
// whose thread-local context entry must keep pointing at live memory -- a new io_context allocated
// at the freed address would take that entry for its own and lose its handlers.
void Supervisor::Loop::discard() { shutdown(); }

Supervisor::Supervisor(Server& server, SupervisorSettings settings)
    : server_(server),
      settings_(settings),
      signals_(io_),
      check_timer_(io_),
      grace_timer_(io_),
      status_timer_(io_),
      drain_timer_(io_) {}

Supervisor::~Supervisor() = default;

void Supervisor::run(ChildPolicy& policy, ChildMain main, ChildSignals signals) {
  policy_ = &policy;
  main_ = std::move(main);
  child_signals_ = std::move(signals);
  succession_ = std::make_unique<Succession>(io_, server_.runtime(), Succession::Hooks{.let_go = [this] { let_go(); }});
  Observatory& observatory = server_.runtime().observatory();
  observatory.set_role("parent");
  const Duration timeout = observatory.settings().worker_timeout;
  if (timeout > Duration::zero() && observatory.store()) {
    watchdog_ = std::make_unique<Watchdog>(io_, *observatory.store(),
                                           std::chrono::duration_cast<std::chrono::nanoseconds>(timeout),
                                           [this] { return entries(); });
    watchdog_->start();
  }
  watch_signals();
  apply(policy.start(table_));
  if (table_.size() == 0) Succession::announce_serving();  // a parent that accepts itself (Fork) serves now
  schedule_check();
  if (std::getenv("NOTIFY_SOCKET")) report_status({});
  io_.run();
  succession_.reset();
  watchdog_.reset();
  policy_ = nullptr;
  if (!policy.failure().empty()) throw Error(policy.failure(), exit_status::boot_failed);
}

// Carries out a policy's decisions (none while stopping or after the policy gave up).
void Supervisor::apply(const Decisions& decisions) {
  if (stopping_ || !policy_->failure().empty()) return;
  for (pid_t pid : decisions.retire) {
    if (!table_.mark_retiring(pid)) continue;
    if (settings_.retire_signal != 0) ::kill(pid, settings_.retire_signal);
    else if (auto it = channels_.find(pid); it != channels_.end())
      ::send(it->second->stream.native_handle(), &child_report::retire, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  for (std::size_t i = 0; i < decisions.spawn && main_; ++i)
    if (spawn(main_, child_signals_, ChildState::starting) <= 0) return;  // logged; the next check tries again
}

void Supervisor::watch_signals() {
  signals_.on({SIGTERM, SIGINT}, [this](int signal) { stop(signal, true); });
  signals_.on({SIGQUIT}, [this](int signal) { stop(signal, false); });
  watch_job_signals();
  signals_.on({SIGCHLD}, [this](int) {
    succession_->reap();
    reap_children();
  });
  signals_.on({SIGHUP}, [this](int) { restart(); });
  signals_.on({SIGUSR1}, [this](int) {
    server_.runtime().reopen_log();
    signal_all(SIGUSR1);
    succession_->forward(SIGUSR1);  // after a hand-over, the image serving now reopens its log too
  });
}

// TTIN/TTOU resize the pool only when a process sent them (kill -TTOU: si_code SI_USER). Being
// blocked and read from the watcher's signalfd matters here: the kernel also sends TTOU to a
// background job that writes to a terminal with `stty tostop` -- with a handler installed the
// write was retried forever, each retry shrinking the pool; blocked, the write simply goes through.
void Supervisor::watch_job_signals() {
  signals_.on_detailed({SIGTTIN, SIGTTOU}, [this](const signalfd_siginfo& info) {
    const int signal = static_cast<int>(info.ssi_signo);
    if (static_cast<int>(info.ssi_code) > 0)  // SI_USER, SI_QUEUE, SI_TKILL are <= 0
      log::debug("{} from the kernel (terminal job control): ignored", signal_name(signal));
    else if (succession_->handed_over()) succession_->forward(signal);  // the pool is the new image's now
    else if (!stopping_ && signal == SIGTTIN) apply(policy_->grow(table_));
    else if (!stopping_) apply(policy_->shrink(table_));
  });
}

// Every couple of seconds, tells systemd the policy's status when it changed (only when systemd
// listens).
void Supervisor::report_status(std::string last) {
  status_timer_.expires_after(std::chrono::seconds(2));
  status_timer_.async_wait([this, last](const boost::system::error_code& error) {
    if (error || stopping_) return;
    const std::string now = policy_->status(table_);
    if (!now.empty() && now != last) systemd::notify("STATUS=" + now);
    report_status(now);
  });
}

// --- spawning ----------------------------------------------------------------------------------

pid_t Supervisor::spawn(const ChildMain& main, const ChildSignals& signals, ChildState state, std::string serving,
                        bool with_channel) {
  server_.pre_fork_hook();
  int channel[2] = {-1, -1};
  if (with_channel && ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
    log::error("{}", system_error_text("socketpair() failed while spawning a child", errno));
    return -1;
  }
  const std::size_t slot = table_.free_slot();  // chosen before the fork, so the child knows it
  Observatory& observatory = server_.runtime().observatory();
  const MetricsStore::Slot metrics_slot = observatory.claim();  // the child's row of the metrics table
  // Signals stay blocked across fork until the child has set up its own (ChildRuntime).
  sigset_t all, previous;
  sigfillset(&all);
  ::sigprocmask(SIG_BLOCK, &all, &previous);
  io_.notify_fork(asio::execution_context::fork_prepare);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (with_channel) ::close(channel[0]);
    observatory.bind_child(metrics_slot);
    run_child(main, signals, channel[1], slot);
  }
  const int fork_error = errno;
  io_.notify_fork(asio::execution_context::fork_parent);
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  if (with_channel) ::close(channel[1]);
  if (pid < 0) {
    if (with_channel) ::close(channel[0]);
    observatory.cancel(metrics_slot);
    log::error("{}", system_error_text("fork() failed while spawning a child", fork_error));
    return -1;
  }
  observatory.assign(metrics_slot, pid);
  log::info("spawned child {}", pid);
  ChildProcess& child = table_.add(pid, state, slot);
  child.serving = std::move(serving);
  if (with_channel) {
    auto open = std::make_shared<Channel>(io_, channel[0]);
    channels_[pid] = open;
    read_reports(pid, std::move(open));
  }
  if (on_spawned_) on_spawned_(child);
  publish_table();
  return pid;
}

// In the new child: the parent's event loop first gets kernel objects of its own (its epoll
// instance and signal pipe are shared with the parent until then: deregistering anything there
// would deafen the parent), then is discarded; the other children's channels close; then the
// ChildRuntime runs the child. Never returns (the parent's loop may be on the stack).
void Supervisor::run_child(const ChildMain& main, const ChildSignals& signals, int channel, std::size_t slot) {
  try {
    io_.notify_fork(asio::execution_context::fork_child);
    io_.discard();
    for (const auto& [other, open] : channels_) ::close(open->stream.native_handle());
    signals_.forget_in_child();
  } catch (const std::exception& error) {
    log::error("child {} failed: {}", ::getpid(), error.what());
    ::_exit(exit_status::failure);
  }
  netserver::run_child(server_, channel, signals, [&main, slot](int fd) { return main(fd, slot); });
}

void Supervisor::read_reports(pid_t pid, std::shared_ptr<Channel> channel) {
  Channel& open = *channel;
  open.stream.async_read_some(asio::buffer(open.reports), [this, pid, channel = std::move(channel)](
                                                              const boost::system::error_code& error,
                                                              std::size_t bytes) mutable {
    if (error) return;  // the child is gone (or its channel closed): waitpid says how
    for (std::size_t i = 0; i < bytes; ++i) on_report(pid, channel->reports[i]);
    if (channels_.count(pid)) read_reports(pid, std::move(channel));
  });
}

// A child's last reports may still wait in its channel when its SIGCHLD is handled first (both
// ready in one turn of the loop): read them before judging how it ended -- a child that said it
// was ready and then crashed was ready. Only the table hears them: the policy decides once, on
// the exit, not on the idle report of a child that is already gone.
void Supervisor::take_last_reports(pid_t pid) {
  const auto it = channels_.find(pid);
  if (it == channels_.end()) return;
  const int fd = it->second->stream.native_handle();
  char reports[64];
  for (ssize_t got; (got = ::recv(fd, reports, sizeof reports, MSG_DONTWAIT)) > 0;)
    for (ssize_t i = 0; i < got; ++i) {
      bool became_ready = false;
      table_.note_report(pid, reports[i], became_ready);
      if (became_ready) Succession::announce_serving();
    }
}

// idle/busy: the table changes and the policy decides; a retiring child stays retiring.
void Supervisor::on_report(pid_t pid, char report) {
  bool became_ready = false;
  const bool changed = table_.note_report(pid, report, became_ready);
  if (changed) publish_table();
  if (became_ready) Succession::announce_serving();  // the first child that accepts: this image serves
  if (changed && !stopping_) apply(policy_->changed(table_, *table_.find(pid), became_ready));
}

// --- reaping, restarting, stopping --------------------------------------------------------------

// What a dead child still held in the per-address limits (its sessions never ended) is given
// back, and its process slot freed, before anything is forked again (a new child may get its pid).
void Supervisor::reclaim_addresses(pid_t pid) {
  AddressLimits* limits = server_.runtime().address_limits();
  if (!limits) return;
  if (const std::size_t given_back = limits->reclaim(pid); given_back > 0)
    log::info("child {} ended holding {} connection(s) in the per-address limits: given back", pid, given_back);
}

// Only the pids in the table are waited for: a hook's own children are not ours.
void Supervisor::reap_children() {
  for (pid_t pid : table_.pids()) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) != pid) continue;
    take_last_reports(pid);
    channels_.erase(pid);
    reclaim_addresses(pid);
    server_.runtime().observatory().child_exited(pid);  // what it counted joins the totals
    const ChildProcess child = *table_.find(pid);
    if (on_exited_) on_exited_(child);
    table_.remove(pid);
    publish_table();
    if (stopping_) {  // told to stop or to leave: how it ended is no news for the policy
      log::info("child {} {}", pid, describe_wait_status(status));
      continue;
    }
    apply(policy_->exited(table_, child, status));
  }
  if (!policy_->failure().empty() && !stopping_) {
    log::error("{}", policy_->failure());
    stop(0, true);
  }
  if (stopping_ && table_.size() == 0) finish();
}

// SIGHUP: a new image starts beside this one (succession.hpp) while the children go on serving;
// after a hand-over, the HUP is the new image's.
// The table as /status and netserver_processes show it.
void Supervisor::publish_table() { server_.runtime().observatory().publish(entries()); }

std::vector<ProcessEntry> Supervisor::entries() const {
  std::vector<ProcessEntry> children;
  for (const auto& [pid, child] : table_.all()) {
    ProcessState state = ProcessState::starting;
    switch (child.state) {
      case ChildState::starting: state = ProcessState::starting; break;
      case ChildState::idle: state = ProcessState::idle; break;
      case ChildState::busy: state = ProcessState::busy; break;
      case ChildState::retiring: state = ProcessState::draining; break;
    }
    children.push_back({pid, settings_.child_role, state});
  }
  return children;
}

void Supervisor::restart() {
  if (stopping_ && !succession_->handed_over()) return;
  if (!succession_->handed_over())
    log::notice("HUP received: restarting; {} children serve until the new image does", table_.size());
  succession_->hup();
}

// The new image serves: no child is spawned any more, every child finishes its sessions and
// leaves (restart_drain_timeout bounds them), and the loop ends when the last one is gone. The
// listening sockets never closed, so no client was refused.
void Supervisor::let_go() {
  log::notice("{} children finish their sessions and exit", table_.size());
  if (on_stop_) on_stop_(SIGHUP);
  stopping_ = true;
  check_timer_.cancel();
  status_timer_.cancel();
  if (settings_.finish_signal != 0) signal_all(settings_.finish_signal);
  table_.retire_all();
  publish_table();
  const Duration limit = server_.runtime().stop_times().restart_drain;
  if (limit != forever) {
    drain_timer_.expires_after(limit);
    drain_timer_.async_wait([this, limit](const boost::system::error_code& error) {
      if (error || table_.size() == 0) return;
      log::warning("{} children of the previous image still busy after restart_drain_timeout ({} s): {}",
                   table_.size(), to_seconds(limit), settings_.stop_signal != 0 ? "stopping them" : "killing them");
      if (settings_.stop_signal == 0) return signal_all(SIGKILL);
      signal_all(settings_.stop_signal);
      kill_after_grace();
    });
  }
  if (table_.size() == 0) finish();
}

// TERM/INT: children stop gracefully, the stragglers are killed after graceful_timeout.
// QUIT: children are killed now.
void Supervisor::stop(int received, bool graceful) {
  if (received != 0)
    log::notice("{} received: stopping {} children{}", signal_name(received), table_.size(),
                graceful ? " gracefully" : " now");
  systemd::notify("STOPPING=1");
  server_.runtime().stop_listening();  // children busy with a session keep their copies: the shutdown stops those too
  const bool first = !stop_seen_;
  stopping_ = true;
  stop_seen_ = true;
  succession_->stop(received != 0 ? received : SIGTERM);  // a new image on trial, or the one serving now
  if (on_stop_) on_stop_(received);
  const int signal = graceful ? settings_.stop_signal : SIGKILL;
  if (signal != 0) signal_all(signal);
  check_timer_.cancel();
  if (table_.size() == 0) return finish();
  if (first && graceful) kill_after_grace();
}

void Supervisor::signal_all(int signal) {
  for (pid_t pid : table_.pids()) ::kill(pid, signal);
}

void Supervisor::kill_after_grace() {
  const Duration grace = server_.runtime().stop_times().graceful;
  grace_timer_.expires_after(grace + settings_.kill_margin);
  grace_timer_.async_wait([this, grace](const boost::system::error_code& error) {
    if (error || table_.size() == 0) return;
    log::warning("{} children still busy after graceful_timeout ({} s): killing them", table_.size(), to_seconds(grace));
    signal_all(SIGKILL);
  });
}

void Supervisor::schedule_check() {
  if (settings_.check_interval == Duration::zero()) return;
  check_timer_.expires_after(settings_.check_interval);
  check_timer_.async_wait([this](const boost::system::error_code& error) {
    if (error || stopping_) return;
    apply(policy_->check(table_));
    schedule_check();
  });
}

void Supervisor::finish() {
  if (watchdog_) watchdog_->stop();
  grace_timer_.cancel();
  check_timer_.cancel();
  status_timer_.cancel();
  drain_timer_.cancel();
  signals_.stop();
  io_.stop();
}

}  // namespace netserver
