#include "signals.hpp"

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

#include "netserver/log.hpp"

namespace netserver {

SignalWatcher::SignalWatcher(boost::asio::io_context& io) : descriptor_(io) { sigemptyset(&mask_); }

void SignalWatcher::on(std::initializer_list<int> signals, const std::function<void(int)>& action) {
  for (int signal : signals) actions_[signal] = [action](const signalfd_siginfo& info) { action(static_cast<int>(info.ssi_signo)); };
  watch(signals);
}

void SignalWatcher::on_detailed(std::initializer_list<int> signals,
                                const std::function<void(const signalfd_siginfo&)>& action) {
  for (int signal : signals) actions_[signal] = action;
  watch(signals);
}

// Blocked first, then read: a signal sent in between is pending, and the descriptor reads it.
void SignalWatcher::watch(std::initializer_list<int> signals) {
  for (int signal : signals) sigaddset(&mask_, signal);
  ::sigprocmask(SIG_BLOCK, &mask_, nullptr);
  const int existing = descriptor_.is_open() ? descriptor_.native_handle() : -1;
  const int fd = ::signalfd(existing, &mask_, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) {
    log::error("signalfd(): {}: signals are not handled", std::strerror(errno));
    return;
  }
  if (existing < 0) descriptor_.assign(fd);
  if (!waiting_) wait();
}

void SignalWatcher::stop() {
  actions_.clear();
  sigemptyset(&mask_);
  boost::system::error_code ignored;
  descriptor_.close(ignored);  // the signals stay blocked: pending until the next watcher
}

void SignalWatcher::forget_in_child() {
  if (descriptor_.is_open()) ::close(descriptor_.native_handle());
}

// One signal read at a time: an action may stop this watcher, and what is still pending must stay
// in the kernel for the next one rather than be read here and dropped.
void SignalWatcher::wait() {
  waiting_ = true;
  descriptor_.async_wait(boost::asio::posix::descriptor_base::wait_read, [this](const boost::system::error_code& error) {
    waiting_ = false;
    if (error) return;
    while (!actions_.empty() && descriptor_.is_open()) {
      signalfd_siginfo info{};
      const ssize_t got = ::read(descriptor_.native_handle(), &info, sizeof info);
      if (got != static_cast<ssize_t>(sizeof info)) break;  // EAGAIN: nothing more pending
      if (auto it = actions_.find(static_cast<int>(info.ssi_signo)); it != actions_.end()) {
        auto action = it->second;  // the action may replace or stop the watcher
        action(info);
      }
    }
    if (!actions_.empty() && descriptor_.is_open() && !waiting_) wait();
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
