#pragma once
/// Signals as events on the loop: the signals a watcher takes stay blocked and are read from a
/// signalfd, so the action runs on the event loop like any other callback, and a signal that
/// arrives while no watcher reads (between one loop's end and the next one's start, across a
/// fork or an exec) stays pending in the kernel for the next watcher: none is ever lost.

#include <sys/signalfd.h>

#include <functional>
#include <initializer_list>
#include <map>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace netserver {

/// One process's signals on one event loop. Only one watcher should read a given signal at a
/// time: a signal is delivered once, to whichever reads it first.
class SignalWatcher {
 public:
  explicit SignalWatcher(boost::asio::io_context& io);
  /// Runs `action(signal)` on the loop each time one of `signals` arrives.
  void on(std::initializer_list<int> signals, const std::function<void(int)>& action);
  /// The same, with what the kernel says about the signal (ssi_code tells whether a process sent
  /// it: SI_USER, SI_QUEUE and SI_TKILL are <= 0).
  void on_detailed(std::initializer_list<int> signals, const std::function<void(const signalfd_siginfo&)>& action);
  /// Stops watching; the signals stay blocked and pending (a process stopping must not die of a
  /// second TERM, and a next watcher in this process gets what arrived meanwhile).
  void stop();
  /// In a child just forked from the process that owns this watcher (whose loop is discarded):
  /// closes the descriptor without touching the loop.
  void forget_in_child();

 private:
  void watch(std::initializer_list<int> signals);
  void wait();
  boost::asio::posix::stream_descriptor descriptor_;
  sigset_t mask_{};
  std::map<int, std::function<void(const signalfd_siginfo&)>> actions_;
  bool waiting_ = false;
};

/// "TERM" for SIGTERM.
std::string signal_name(int signal);

/// Blocks HUP, USR1, TTIN, TTOU and CHLD until a SignalWatcher handles them: their default
/// actions (terminate, stop) must not hit a server that is still starting. TERM, INT and QUIT
/// keep acting at once, so a stuck start-up can still be interrupted.
void hold_signals_until_handled();
/// Once the listeners are bound, TERM, INT and QUIT wait too: what is left of the start-up
/// (detaching, pid file, privileges) is short, and a stop asked for then (systemd stopping a unit
/// it just started) is carried out by the loop, gracefully, instead of killing a half-started
/// server that leaves its pid file behind.
void hold_stop_signals_until_handled();

}  // namespace netserver
