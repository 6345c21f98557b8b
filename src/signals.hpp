#pragma once
/// Signals as events on the loop: the OS handler only records the signal (asio::signal_set);
/// the action runs on the event loop like any other callback.

#include <functional>
#include <initializer_list>
#include <map>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

namespace netserver {

class SignalWatcher {
 public:
  explicit SignalWatcher(boost::asio::io_context& io);
  /// Runs `action(signal)` on the loop each time one of `signals` arrives.
  void on(std::initializer_list<int> signals, const std::function<void(int)>& action);
  /// Stops watching; the signals stay blocked (a process stopping must not die of a second TERM).
  void stop();

 private:
  void wait();
  boost::asio::signal_set set_;
  std::map<int, std::function<void(int)>> actions_;
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
