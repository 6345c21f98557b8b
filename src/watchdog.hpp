#pragma once
/// worker_timeout (gunicorn's `timeout`): the parent watches the heartbeat every supervised
/// process keeps in its metrics slot (stall_watch.hpp). A process whose loop has not turned for
/// worker_timeout is logged with what it was doing, sent SIGABRT -- its last-words handler logs
/// its own stack and it dies -- and SIGKILLed if it is still there `kill_after` later. The
/// caller (the Supervisor) reaps it and replaces it as for any crash.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "metrics_exposition.hpp"
#include "metrics_store.hpp"

namespace netserver {

/// How long `record`'s loop has gone without a beat, at `now_ns` (CLOCK_MONOTONIC); 0 while it
/// waits outside its loop on purpose (heartbeat paused).
std::chrono::nanoseconds silent_for(const ActivityRecord& record, std::int64_t now_ns);

class Watchdog {
 public:
  /// The processes to watch, asked at every check (this process is skipped).
  using Processes = std::function<std::vector<ProcessEntry>()>;
  /// `send_signal` defaults to kill(2); tests may pass their own.
  using SendSignal = std::function<void(pid_t, int)>;

  Watchdog(boost::asio::io_context& io, const MetricsStore& store, std::chrono::nanoseconds timeout,
           Processes processes, std::chrono::nanoseconds kill_after = std::chrono::seconds(2),
           SendSignal send_signal = nullptr);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  /// Checks every quarter of the timeout from now on (nothing when the timeout is 0).
  void start();
  /// No more checks.
  void stop();
  /// One check now: signals what is due. Returns the pids sent SIGABRT by this call.
  std::vector<pid_t> check();

 private:
  void arm();

  boost::asio::steady_timer timer_;
  const MetricsStore& store_;
  std::chrono::nanoseconds timeout_;
  Processes processes_;
  std::chrono::nanoseconds kill_after_;
  SendSignal send_signal_;
  struct Signalled {
    std::chrono::steady_clock::time_point aborted;  // when SIGABRT was sent
    bool killed = false;                            // SIGKILL too
  };
  std::map<pid_t, Signalled> signalled_;  // until the pid leaves the process table (reaped)
  bool running_ = false;
};

}  // namespace netserver
