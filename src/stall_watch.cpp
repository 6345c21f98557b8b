#include "stall_watch.hpp"

#include <execinfo.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "log_descriptor.hpp"
#include "netserver/log.hpp"

namespace netserver {

namespace detail {
LoopMarks loop_marks;
void (*subject_copy_hook)() = nullptr;

std::int64_t monotonic_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}
}  // namespace detail

namespace {

using Clock = std::chrono::steady_clock;

// The subject the stall watcher thread is copying (a one-entry hazard pointer): a subject being
// destroyed waits while it is announced here.
std::atomic<std::uintptr_t> subject_in_use{0};

CallbackKind callback_of(std::uint64_t state) { return static_cast<CallbackKind>(state & 0xff); }
bool in_callback(std::uint64_t state) { return (state & 0xff) != 0; }

double seconds(std::int64_t ns) { return static_cast<double>(ns) / 1e9; }

// A subject's id and peer, copied out by the watcher thread.
struct SubjectCopy {
  bool known = false;
  std::uint64_t session = 0;
  std::string peer;
};

// Copies the subject of the callback `state` marks, if it is still that callback's: announce,
// fence, look again (ActivitySubject's destructor does the mirror image).
SubjectCopy copy_subject(const ActivityRecord& record, std::uint64_t state) {
  const std::uintptr_t address = record.subject.load(std::memory_order_relaxed);
  if (address == 0) return {};
  subject_in_use.store(address, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  SubjectCopy copy;
  if (record.subject.load(std::memory_order_relaxed) == address &&
      record.state.load(std::memory_order_acquire) == state) {
    if (detail::subject_copy_hook) detail::subject_copy_hook();
    const auto* subject = reinterpret_cast<const ActivitySubject*>(address);
    copy = {true, subject->session(), std::string(subject->peer())};
  }
  subject_in_use.store(0, std::memory_order_release);
  return copy;
}

std::string describe(CallbackKind callback, const SubjectCopy& subject) {
  if (!subject.known) return std::string(callback_name(callback));
  if (subject.session == 0) return fmt::format("{} (no session)", callback_name(callback));
  return fmt::format("{} of session {} ({})", callback_name(callback), subject.session, subject.peer);
}

// The stall report in the slot: a seqlock with the watcher thread as the only writer.
void write_report(ActivityRecord& record, std::uint64_t state, std::int64_t since_ns, const SubjectCopy& subject) {
  const std::uint64_t sequence = record.report_sequence.load(std::memory_order_relaxed);
  record.report_sequence.store(sequence + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  record.report_state.store(state, std::memory_order_relaxed);
  record.report_since_ns.store(since_ns, std::memory_order_relaxed);
  record.report_session.store(subject.session, std::memory_order_relaxed);
  char peer[ActivityRecord::peer_words * 8] = {};
  std::memcpy(peer, subject.peer.data(), std::min(subject.peer.size(), sizeof peer - 1));
  for (std::size_t i = 0; i < ActivityRecord::peer_words; ++i) {
    std::uint64_t word;
    std::memcpy(&word, peer + i * 8, 8);
    record.report_peer[i].store(word, std::memory_order_relaxed);
  }
  record.report_sequence.store(sequence + 2, std::memory_order_release);
}

// One stall report as a reader sees it; `valid` false when it changed while being read.
struct Report {
  bool valid = false;
  std::uint64_t state = 0;
  std::int64_t since_ns = 0;
  std::uint64_t session = 0;
  char peer[ActivityRecord::peer_words * 8] = {};
};

// Async-signal-safe (no allocation): the last-words handler uses it too.
Report read_report(const ActivityRecord& record) {
  Report report;
  for (int attempt = 0; attempt < 100 && !report.valid; ++attempt) {
    const std::uint64_t before = record.report_sequence.load(std::memory_order_acquire);
    if (before % 2 == 1) continue;
    report.state = record.report_state.load(std::memory_order_relaxed);
    report.since_ns = record.report_since_ns.load(std::memory_order_relaxed);
    report.session = record.report_session.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < ActivityRecord::peer_words; ++i) {
      const std::uint64_t word = record.report_peer[i].load(std::memory_order_relaxed);
      std::memcpy(report.peer + i * 8, &word, 8);
    }
    report.peer[sizeof report.peer - 1] = '\0';
    std::atomic_thread_fence(std::memory_order_acquire);
    report.valid = record.report_sequence.load(std::memory_order_relaxed) == before;
  }
  return report;
}

// --- the watcher thread ---------------------------------------------------------------------

struct WatchState {
  StallWatchSettings settings;
  std::chrono::nanoseconds period{0};
  std::mutex gate;  // held while the thread samples and logs; fork takes it (see the atfork handlers)
  std::condition_variable wake;
  bool stopping = false;
  pthread_t thread{};

  // The callback being watched: the state value, and when samples saw it.
  std::uint64_t watched = 0;
  std::int64_t seen_before_ns = 0;  // the last sample that saw something else
  std::int64_t first_seen_ns = 0;
  std::int64_t last_seen_ns = 0;
  bool warned = false;
  bool reported = false;
  SubjectCopy subject;
};

WatchState* watch = nullptr;      // this process's watcher; only the loop thread and fork touch it
WatchState* abandoned = nullptr;  // a child's copy of its parent's (its thread did not come along)

void log_warning(const std::string& text) {
  spdlog::default_logger()->log(log::to_spdlog(LogLevel::warning), "{}", text);  // the shared_ptr: safe from any thread
}

void stall_ended(WatchState& w, std::int64_t now) {
  if (w.warned) {
    const double about = seconds((now + w.last_seen_ns) / 2 - (w.first_seen_ns + w.seen_before_ns) / 2);
    log_warning(fmt::format("stall: {}: {} returned after about {:.2f} s", w.settings.process,
                            describe(callback_of(w.watched), w.subject), about));
  }
  w.warned = w.reported = false;
  w.subject = {};
}

void sample(WatchState& w, ActivityRecord& record, std::int64_t now) {
  const std::uint64_t state = record.state.load(std::memory_order_acquire);
  if (state != w.watched || !in_callback(state)) {
    stall_ended(w, now);
    w.watched = state;
    w.seen_before_ns = w.last_seen_ns ? w.last_seen_ns : now;
    w.first_seen_ns = w.last_seen_ns = now;
    return;
  }
  w.last_seen_ns = now;
  const std::chrono::nanoseconds held(now - w.first_seen_ns);
  const auto& s = w.settings;
  const bool report_due = !w.reported && ((s.report_after.count() > 0 && held >= s.report_after) ||
                                          (s.warn_after.count() > 0 && held >= s.warn_after));
  if (report_due) {
    w.subject = copy_subject(record, state);
    write_report(record, state, w.first_seen_ns, w.subject);
    w.reported = true;
  }
  if (!w.warned && s.warn_after.count() > 0 && held >= s.warn_after) {
    w.warned = true;
    s.stalls.add();
    log_warning(fmt::format("stall: {}: {} has held the event loop for {:.2f} s so far (stall_warning {:g} s); "
                            "every other client of this process waits",
                            s.process, describe(callback_of(state), w.subject), seconds(held.count()),
                            std::chrono::duration<double>(s.warn_after).count()));
  }
}

void* watch_loop(void* argument) {
  WatchState& w = *static_cast<WatchState*>(argument);
  std::unique_lock<std::mutex> lock(w.gate);
  while (!w.stopping) {
    w.wake.wait_for(lock, w.period);
    if (!w.stopping) sample(w, *detail::current_activity, detail::monotonic_ns());
  }
  return nullptr;
}

// fork() copies only the thread calling it. The watcher's gate is taken around it, so that the
// child does not inherit it (or the log's lock, which the watcher takes only under the gate)
// held by a thread it does not have; the child forgets the watcher and starts its own.
void before_fork() {
  if (watch) watch->gate.lock();
}
void after_fork_in_parent() {
  if (watch) watch->gate.unlock();
}
void after_fork_in_child() {
  if (watch) abandoned = watch;  // its thread is gone: left allocated and untouched
  watch = nullptr;
  detail::loop_marks.depth = 0;
  subject_in_use.store(0);
}
[[maybe_unused]] const bool fork_handlers_installed =
    ::pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;

// --- last words (SIGABRT) --------------------------------------------------------------------

// A line built without allocating, for the signal handler.
class SignalText {
 public:
  void add(std::string_view text) {
    const std::size_t n = std::min(text.size(), sizeof buffer_ - size_);
    std::memcpy(buffer_ + size_, text.data(), n);
    size_ += n;
  }
  void add_number(std::uint64_t value, int min_digits = 1) {
    char digits[24];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value > 0 || n < min_digits);
    while (n > 0) add(std::string_view(&digits[--n], 1));
  }
  void add_seconds(std::int64_t ns) {  // "31.20"
    if (ns < 0) ns = 0;
    add_number(static_cast<std::uint64_t>(ns / 1'000'000'000));
    add(".");
    add_number(static_cast<std::uint64_t>(ns % 1'000'000'000 / 10'000'000), 2);
  }
  void write_to(int fd) const {
    std::size_t done = 0;
    while (done < size_) {
      const ssize_t n = ::write(fd, buffer_ + done, size_ - done);
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  char buffer_[2048];
  std::size_t size_ = 0;
};

struct LastWords {
  char process[128] = {};
  pid_t loop_thread = 0;
  long utc_offset = 0;  // seconds, taken at install (a DST change since is not followed)
};
LastWords last_words;

// "[2026-11-21 22:11:00.123] [error] [4242] ", the log's own prefix, without localtime().
void add_log_prefix(SignalText& line) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const std::int64_t local = now.tv_sec + last_words.utc_offset;
  std::int64_t days = local / 86400, second_of_day = local % 86400;
  if (second_of_day < 0) second_of_day += 86400, --days;
  // Civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras).
  const std::int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097, day_of_era = z - era * 146097;
  const std::int64_t year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const std::int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const std::int64_t shifted_month = (5 * day_of_year + 2) / 153;  // March = 0
  const std::int64_t day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
  const std::int64_t month = shifted_month < 10 ? shifted_month + 3 : shifted_month - 9;
  const std::int64_t year = year_of_era + era * 400 + (month <= 2);
  line.add("[");
  line.add_number(static_cast<std::uint64_t>(year), 4);
  line.add("-");
  line.add_number(static_cast<std::uint64_t>(month), 2);
  line.add("-");
  line.add_number(static_cast<std::uint64_t>(day), 2);
  line.add(" ");
  line.add_number(static_cast<std::uint64_t>(second_of_day / 3600), 2);
  line.add(":");
  line.add_number(static_cast<std::uint64_t>(second_of_day / 60 % 60), 2);
  line.add(":");
  line.add_number(static_cast<std::uint64_t>(second_of_day % 60), 2);
  line.add(".");
  line.add_number(static_cast<std::uint64_t>(now.tv_nsec / 1'000'000), 3);
  line.add("] [error] [");
  line.add_number(static_cast<std::uint64_t>(::getpid()));
  line.add("] ");
}

// What the loop is doing, from this process's own record. The subject is read only on the loop
// thread, which the handler then interrupted inside the callback: it is alive.
void add_activity(SignalText& line, const ActivityRecord& record, std::int64_t now) {
  const std::uint64_t state = record.state.load(std::memory_order_relaxed);
  if (!in_callback(state)) {
    line.add("its loop was between callbacks");
  } else {
    line.add("its loop was in ");
    line.add(callback_name(callback_of(state)));
    const auto address = record.subject.load(std::memory_order_relaxed);
    if (address != 0 && static_cast<pid_t>(::syscall(SYS_gettid)) == last_words.loop_thread) {
      const auto* subject = reinterpret_cast<const ActivitySubject*>(address);
      if (subject->session() != 0) {
        line.add(" of session ");
        line.add_number(subject->session());
        line.add(" (");
        line.add(subject->peer());
        line.add(")");
      }
    }
    const Report report = read_report(record);
    if (report.valid && report.state == state) {
      line.add(" for ");
      line.add_seconds(now - report.since_ns);
      line.add(" s");
    }
  }
  const std::int64_t beat = record.heartbeat_ns.load(std::memory_order_relaxed);
  if (beat != 0) {
    line.add(", last turned ");
    line.add_seconds(now - beat);
    line.add(" s ago");
  }
}

void say_last_words(int) {
  const int saved_errno = errno;
  const int fd = log::descriptor();
  SignalText line;
  add_log_prefix(line);
  line.add(last_words.process);
  line.add(" got SIGABRT (the watchdog's, or abort()): ");
  add_activity(line, *detail::current_activity, detail::monotonic_ns());
  line.add("; its stack:\n");
  line.write_to(fd);
  void* frames[64];
  const int depth = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, depth, fd);
  errno = saved_errno;
  ::signal(SIGABRT, SIG_DFL);
  ::raise(SIGABRT);  // delivered when the handler returns: the process dies of SIGABRT
}

}  // namespace

std::string_view callback_name(CallbackKind callback) {
  switch (callback) {
    case CallbackKind::none: return "no callback";
    case CallbackKind::on_connect: return "on_connect";
    case CallbackKind::on_input: return "on_input";
    case CallbackKind::on_eof: return "on_eof";
    case CallbackKind::on_timeout: return "on_timeout";
    case CallbackKind::on_close: return "on_close";
    case CallbackKind::when_drained: return "when_drained";
    case CallbackKind::conversation: return "a conversation";
    case CallbackKind::room: return "a room callback";
    case CallbackKind::accept: return "accepting";
    case CallbackKind::timer: return "a timer";
    case CallbackKind::bus: return "the bus";
    case CallbackKind::signal: return "a signal";
    case CallbackKind::hook: return "a hook";
    case CallbackKind::other: break;
  }
  return "a callback";
}

ActivitySubject::~ActivitySubject() {
  ActivityRecord& record = *detail::current_activity;
  const auto me = reinterpret_cast<std::uintptr_t>(this);
  if (record.subject.load(std::memory_order_relaxed) == me) record.subject.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  while (subject_in_use.load(std::memory_order_acquire) == me) ::sched_yield();
}

const ActivitySubject& ActivitySubject::process() {
  static const ActivitySubject* subject = new ActivitySubject(0, "");  // never destroyed
  return *subject;
}

HeartbeatTimer::HeartbeatTimer(boost::asio::io_context& io, std::chrono::milliseconds interval)
    : timer_(io), interval_(interval) {
  beat_heartbeat();
  arm();
}

HeartbeatTimer::~HeartbeatTimer() = default;

void HeartbeatTimer::arm() {
  timer_.expires_after(interval_);
  timer_.async_wait([this](const boost::system::error_code& error) {
    if (error) return;
    beat_heartbeat();
    arm();
  });
}

void StallWatcher::start(StallWatchSettings settings) {
  stop();
  const auto shortest = [&] {
    if (settings.warn_after.count() == 0) return settings.report_after;
    if (settings.report_after.count() == 0) return settings.warn_after;
    return std::min(settings.warn_after, settings.report_after);
  }();
  if (shortest.count() <= 0) return;
  auto* state = new WatchState();
  state->settings = std::move(settings);
  state->period = std::clamp<std::chrono::nanoseconds>(shortest / 4, std::chrono::milliseconds(5), std::chrono::seconds(1));
  sigset_t all, previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);  // signals go to the loop thread, never here
  const int failed = ::pthread_create(&state->thread, nullptr, watch_loop, state);
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (failed != 0) {
    log::warning("stall watcher not started: pthread_create(): {}", std::strerror(failed));
    delete state;
    return;
  }
  ::pthread_setname_np(state->thread, "stall-watch");
  watch = state;
}

void StallWatcher::stop() {
  if (!watch) return;
  {
    std::lock_guard<std::mutex> lock(watch->gate);
    watch->stopping = true;
  }
  watch->wake.notify_all();
  ::pthread_join(watch->thread, nullptr);
  delete watch;
  watch = nullptr;
}

bool StallWatcher::running() { return watch != nullptr; }

void install_last_words(std::string process) {
  std::memset(last_words.process, 0, sizeof last_words.process);
  std::memcpy(last_words.process, process.data(), std::min(process.size(), sizeof last_words.process - 1));
  last_words.loop_thread = static_cast<pid_t>(::syscall(SYS_gettid));
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  last_words.utc_offset = local.tm_gmtoff;
  void* warm_up[4];
  ::backtrace(warm_up, 4);  // loads the unwinder now: the first backtrace() may allocate
  struct sigaction action {};
  action.sa_handler = say_last_words;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  ::sigaction(SIGABRT, &action, nullptr);
  sigset_t abort_only;
  sigemptyset(&abort_only);
  sigaddset(&abort_only, SIGABRT);
  ::pthread_sigmask(SIG_UNBLOCK, &abort_only, nullptr);
}

std::string describe_activity(const ActivityRecord& record, std::int64_t now_ns) {
  const std::uint64_t state = record.state.load(std::memory_order_acquire);
  if (!in_callback(state)) return "between callbacks";
  const Report report = read_report(record);
  if (!report.valid || report.state != state) return fmt::format("in {}", callback_name(callback_of(state)));
  const std::string subject = report.session == 0 ? std::string(" (no session)")
                                                  : fmt::format(" of session {} ({})", report.session, report.peer);
  return fmt::format("in {}{} for {:.1f} s", callback_name(callback_of(state)), subject,
                     seconds(now_ns - report.since_ns));
}

}  // namespace netserver
