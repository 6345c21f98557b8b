#include "signals.hpp"

#include <csignal>
#include <cstring>

#include "netserver/log.hpp"

namespace netserver {

SignalWatcher::SignalWatcher(boost::asio::io_context& io) : set_(io) {}

void SignalWatcher::on(std::initializer_list<int> signals, const std::function<void(int)>& action) {
  sigset_t unblock;
  sigemptyset(&unblock);
  for (int signal : signals) {
    set_.add(signal);
    actions_[signal] = action;
    sigaddset(&unblock, signal);
  }
  // A restart execs with these blocked (see Relauncher::exec); now they have a handler.
  ::sigprocmask(SIG_UNBLOCK, &unblock, nullptr);
  if (!waiting_) wait();
}

// The signals are left blocked rather than given back their default action: a second TERM
// during the teardown that follows must not kill the process (it stays pending and dies with it).
void SignalWatcher::stop() {
  sigset_t held;
  sigemptyset(&held);
  for (const auto& [signal, action] : actions_) sigaddset(&held, signal);
  ::sigprocmask(SIG_BLOCK, &held, nullptr);
  boost::system::error_code ignored;
  set_.cancel(ignored);
  set_.clear(ignored);
  actions_.clear();
}

void SignalWatcher::wait() {
  waiting_ = true;
  set_.async_wait([this](const boost::system::error_code& error, int signal) {
    waiting_ = false;
    if (error) return;
    if (auto it = actions_.find(signal); it != actions_.end()) {
      auto action = it->second;  // the action may replace or stop the watcher
      action(signal);
    }
    if (!actions_.empty() && !waiting_) wait();
  });
}

void hold_signals_until_handled() {
  sigset_t held;
  sigemptyset(&held);
  for (int signal : {SIGHUP, SIGUSR1, SIGTTIN, SIGTTOU, SIGCHLD}) sigaddset(&held, signal);
  ::sigprocmask(SIG_BLOCK, &held, nullptr);
}

void hold_stop_signals_until_handled() {
  sigset_t held;
  sigemptyset(&held);
  for (int signal : {SIGTERM, SIGINT, SIGQUIT}) sigaddset(&held, signal);
  ::sigprocmask(SIG_BLOCK, &held, nullptr);
}

std::string signal_name(int signal) {
  const char* abbreviation = ::sigabbrev_np(signal);
  return abbreviation ? abbreviation : std::to_string(signal);
}

}  // namespace netserver
