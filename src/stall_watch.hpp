#pragma once
/// Seeing what an event loop is doing, from inside the process and from its parent.
///
/// - The loop marks each callback it runs (CallbackScope: two relaxed stores on entry, one on
///   exit, into the process's ActivityRecord in its metrics slot) and beats (HeartbeatTimer).
/// - StallWatcher, a thread per event-loop process, wakes every stall_warning / 4 and, when one
///   callback has held the loop longer than stall_warning, logs it while it still blocks
///   (process, callback, session, peer) and again with the total when it returns; each stall
///   counts in netserver_loop_stalls_total. The Multiplex manual's warning, made visible.
/// - install_last_words(): on SIGABRT (the watchdog's, watchdog.hpp, or an abort()) the process
///   writes what its loop was doing and a backtrace to the log, then dies of SIGABRT.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "metrics_slot.hpp"
#include "netserver/metrics.hpp"

namespace netserver {

/// Which callback a loop runs (the low byte of ActivityRecord::state); 0 is "between callbacks".
enum class CallbackKind : std::uint8_t {
  none = 0,
  on_connect,
  on_input,
  on_eof,
  on_timeout,
  on_close,
  when_drained,   ///< Session::when_drained's callback
  conversation,   ///< a Conversation's coroutine
  room,           ///< a Room's answer (who, claim, join) or a delivery
  accept,         ///< the engine accepting and admitting a client
  timer,          ///< a timer of the engine's
  bus,            ///< handling bytes from the bus
  signal,         ///< acting on a signal
  hook,           ///< a Server hook
  other,
};

/// "on_input", "on_connect", ...
std::string_view callback_name(CallbackKind callback);

/// What a callback works for: a session (its id and peer) or the process itself. A Session owns
/// one (declared after its peer text, which it views). Destroying it waits, if need be, while
/// the stall watcher thread copies it (a few instructions): the watcher never reads a dead one.
class ActivitySubject {
 public:
  /// `peer` must outlive this subject.
  ActivitySubject(std::uint64_t session, std::string_view peer) : session_(session), peer_(peer) {}
  ~ActivitySubject();
  ActivitySubject(const ActivitySubject&) = delete;
  ActivitySubject& operator=(const ActivitySubject&) = delete;

  /// The subject of callbacks that serve no one session (accepting, timers, the bus): id 0.
  static const ActivitySubject& process();

  std::uint64_t session() const { return session_; }
  std::string_view peer() const { return peer_; }

 private:
  std::uint64_t session_;
  std::string_view peer_;
};

namespace detail {
/// Loop-thread-private bookkeeping of CallbackScope. A new child starts with none (fork resets
/// it: a child forked from inside a callback is not inside one).
struct LoopMarks {
  int depth = 0;               // scopes open; only the outermost marks
  std::uint64_t sequence = 0;  // callbacks entered so far
};
extern LoopMarks loop_marks;
std::int64_t monotonic_ns();
/// A seam for tests: when set, the watcher thread calls it after it has checked that a subject
/// is the running callback's and before it copies it (the moment the loop may end that callback).
extern void (*subject_copy_hook)();
}  // namespace detail

/// Marks one callback, on the loop thread, for its lifetime: the stall watcher and the watchdog
/// see it. Nested scopes (a callback run from inside another) leave the outer mark standing:
/// the outer callback is what holds the loop.
class CallbackScope {
 public:
  CallbackScope(const ActivitySubject& subject, CallbackKind callback) noexcept
      : outermost_(detail::loop_marks.depth++ == 0) {
    if (!outermost_) return;
    ActivityRecord& record = *detail::current_activity;
    record.subject.store(reinterpret_cast<std::uintptr_t>(&subject), std::memory_order_relaxed);
    record.state.store((++detail::loop_marks.sequence << 8) | static_cast<std::uint8_t>(callback),
                       std::memory_order_release);  // publishes the subject with the state
  }
  ~CallbackScope() {
    if (detail::loop_marks.depth > 0) --detail::loop_marks.depth;
    if (outermost_) detail::current_activity->state.store(detail::loop_marks.sequence << 8, std::memory_order_relaxed);
  }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

 private:
  bool outermost_;
};

/// The loop turned: stores now in this process's heartbeat (the watchdog reads it).
inline void beat_heartbeat() {
  detail::current_activity->heartbeat_ns.store(detail::monotonic_ns(), std::memory_order_relaxed);
}
/// This process now waits outside its loop on purpose (an idle PreFork child in epoll_wait):
/// the watchdog leaves it alone until the next beat_heartbeat().
inline void pause_heartbeat() { detail::current_activity->heartbeat_ns.store(0, std::memory_order_relaxed); }

/// Beats every `interval` from a timer on `io` while it lives (a loop stuck in a callback fires
/// no timer: its heartbeat gets old). Beats once at construction.
class HeartbeatTimer {
 public:
  HeartbeatTimer(boost::asio::io_context& io, std::chrono::milliseconds interval);
  ~HeartbeatTimer();
  HeartbeatTimer(const HeartbeatTimer&) = delete;
  HeartbeatTimer& operator=(const HeartbeatTimer&) = delete;

 private:
  void arm();
  boost::asio::steady_timer timer_;
  std::chrono::milliseconds interval_;
};

/// What a stall watcher does.
struct StallWatchSettings {
  /// stall_warning: a callback holding the loop this long is logged (while it blocks and when
  /// it returns) and counted; 0: never.
  std::chrono::nanoseconds warn_after{0};
  /// Past this, the stall is written to the process's slot without a log line, so that the
  /// parent's watchdog can say which session and peer a stuck process was serving (worker_timeout
  /// / 2 is a good value); 0: only at warn_after.
  std::chrono::nanoseconds report_after{0};
  /// Names the process in the log: "worker 2", "prefork child", "multiplex".
  std::string process;
  /// netserver_loop_stalls_total (only the watcher thread writes it).
  Counter stalls;
};

/// This process's stall watcher thread (at most one per process). A thread does not survive
/// fork: a new child that runs an event loop calls start() for its own.
class StallWatcher {
 public:
  /// Starts (or restarts with new settings) the watcher of this process's loop; with both
  /// durations 0 it stops it instead. It wakes every quarter of the shorter one. Call on the loop
  /// thread, after MetricsStore binds this process.
  static void start(StallWatchSettings settings);
  /// Stops and joins the watcher thread (no-op when none runs). Before the store goes away.
  static void stop();
  /// True while a watcher thread runs in this process.
  static bool running();
};

/// Installs this process's SIGABRT handler (the watchdog's "stack trace from the process
/// itself"): it writes, with async-signal-safe calls only, one [error] log line saying what the
/// loop was doing -- callback, session, peer, for how long -- then a backtrace, to the log's
/// descriptor, and the process dies of SIGABRT. Call on the loop thread (the one whose work it
/// describes) after the log is configured; again in each new child.
void install_last_words(std::string process);

/// What `record` says its loop is doing, for the watchdog's log line: "in on_input of session
/// 17 (127.0.0.1:5555) for 31.2 s" or "between callbacks". Reads another process's record.
std::string describe_activity(const ActivityRecord& record, std::int64_t now_ns);

}  // namespace netserver
