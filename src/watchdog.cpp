#include "watchdog.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

#include "netserver/log.hpp"
#include "stall_watch.hpp"

namespace netserver {

namespace {
double seconds(std::chrono::nanoseconds duration) { return std::chrono::duration<double>(duration).count(); }
}  // namespace

std::chrono::nanoseconds silent_for(const ActivityRecord& record, std::int64_t now_ns) {
  const std::int64_t beat = record.heartbeat_ns.load(std::memory_order_relaxed);
  return std::chrono::nanoseconds(beat == 0 ? 0 : std::max<std::int64_t>(now_ns - beat, 0));
}

Watchdog::Watchdog(boost::asio::io_context& io, const MetricsStore& store, std::chrono::nanoseconds timeout,
                   Processes processes, std::chrono::nanoseconds kill_after, SendSignal send_signal)
    : timer_(io),
      store_(store),
      timeout_(timeout),
      processes_(std::move(processes)),
      kill_after_(kill_after),
      send_signal_(send_signal ? std::move(send_signal) : [](pid_t pid, int signal) { ::kill(pid, signal); }) {}

Watchdog::~Watchdog() = default;

void Watchdog::start() {
  if (timeout_.count() <= 0) return;
  running_ = true;
  arm();
}

void Watchdog::stop() {
  running_ = false;
  timer_.cancel();
}

void Watchdog::arm() {
  timer_.expires_after(std::clamp<std::chrono::nanoseconds>(timeout_ / 4, std::chrono::milliseconds(20),
                                                            std::chrono::seconds(1)));
  timer_.async_wait([this](const boost::system::error_code& error) {
    if (error || !running_) return;
    check();
    arm();
  });
}

std::vector<pid_t> Watchdog::check() {
  const std::int64_t now_ns = detail::monotonic_ns();
  const auto now = std::chrono::steady_clock::now();
  const std::vector<ProcessEntry> processes = processes_();
  std::vector<pid_t> aborted_now;
  for (auto it = signalled_.begin(); it != signalled_.end();) {  // forget the reaped; kill the lingering
    const bool listed = std::any_of(processes.begin(), processes.end(),
                                    [&](const ProcessEntry& p) { return p.pid == it->first; });
    if (!listed) {
      it = signalled_.erase(it);
      continue;
    }
    if (!it->second.killed && now - it->second.aborted >= kill_after_) {
      log::error("worker_timeout: pid {} is still alive {:.1f} s after SIGABRT: SIGKILL", it->first,
                 seconds(kill_after_));
      send_signal_(it->first, SIGKILL);
      it->second.killed = true;
    }
    ++it;
  }
  for (const ProcessEntry& process : processes) {
    if (process.pid == ::getpid() || signalled_.count(process.pid)) continue;
    const ActivityRecord* record = store_.activity_of(process.pid);
    if (!record) continue;
    const std::chrono::nanoseconds silent = silent_for(*record, now_ns);
    if (silent < timeout_) continue;
    log::error("worker_timeout: {} {} ({}) has not turned its event loop for {:.1f} s (worker_timeout {:g} s): it "
               "is {}; sending SIGABRT (it logs its own stack and dies; SIGKILL in {:g} s if not)",
               process.role, process.pid, state_name(process.state), seconds(silent), seconds(timeout_),
               describe_activity(*record, now_ns), seconds(kill_after_));
    send_signal_(process.pid, SIGABRT);
    signalled_[process.pid] = {now, false};
    aborted_now.push_back(process.pid);
  }
  return aborted_now;
}

}  // namespace netserver
