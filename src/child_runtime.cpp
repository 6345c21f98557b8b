#include "child_runtime.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"

namespace netserver {

namespace asio = boost::asio;

ParentLink::ParentLink(asio::io_context& io, int channel) : channel_(io, channel) {}

ParentLink::~ParentLink() {
  boost::system::error_code ignored;
  channel_.close(ignored);
}

void ParentLink::report(char what) {
  if (::send(channel_.native_handle(), &what, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
    log::debug("child {}: cannot report to the parent: {}", ::getpid(), std::strerror(errno));
}

void ParentLink::watch(std::function<void(char)> order, std::function<void()> gone) {
  order_ = std::move(order);
  gone_ = std::move(gone);
  read();
}

void ParentLink::read() {
  channel_.async_read_some(asio::buffer(bytes_), [this](const boost::system::error_code& error, std::size_t n) {
    if (error == asio::error::operation_aborted) return;
    if (error || n == 0) {
      gone_seen_ = true;
      if (auto gone = std::exchange(gone_, nullptr)) gone();
      return;
    }
    for (std::size_t i = 0; i < n; ++i)
      if (order_) order_(bytes_[i]);
    read();
  });
}

namespace {

// The signals a server acts on; in a child each is either the child's own or the parent's.
constexpr int server_signals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU};

bool listed(const std::vector<int>& signals, int signal) {
  return std::find(signals.begin(), signals.end(), signal) != signals.end();
}

// Every disposition back to its default (the handled signals are blocked and read from the
// child's own SignalWatcher's signalfd, so their disposition does not matter while blocked).
void set_up_signals(const ChildSignals& wanted) {
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  for (int signal = 1; signal < NSIG; ++signal) ::sigaction(signal, &action, nullptr);
  action.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &action, nullptr);  // a vanished client costs its own session
  for (int signal : wanted.ignored) ::sigaction(signal, &action, nullptr);
  sigset_t held;
  sigemptyset(&held);
  for (int signal : server_signals)
    if (!listed(wanted.ignored, signal)) sigaddset(&held, signal);
  ::sigprocmask(SIG_SETMASK, &held, nullptr);  // the handled ones until SignalWatcher takes them
}

}  // namespace

void run_child(Server& server, int channel, const ChildSignals& signals, const std::function<int(int)>& main) {
  int status = exit_status::failure;
  set_up_signals(signals);
  bool initialised = false;
  try {
    server.child_init_hook();
    initialised = true;
  } catch (const std::exception& error) {
    log::error("child_init_hook failed: {} (child {})", error.what(), ::getpid());
    status = exit_status::boot_failed;
  }
  if (initialised) {
    try {
      status = main(channel);
    } catch (const std::exception& error) {
      log::error("child {} failed: {}", ::getpid(), error.what());
    }
    try {
      server.child_finish_hook();
    } catch (const std::exception& error) {
      log::error("child_finish_hook failed: {} (child {})", error.what(), ::getpid());
    }
  }
  ::_exit(status);
}

}  // namespace netserver
