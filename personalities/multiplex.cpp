#include "multiplex.hpp"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <map>
#include <string>

#include "netserver/config.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "pool.hpp"
#include "supervisor.hpp"
#include "worker.hpp"

namespace netserver {

namespace {

constexpr char report_ready = 'r';  // a worker accepts (see WorkerRole)

// TERM closes every session once its queued output is delivered: Multiplex sessions (a chat)
// do not end on their own.
WorkerOptions worker_options(const Multiplex::Settings& settings) {
  return WorkerOptions{.max_sessions = settings.max_connections, .refuse_when_full = true};
}

constexpr std::size_t max_workers = 1024;

// Spreads a burst of clients over the workers, which share the listeners: every worker would
// otherwise be woken for a new connection, and the first to run accepts the whole queue. Each
// worker publishes its open sessions on a board in shared memory and holds back (2 ms at a time)
// while it holds more than its fair share plus some slack -- but never for more than 20 ms while
// the others take nobody (stuck, or full): balance must not cost a client its service.
class AcceptBalance {
 public:
  AcceptBalance() {
    void* memory = ::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw Error(system_error_text("mmap() of the workers' accept board", errno));
    board_ = new (memory) Board{};
  }
  ~AcceptBalance() { ::munmap(board_, sizeof(Board)); }
  AcceptBalance(const AcceptBalance&) = delete;
  AcceptBalance& operator=(const AcceptBalance&) = delete;

  // In the parent: a free slot for a new worker (max_workers when none is free).
  std::size_t claim() {
    for (std::size_t slot = 0; slot < max_workers; ++slot) {
      if (board_->active[slot].load()) continue;
      board_->sessions[slot].store(0);
      board_->active[slot].store(true);
      return slot;
    }
    return max_workers;
  }
  void release(std::size_t slot) { board_->active[slot].store(false); }

  // In a worker: the WorkerOptions::may_accept of the worker in `slot`.
  std::function<bool(std::size_t)> gate(std::size_t slot) {
    return [this, slot, held_since = Clock::time_point{}, others_then = std::int64_t{-1}](std::size_t open) mutable {
      board_->sessions[slot].store(static_cast<std::int64_t>(open), std::memory_order_relaxed);
      std::int64_t others = 0, workers = 1;
      for (std::size_t i = 0; i < max_workers; ++i) {
        if (i == slot || !board_->active[i].load(std::memory_order_relaxed)) continue;
        others += board_->sessions[i].load(std::memory_order_relaxed);
        ++workers;
      }
      const std::int64_t total = others + static_cast<std::int64_t>(open);
      if (static_cast<std::int64_t>(open) * workers <= total + workers * (4 + total / 32)) {
        others_then = -1;  // within the fair share plus slack
        return true;
      }
      const auto now = Clock::now();
      if (others != others_then) {  // the others are taking clients: keep holding back
        others_then = others;
        held_since = now;
      }
      return now - held_since > std::chrono::milliseconds(20);
    };
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Board {
    std::atomic<std::int64_t> sessions[max_workers];
    std::atomic<bool> active[max_workers];
  };
  Board* board_ = nullptr;
};

// The Pool, which keeps the crew, plus a board slot per worker (freed when it exits).
class Crew final : public ChildPolicy {
 public:
  Crew(Pool& pool, AcceptBalance& balance) : pool_(pool), balance_(balance) {}
  void start() override { pool_.start(); }
  std::vector<pid_t> pids() const override { return pool_.pids(); }
  void child_exited(pid_t pid, int wait_status) override {
    if (auto it = slots_.find(pid); it != slots_.end()) {
      balance_.release(it->second);
      slots_.erase(it);
    }
    pool_.child_exited(pid, wait_status);
  }
  void stop(int signal) override { pool_.stop(signal); }
  void resume() override { pool_.resume(); }
  void adopt_leaving(const std::vector<pid_t>& pids) override { pool_.adopt_leaving(pids); }
  const std::string& failure() const override { return pool_.failure(); }
  void grow() override { pool_.grow(); }
  void shrink() override { pool_.shrink(); }
  void assign(pid_t pid, std::size_t slot) { slots_[pid] = slot; }

 private:
  Pool& pool_;
  AcceptBalance& balance_;
  std::map<pid_t, std::size_t> slots_;
};

// The parent of N workers: a Pool with min = max = N and no spare bounds keeps the crew, the
// Supervisor forks, reaps and carries the signals. A worker takes TERM as "close gracefully",
// HUP as "finish your sessions and leave" (restart, TTOU). The check every second respawns a
// worker whose fork failed.
class WorkerParent final : public ProcessControl {
 public:
  WorkerParent(Server& server, const Multiplex::Settings& settings)
      : server_(server),
        settings_(settings),
        supervisor_(server, {.stop_signal = SIGTERM, .finish_signal = SIGHUP, .kill_margin = 1, .check_interval = 1}),
        pool_(PoolLimits{settings.workers, settings.workers, 0, settings.workers}, *this),
        crew_(pool_, balance_) {
    supervisor_.on_report([this](pid_t pid, char report) {
      if (report == report_ready) pool_.child_idle(pid);
    });
  }

  void run() { supervisor_.run(crew_); }

  pid_t spawn_child() override {
    const std::size_t slot = balance_.claim();
    if (slot == max_workers) {
      log::error("no free slot for another worker (at most {})", max_workers);
      return -1;
    }
    const pid_t pid = supervisor_.spawn([this, slot](int channel) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a parent killed outright still ends its workers
      WorkerOptions options = worker_options(settings_);
      options.may_accept = balance_.gate(slot);
      run_worker(server_, options, StopMode::close, WorkerRole{.supervised = true, .parent_channel = channel});
      return 0;
    });
    if (pid > 0) crew_.assign(pid, slot);
    else balance_.release(slot);
    return pid;
  }
  void retire_child(pid_t pid) override { ::kill(pid, SIGHUP); }
  void signal_child(pid_t pid, int signal) override { ::kill(pid, signal); }

 private:
  Server& server_;
  const Multiplex::Settings& settings_;
  Supervisor supervisor_;
  AcceptBalance balance_;
  Pool pool_;
  Crew crew_;
};

std::string check_workers(const Value& value) {
  const std::string& text = std::get<std::string>(value);
  if (text == "auto") return "";
  char* end = nullptr;
  const long count = std::strtol(text.c_str(), &end, 10);
  if (!text.empty() && *end == '\0' && count >= 1 && count <= 1024) return "";
  return "expected auto or a number of worker processes from 1 to 1024, got \"" + text + "\"";
}

std::size_t worker_count(const Config& config) {
  const std::string text = config.string("multiplex.workers");
  if (text != "auto") return static_cast<std::size_t>(std::stol(text));
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? static_cast<std::size_t>(cores) : 1;
}

}  // namespace

PersonalityInfo Multiplex::info() {
  return {
      .name = "multiplex",
      .summary = "event loops serving every client at once (one process, or N workers); callbacks must not block",
      .add_options =
          [](Options& options) {
            options.add(Option::integer("max_connections", 10000, 1, 1 << 24,
                                        "multiplex: clients served at once, per worker; past it a client gets "
                                        "\"error: server busy\""));
            options.add(Option::text("multiplex.workers", "1",
                                     "event-loop processes: 1 serves in this process; N > 1 (or auto: one per "
                                     "core) forks N workers on the shared listeners")
                            .with_check(check_workers));
          },
      .create = [](const Config& config) -> std::unique_ptr<Personality> {
        return std::make_unique<Multiplex>(
            Settings{static_cast<std::size_t>(config.integer("max_connections")), worker_count(config)});
      },
  };
}

void Multiplex::loop(Server& server) {
  if (settings_.workers <= 1) return run_worker(server, worker_options(settings_), StopMode::close);
  WorkerParent(server, settings_).run();
}

}  // namespace netserver
