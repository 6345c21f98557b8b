// The engine's interface for personalities (netserver/engine.hpp): serving in this process, and
// in a crew of supervised children that share the listeners.

#include "netserver/engine.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <functional>

#include <fmt/format.h>

#include "child_runtime.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "pool.hpp"
#include "serve_loop.hpp"
#include "supervisor.hpp"

namespace netserver {

namespace {

EngineOptions engine_options(const engine::ServeOptions& options) {
  return EngineOptions{.max_sessions = options.max_sessions, .refuse_when_full = options.refuse_when_full};
}

// How a worker takes signals (serve_here handles the rest; TTIN/TTOU are the parent's).
const ChildSignals worker_signals{.handled = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1},
                                  .ignored = {SIGTTIN, SIGTTOU, SIGUSR2}};

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

  // In the parent: a worker in `slot` starts, or has ended.
  void activate(std::size_t slot) {
    if (slot >= max_workers) return;
    board_->sessions[slot].store(0);
    board_->active[slot].store(true);
  }
  void release(std::size_t slot) {
    if (slot < max_workers) board_->active[slot].store(false);
  }

  // In a worker: the EngineOptions::sessions_changed of the worker in `slot`.
  std::function<void(std::size_t)> publisher(std::size_t slot) {
    return [this, slot](std::size_t open) {
      board_->sessions[slot].store(static_cast<std::int64_t>(open), std::memory_order_relaxed);
    };
  }
  // In the parent: the sessions open in every worker.
  std::int64_t sessions_open() const {
    std::int64_t total = 0;
    for (std::size_t i = 0; i < max_workers; ++i)
      if (board_->active[i].load(std::memory_order_relaxed)) total += board_->sessions[i].load(std::memory_order_relaxed);
    return total;
  }

  // In a worker: the EngineOptions::may_accept of the worker in `slot`.
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

// The workers' pool: a Pool whose systemd STATUS counts sessions, as a single process's does.
class WorkerPool final : public Pool {
 public:
  WorkerPool(std::size_t workers, const AcceptBalance& balance)
      : Pool(PoolLimits{workers, workers, 0, workers}), balance_(balance) {}
  std::string status(const ProcessTable& table) const override {
    return fmt::format("{} session(s) open in {} worker(s)", balance_.sessions_open(), table.working());
  }

 private:
  const AcceptBalance& balance_;
};

// The parent of N workers: a Pool with min = max = N and no spare bounds keeps the crew, the
// Supervisor forks, reaps and carries the signals; each worker holds the accept board's slot of
// its table slot. A worker takes TERM as "close gracefully", HUP as "finish your sessions and
// leave" (restart, TTOU). The check every second respawns a worker whose fork failed.
class WorkerParent {
 public:
  WorkerParent(Server& server, std::size_t workers, const engine::ServeOptions& options)
      : server_(server),
        options_(options),
        supervisor_(server, {.stop_signal = SIGTERM,
                             .finish_signal = SIGHUP,
                             .retire_signal = SIGHUP,
                             .kill_margin = std::chrono::seconds(1),
                             .check_interval = std::chrono::seconds(1),
                             .child_role = "worker"}),
        pool_(workers, balance_) {
    supervisor_.on_spawned([this](const ChildProcess& child) { balance_.activate(child.slot); });
    supervisor_.on_exited([this](const ChildProcess& child) { balance_.release(child.slot); });
  }

  void run() {
    supervisor_.run(
        pool_,
        [this](int channel, std::size_t slot) {
          if (slot >= max_workers) {
            log::error("worker {}: no accept board slot for slot {} (at most {} workers)", ::getpid(), slot, max_workers);
            return exit_status::boot_failed;
          }
          EngineOptions options = engine_options(options_);
          options.may_accept = balance_.gate(slot);
          options.sessions_changed = balance_.publisher(slot);
          run_serving_loop(server_, options, options_.on_stop, LoopRole{.supervised = true, .parent_channel = channel});
          return exit_status::ok;
        },
        worker_signals);
  }

 private:
  Server& server_;
  engine::ServeOptions options_;
  Supervisor supervisor_;
  AcceptBalance balance_;
  WorkerPool pool_;
};

}  // namespace

namespace engine {

void serve_here(Server& server, const ServeOptions& options) {
  run_serving_loop(server, engine_options(options), options.on_stop);
}

void serve_in_children(Server& server, std::size_t children, const ServeOptions& options) {
  WorkerParent(server, children, options).run();
}

}  // namespace engine
}  // namespace netserver
