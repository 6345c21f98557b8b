#include "supervisor.hpp"

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "systemd.hpp"
#include "worker.hpp"

namespace netserver {

namespace asio = boost::asio;

std::string describe_wait_status(int wait_status) {
  if (WIFEXITED(wait_status)) return fmt::format("exited with status {}", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status))
    return fmt::format("killed by signal {} ({})", WTERMSIG(wait_status), signal_name(WTERMSIG(wait_status)));
  return fmt::format("ended with wait status {}", wait_status);
}

// The parent's end of a child's socketpair (shared with its read handler, which may still be
// queued when the child is reaped).
struct Supervisor::Channel {
  Channel(asio::io_context& io, int fd) : stream(io, fd) {}
  asio::posix::stream_descriptor stream;
  char reports[64];
};

namespace {

std::chrono::steady_clock::duration seconds(double value) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(value));
}

}  // namespace

Supervisor::Loop::Loop() : io_context(single_threaded) {}

// Shut down, not destroyed: the child runs inside the parent's run() (a spawn from a handler),
// whose thread-local context entry must keep pointing at live memory -- a new io_context allocated
// at the freed address would take that entry for its own and lose its handlers.
void Supervisor::Loop::discard() { shutdown(); }

Supervisor::Supervisor(Server& server, SupervisorSettings settings)
    : server_(server), settings_(settings), signals_(io_), check_timer_(io_), grace_timer_(io_) {}

Supervisor::~Supervisor() = default;

void Supervisor::run(ChildPolicy& policy) {
  policy_ = &policy;
  watch_signals();
  policy.adopt_leaving(server_.inherited_children());
  reap_children();  // those that ended during the exec: their SIGCHLD went to the old image
  policy.start();
  schedule_check();
  io_.run();
  policy_ = nullptr;
  if (!policy.failure().empty()) throw Error(policy.failure(), exit_status::boot_failed);
}

void Supervisor::watch_signals() {
  signals_.on({SIGTERM, SIGINT}, [this](int signal) { stop(signal, true); });
  signals_.on({SIGQUIT}, [this](int signal) { stop(signal, false); });
  signals_.on({SIGTTIN}, [this](int) { policy_->grow(); });
  signals_.on({SIGTTOU}, [this](int) { policy_->shrink(); });
  signals_.on({SIGCHLD}, [this](int) { reap_children(); });
  signals_.on({SIGHUP}, [this](int) { restart(); });
  signals_.on({SIGUSR1}, [this](int) {
    server_.reopen_log();
    for (pid_t pid : policy_->pids()) ::kill(pid, SIGUSR1);
  });
}

// --- spawning ----------------------------------------------------------------------------------

pid_t Supervisor::spawn(const ChildMain& main) {
  server_.pre_fork_hook();
  int channel[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
    log::error("{}", system_error_text("socketpair() failed while spawning a child", errno));
    return -1;
  }
  // Signals stay blocked across fork until the child has its own handlers (each child's main
  // unblocks what it handles).
  sigset_t all, previous;
  sigfillset(&all);
  ::sigprocmask(SIG_BLOCK, &all, &previous);
  io_.notify_fork(asio::execution_context::fork_prepare);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(channel[0]);
    run_child(main, channel[1]);
  }
  const int fork_error = errno;
  io_.notify_fork(asio::execution_context::fork_parent);
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  ::close(channel[1]);
  if (pid < 0) {
    ::close(channel[0]);
    log::error("{}", system_error_text("fork() failed while spawning a child", fork_error));
    return -1;
  }
  log::info("spawned child {}", pid);
  auto open = std::make_shared<Channel>(io_, channel[0]);
  channels_[pid] = open;
  read_reports(pid, std::move(open));
  return pid;
}

// In the new child: the parent's event loop first gets kernel objects of its own (its epoll
// instance and signal pipe are shared with the parent until then: deregistering anything there
// would deafen the parent), then is discarded; the other children's channels close; then
// child_init and the child's own main. Never returns (the parent's loop may be on the stack).
void Supervisor::run_child(const ChildMain& main, int channel) {
  int status = exit_status::failure;
  try {
    io_.notify_fork(asio::execution_context::fork_child);
    io_.discard();
    for (const auto& [other, open] : channels_) ::close(open->stream.native_handle());
    status = child_init(server_) ? main(channel) : exit_status::boot_failed;
  } catch (const std::exception& error) {
    log::error("child {} failed: {}", ::getpid(), error.what());
  }
  ::_exit(status);
}

bool Supervisor::child_init(Server& server) {
  try {
    server.child_init_hook();
    return true;
  } catch (const std::exception& error) {
    log::error("child_init_hook failed: {} (child {})", error.what(), ::getpid());
    return false;
  }
}

void Supervisor::send_order(pid_t pid, char order) {
  auto it = channels_.find(pid);
  if (it != channels_.end()) ::send(it->second->stream.native_handle(), &order, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

void Supervisor::read_reports(pid_t pid, std::shared_ptr<Channel> channel) {
  Channel& open = *channel;
  open.stream.async_read_some(asio::buffer(open.reports), [this, pid, channel = std::move(channel)](
                                                              const boost::system::error_code& error,
                                                              std::size_t bytes) mutable {
    if (error) return;  // the child is gone (or its channel closed): waitpid says how
    for (std::size_t i = 0; i < bytes && on_report_; ++i) on_report_(pid, channel->reports[i]);
    if (channels_.count(pid)) read_reports(pid, std::move(channel));
  });
}

// --- reaping, restarting, stopping --------------------------------------------------------------

// Only the pids the policy knows are waited for: a hook's own children are not ours.
void Supervisor::reap_children() {
  for (pid_t pid : policy_->pids()) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) != pid) continue;
    channels_.erase(pid);
    policy_->child_exited(pid, status);
  }
  if (!policy_->failure().empty() && !stopping_) {
    log::error("{}", policy_->failure());
    stop(0, true);
  }
  if (stopping_ && policy_->pids().empty()) finish();
}

// SIGHUP: every child finishes its sessions and leaves, while this process execs the new image,
// which waits for them. The listening sockets never close, so no client is refused.
void Supervisor::restart() {
  if (stopping_ || !server_.prepare_restart()) return;
  log::notice("HUP received: restarting; {} children finish their sessions and exit", policy_->pids().size());
  if (on_stop_) on_stop_(SIGHUP);
  policy_->stop(settings_.finish_signal);
  server_.restart(policy_->pids());
  policy_->resume();  // exec failed (logged): carry on, replacing the children told to leave
  if (on_stop_) on_stop_(0);
}

// TERM/INT: children stop gracefully, the stragglers are killed after graceful_timeout.
// QUIT: children are killed now.
void Supervisor::stop(int received, bool graceful) {
  if (received != 0)
    log::notice("{} received: stopping {} children{}", signal_name(received), policy_->pids().size(),
                graceful ? " gracefully" : " now");
  systemd::notify("STOPPING=1");
  const bool first = !stopping_;
  stopping_ = true;
  if (on_stop_) on_stop_(received);
  policy_->stop(graceful ? settings_.stop_signal : SIGKILL);
  check_timer_.cancel();
  if (policy_->pids().empty()) return finish();
  if (first && graceful) kill_after_grace();
}

void Supervisor::kill_after_grace() {
  const double grace = server_.config().seconds("graceful_timeout");
  grace_timer_.expires_after(seconds(grace + settings_.kill_margin));
  grace_timer_.async_wait([this, grace](const boost::system::error_code& error) {
    if (error || policy_->pids().empty()) return;
    log::warning("{} children still busy after graceful_timeout ({} s): killing them", policy_->pids().size(), grace);
    policy_->stop(SIGKILL);
  });
}

void Supervisor::schedule_check() {
  if (settings_.check_interval <= 0) return;
  check_timer_.expires_after(seconds(settings_.check_interval));
  check_timer_.async_wait([this](const boost::system::error_code& error) {
    if (error || stopping_) return;
    policy_->check();
    schedule_check();
  });
}

void Supervisor::finish() {
  grace_timer_.cancel();
  check_timer_.cancel();
  signals_.stop();
  io_.stop();
}

}  // namespace netserver
